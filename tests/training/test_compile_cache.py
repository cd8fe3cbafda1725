"""The scripts' JAX compilation cache setting (cram_keras.training.compile_cache):
on JAX it points JAX's persistent cache at `jax` in the cache folder; off
with CRAM_KERAS_JAX_CACHE=0; a caller's JAX_COMPILATION_CACHE_DIR is left
to JAX; nothing on TensorFlow; a bad value is refused before a run starts,
by the scripts and by run_study.py, as is a cache folder under a regular
file. (That a resumed JAX run loads its
training step from the cache: tests/scripts/test_kill_resume.py.)"""

import os

import pytest
from testing import run_script_in_process

from cram_keras.training import compile_cache

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

jax = pytest.importorskip("jax")


@pytest.fixture
def jax_cache_dir():
    """Restores JAX's cache folder setting after the test."""
    before = jax.config.jax_compilation_cache_dir
    yield
    jax.config.update("jax_compilation_cache_dir", before)


@pytest.fixture
def no_caller_setting(monkeypatch, tmp_path):
    monkeypatch.delenv("JAX_COMPILATION_CACHE_DIR", raising=False)
    monkeypatch.delenv(compile_cache.ENV_VAR, raising=False)
    monkeypatch.setenv("CRAM_KERAS_CACHE", str(tmp_path / "cache"))


@pytest.mark.parametrize("value", [None, "1"])
def test_on_jax_the_cache_is_the_cache_folders_jax(
    value, no_caller_setting, jax_cache_dir, monkeypatch, tmp_path
):
    if value is not None:
        monkeypatch.setenv(compile_cache.ENV_VAR, value)
    expected = os.path.join(str(tmp_path / "cache"), "jax")
    assert compile_cache.enable_jax_compilation_cache("jax") == expected
    assert jax.config.jax_compilation_cache_dir == expected


def test_the_default_cache_folder_is_in_the_home_cache(monkeypatch):
    monkeypatch.delenv("CRAM_KERAS_CACHE", raising=False)
    monkeypatch.setenv("HOME", "/home/someone")
    assert compile_cache.cache_folder() == "/home/someone/.cache/cram_keras/jax"


@pytest.mark.parametrize(
    "backend, env",
    [
        ("tensorflow", {}),
        ("jax", {compile_cache.ENV_VAR: "0"}),
        ("jax", {compile_cache.ENV_VAR: " 0 "}),
        ("jax", {"JAX_COMPILATION_CACHE_DIR": "/somewhere/of/the/callers"}),
    ],
)
def test_jax_is_left_as_it_was(
    backend, env, no_caller_setting, jax_cache_dir, monkeypatch
):
    jax.config.update("jax_compilation_cache_dir", "/before")
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert compile_cache.enable_jax_compilation_cache(backend) is None
    assert jax.config.jax_compilation_cache_dir == "/before"


@pytest.mark.parametrize("value", ["yes", "2", "off"])
def test_a_bad_value_names_the_valid_ones(value, no_caller_setting, monkeypatch):
    monkeypatch.setenv(compile_cache.ENV_VAR, value)
    with pytest.raises(compile_cache.CompileCacheError) as info:
        compile_cache.enable_jax_compilation_cache("jax")
    message = str(info.value)
    assert "CRAM_KERAS_JAX_CACHE must be unset or 1" in message
    assert "or 0 (no cache)" in message
    assert message.endswith(f"Received: CRAM_KERAS_JAX_CACHE={value!r}")


@pytest.mark.parametrize(
    "program, args",
    [
        ("train_rnn_spn.py", ["--smoke"]),
        ("run_study.py", ["rnn_spn/budget", "--smoke"]),
    ],
)
def test_the_programs_refuse_a_bad_value_before_writing(
    program, args, no_caller_setting, monkeypatch, tmp_path, capsys
):
    monkeypatch.setenv(compile_cache.ENV_VAR, "yes")
    out = tmp_path / "out"
    flag = "--output-dir" if program.startswith("train") else "--runs-dir"
    proc = run_script_in_process(os.path.join(ROOT, program), *args, flag, str(out))
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "error: CRAM_KERAS_JAX_CACHE must be unset or 1" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not out.exists()


def test_run_study_refuses_a_cache_variable_under_a_file(
    no_caller_setting, monkeypatch, tmp_path
):
    """As the scripts do (tests/scripts/test_bad_inputs.py)."""
    (tmp_path / "file").write_text("not a folder")
    monkeypatch.setenv("CRAM_KERAS_CACHE", str(tmp_path / "file" / "cache"))
    out = tmp_path / "out"
    proc = run_script_in_process(
        os.path.join(ROOT, "run_study.py"), "rnn_spn/budget", "--smoke",
        "--runs-dir", str(out),
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "error: CRAM_KERAS_CACHE must name a folder" in proc.stderr
    assert f"but {str(tmp_path / 'file')!r} is a regular file" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not out.exists()
