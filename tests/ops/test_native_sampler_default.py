"""How the compiled sampler kernel is chosen, built and cached
(cram_keras.ops.native_sampler): on by default where it applies and builds,
off with CRAM_KERAS_NATIVE_SAMPLER=0, forced with =1; the keras.ops path
with one line on stderr when it cannot be built; one build for processes
that start at once; never a damaged library loaded.

A stand-in compiler (a script that logs each call and writes a library
built once per test session, slowly and in two halves) makes the build
observable without compiling again. Its values are checked against the
keras.ops path, the reference.
"""

import json
import os
import pathlib
import subprocess
import sys
import threading

import numpy as np
import pytest
from testing import native_sampler_unavailable

pytestmark = pytest.mark.skipif(
    native_sampler_unavailable() is not None,
    reason=str(native_sampler_unavailable()),
)

REPO = pathlib.Path(__file__).parents[2]
OUT = (5, 4)
FALLBACK = "cram_keras: the compiled sampler kernel is unavailable"


@pytest.fixture(scope="session")
def built_library(native_sampler_cache):
    """The kernel, really compiled (once per test session, in the folder the
    two-kernel sampler tests share)."""
    from cram_keras.ops import native_sampler

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(native_sampler.CACHE_VARIABLE, str(native_sampler_cache))
        return native_sampler.build()


@pytest.fixture
def sampler(monkeypatch, native_sampler_cache, built_library):
    """The module in a fresh process's state: the environment variable unset,
    the cache holding a built kernel, no GPU or TPU seen."""
    from cram_keras.ops import native_sampler

    monkeypatch.delenv(native_sampler.ENV_VAR, raising=False)
    monkeypatch.setenv(native_sampler.CACHE_VARIABLE, str(native_sampler_cache))
    monkeypatch.setitem(native_sampler._state, "enabled", None)
    monkeypatch.setitem(native_sampler._state, "failure", None)
    monkeypatch.setitem(native_sampler._state, "accelerator", False)
    return native_sampler


@pytest.fixture
def unbuilt(sampler, monkeypatch, tmp_path):
    """As `sampler`, with nothing loaded yet and an empty cache folder."""
    monkeypatch.setitem(sampler._state, "library", None)
    monkeypatch.setenv(sampler.CACHE_VARIABLE, str(tmp_path / "cache"))
    return sampler


class FakeCompiler:
    def __init__(self, folder, library):
        self.path = folder / "fake-cxx"
        self.log = folder / "fake-cxx.log"
        self.path.write_text(
            f"#!{sys.executable}\n"
            "import os, pathlib, sys, time\n"
            "with open(os.environ['FAKE_CXX_LOG'], 'a') as log:\n"
            "    log.write('compiled\\n')\n"
            "if os.environ.get('FAKE_CXX_FAIL'):\n"
            "    print('bilinear_sampler.cc:1:1: error: expected declaration',\n"
            "          file=sys.stderr)\n"
            "    sys.exit(1)\n"
            "data = pathlib.Path(os.environ['FAKE_CXX_LIBRARY']).read_bytes()\n"
            "with open(sys.argv[sys.argv.index('-o') + 1], 'wb') as out:\n"
            "    out.write(data[: len(data) // 2])\n"
            "    out.flush()\n"
            "    time.sleep(float(os.environ.get('FAKE_CXX_SECONDS', '0')))\n"
            "    out.write(data[len(data) // 2 :])\n"
        )
        self.path.chmod(0o755)
        self.library = library

    @property
    def calls(self):
        return len(self.log.read_text().splitlines()) if self.log.exists() else 0


@pytest.fixture
def compiler(monkeypatch, tmp_path, built_library):
    """A stand-in compiler (`CXX`) that writes the session's built kernel."""
    fake = FakeCompiler(tmp_path, built_library)
    monkeypatch.setenv("CXX", str(fake.path))
    monkeypatch.setenv("FAKE_CXX_LOG", str(fake.log))
    monkeypatch.setenv("FAKE_CXX_LIBRARY", str(built_library))
    return fake


def arrays():
    rng = np.random.default_rng(0)
    images = rng.random((2, 9, 7, 3), dtype=np.float32)
    theta = np.tile(
        np.array([[0.8, 0.3, 0.1], [-0.2, 0.9, 0.05]], np.float32), (2, 1, 1)
    )
    return images, theta


def sample_with_gradients():
    """affine_sample's output and gradients (eager), and whether the kernel
    is in the graph of the same computation traced with its gradient."""
    import tensorflow as tf

    from cram_keras.ops import affine_sample

    images, theta = (tf.constant(a) for a in arrays())

    def run(images, theta):
        with tf.GradientTape() as tape:
            tape.watch([images, theta])
            output = affine_sample(images, theta, OUT)
            loss = tf.reduce_sum(tf.sin(output))
        return [output, *tape.gradient(loss, [images, theta])]

    graph = tf.function(run).get_concrete_function(images, theta).graph
    types = {op.type for op in graph.get_operations()}
    for function in graph.as_graph_def().library.function:
        types.update(node.op for node in function.node_def)
    kernel = {t for t in types if t.startswith("Cram")}
    return [t.numpy() for t in run(images, theta)], sorted(kernel)


def keras_ops_reference(native_sampler):
    with native_sampler.native_sampler(False):
        values, kernel = sample_with_gradients()
    assert kernel == []
    return values


def assert_matches(values, reference, exact=False):
    """The same values (bit for bit where `exact`: the same path), else to
    the float32 rounding of the coordinates the kernel computes itself."""
    for a, b in zip(values, reference, strict=True):
        if exact:
            np.testing.assert_array_equal(a, b)
        else:
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def fallback_lines(text):
    return [line for line in text.splitlines() if line.startswith(FALLBACK)]


# === The three settings ===


def test_unset_samples_with_the_kernel(sampler, capfd):
    values, kernel = sample_with_gradients()
    assert kernel == ["CramTransformSample", "CramTransformSampleGrad"]
    assert sampler.mode() == "auto" and not sampler.is_enabled()
    assert_matches(values, keras_ops_reference(sampler))
    assert "cram_keras:" not in capfd.readouterr().err  # built already: silent


def test_zero_takes_the_keras_ops_path_and_builds_nothing(
    unbuilt, compiler, monkeypatch, tmp_path, capfd
):
    monkeypatch.setenv(unbuilt.ENV_VAR, "0")
    values, kernel = sample_with_gradients()
    assert kernel == []
    assert unbuilt.mode() == "off"
    assert_matches(values, keras_ops_reference(unbuilt), exact=True)
    assert compiler.calls == 0
    assert not (tmp_path / "cache").exists()
    assert capfd.readouterr().err == ""


def test_one_forces_the_kernel(sampler, monkeypatch):
    monkeypatch.setenv(sampler.ENV_VAR, "1")
    _, kernel = sample_with_gradients()
    assert kernel == ["CramTransformSample", "CramTransformSampleGrad"]
    assert sampler.mode() == "on" and sampler.is_enabled()


def test_one_makes_a_failed_build_an_error(unbuilt, monkeypatch):
    from cram_keras.ops import affine_sample

    monkeypatch.setenv(unbuilt.ENV_VAR, "1")
    monkeypatch.setenv("CXX", "no-such-compiler")
    images, theta = arrays()
    with pytest.raises(unbuilt.NativeSamplerError) as info:
        affine_sample(images, theta, OUT)
    assert "'no-such-compiler' was not found" in str(info.value)
    assert "CRAM_KERAS_NATIVE_SAMPLER=0" in str(info.value)


def test_the_setting_in_code_overrides_the_environment(sampler, monkeypatch):
    monkeypatch.setenv(sampler.ENV_VAR, "0")
    with sampler.native_sampler(True):
        assert sampler.mode() == "on"
        with sampler.native_sampler(None):
            assert sampler.mode() == "off"
            assert sample_with_gradients()[1] == []
        assert sample_with_gradients()[1] != []
    monkeypatch.delenv(sampler.ENV_VAR)
    with sampler.native_sampler(False):
        assert sample_with_gradients()[1] == []
    assert sampler.mode() == "auto"


def test_unset_leaves_a_gpu_to_the_keras_ops_path(
    sampler, compiler, monkeypatch, tmp_path
):
    """Where TensorFlow sees a GPU, the keras.ops path runs there; the
    CPU-only kernel is neither built nor used unless forced."""
    library = sampler.load()
    monkeypatch.setitem(sampler._state, "library", None)
    monkeypatch.setitem(sampler._state, "accelerator", True)
    monkeypatch.setenv(sampler.CACHE_VARIABLE, str(tmp_path / "cache"))
    assert sample_with_gradients()[1] == []
    assert compiler.calls == 0
    assert not (tmp_path / "cache").exists()
    sampler._state["library"] = library  # as if built
    monkeypatch.setenv(sampler.ENV_VAR, "1")
    assert sample_with_gradients()[1] != []


# === Falling back ===


@pytest.mark.parametrize("failure", ["compiler error", "cache not writable"])
def test_a_failed_build_falls_back_with_one_line(
    failure, unbuilt, compiler, monkeypatch, tmp_path, capfd
):
    if failure == "compiler error":
        monkeypatch.setenv("FAKE_CXX_FAIL", "1")
        expected = ["compiling it failed", "python -m cram_keras.ops.native"]
    else:
        (tmp_path / "file").write_text("")
        monkeypatch.setenv(unbuilt.CACHE_VARIABLE, str(tmp_path / "file"))
        expected = ["cannot write to", "Set CRAM_KERAS_CACHE to a writable folder"]
    reference = keras_ops_reference(unbuilt)
    for _ in range(2):
        values, kernel = sample_with_gradients()
        assert kernel == []
        assert_matches(values, reference, exact=True)
    lines = fallback_lines(capfd.readouterr().err)
    assert len(lines) == 1, lines  # once per process
    for text in [*expected, "keras.ops path", "CRAM_KERAS_NATIVE_SAMPLER=0"]:
        assert text in lines[0]
    assert compiler.calls == (1 if failure == "compiler error" else 0)
    if failure == "compiler error":  # nothing half-built is left behind
        kernels = tmp_path / "cache" / "kernels"
        assert sorted(p.suffix for p in kernels.iterdir()) == [".lock"]


def run_script(tmp_path, name, ready, processes, **env):
    """Starts SCRIPT in a fresh Python (the environment variable unset, no
    GPU visible)."""
    environment = {
        k: v for k, v in os.environ.items() if k != "CRAM_KERAS_NATIVE_SAMPLER"
    }
    environment.update(PYTHONPATH=str(REPO), CUDA_VISIBLE_DEVICES="", **env)
    return subprocess.Popen(
        [sys.executable, "-c", SCRIPT, str(ready), name, str(processes)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
        env=environment,
    )  # fmt: skip


SCRIPT = """
import json, pathlib, sys, time
import numpy as np
import tensorflow as tf
from cram_keras.ops import affine_sample, native_sampler

ready, name, processes = pathlib.Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
ready.mkdir(exist_ok=True)
(ready / name).touch()
deadline = time.time() + 120  # all processes sample at once
while len(list(ready.iterdir())) < processes and time.time() < deadline:
    time.sleep(0.01)
rng = np.random.default_rng(0)
images = tf.constant(rng.random((2, 9, 7, 3), dtype=np.float32))
theta = tf.constant(np.tile(
    np.array([[0.8, 0.3, 0.1], [-0.2, 0.9, 0.05]], np.float32), (2, 1, 1)))

def run():
    with tf.GradientTape() as tape:
        tape.watch([images, theta])
        output = affine_sample(images, theta, (5, 4))
        loss = tf.reduce_sum(tf.sin(output))
    return [output.numpy()] + [g.numpy() for g in tape.gradient(loss, [images, theta])]

graph = tf.function(lambda i, t: affine_sample(i, t, (5, 4))).get_concrete_function(
    images, theta).graph
chosen = run()
with native_sampler.native_sampler(False):
    reference = run()
print(json.dumps({
    "kernel": any(op.type == "CramTransformSample" for op in graph.get_operations()),
    "loaded": native_sampler._state["library"] is not None,
    "library": str(native_sampler.library_path()),
    "forward_difference": float(np.max(np.abs(chosen[0] - reference[0]))),
    "gradient_difference": max(
        float(np.max(np.abs(a - b))) for a, b in zip(chosen[1:], reference[1:])),
}))
"""


def finish(process):
    stdout, stderr = process.communicate(timeout=300)
    assert process.returncode == 0, stderr
    return json.loads(stdout.splitlines()[-1]), stderr


@pytest.mark.slow
def test_fresh_processes_build_once_or_fall_back(tmp_path, compiler):
    """Three processes sample at once with the setting unset. Two share an
    empty cache: the (slow, written in two halves) build runs once and both
    load the one whole library. The third has no compiler: one line says
    why and what to do, and it samples with the keras.ops path."""
    ready = tmp_path / "ready"
    cache = tmp_path / "cache"
    builders = [
        run_script(
            tmp_path, name, ready, 3, CRAM_KERAS_CACHE=str(cache), FAKE_CXX_SECONDS="3"
        )  # fmt: skip
        for name in ("first", "second")
    ]
    without = run_script(
        tmp_path, "without", ready, 3,
        CXX="no-such-compiler", CRAM_KERAS_CACHE=str(tmp_path / "other"),
    )  # fmt: skip
    built = [finish(process) for process in builders]
    result, stderr = finish(without)

    for one, _ in built:
        assert one["kernel"] and one["loaded"], one
        assert one["forward_difference"] < 1e-5, one
        assert one["gradient_difference"] < 1e-5, one
    assert built[0][0]["library"] == built[1][0]["library"]
    assert compiler.calls == 1
    both = built[0][1] + built[1][1]
    assert both.count("cram_keras: building the compiled sampler kernel") == 1
    # The other process waited for it (or, if it came later, found it built).
    assert both.count("cram_keras: waiting for another process") <= 1
    assert FALLBACK not in both
    library = pathlib.Path(built[0][0]["library"])
    assert library.parent == cache / "kernels"
    assert library.read_bytes() == compiler.library.read_bytes()
    names = sorted(p.name for p in library.parent.iterdir())
    assert names == [library.name, library.name + ".lock", library.name + ".sha256"]

    lines = [line for line in stderr.splitlines() if line.startswith("cram_keras:")]
    assert len(lines) == 1 and lines == fallback_lines(stderr), lines
    for text in ["'no-such-compiler' was not found", "Install g++",
                 "keras.ops path", "CRAM_KERAS_NATIVE_SAMPLER=0"]:  # fmt: skip
        assert text in lines[0], lines[0]
    assert result["kernel"] is False and result["loaded"] is False
    assert result["forward_difference"] == result["gradient_difference"] == 0.0


def test_a_process_waits_for_the_build_in_progress(unbuilt, compiler, monkeypatch):
    """While another holds the build lock, build() waits (saying so), then
    takes the library that one wrote instead of compiling again."""
    target = unbuilt.library_path()
    target.parent.mkdir(parents=True)
    waiting = threading.Event()
    lines = []

    def say(line):
        lines.append(line)
        waiting.set()

    monkeypatch.setattr(unbuilt, "_say", say)
    results = []
    with unbuilt._build_lock(target):
        thread = threading.Thread(target=lambda: results.append(unbuilt.build()))
        thread.start()
        assert waiting.wait(60)
        assert not results  # still waiting
        target.write_bytes(compiler.library.read_bytes())
        target.with_name(target.name + ".sha256").write_text(
            unbuilt._checksum(compiler.library)
        )
    thread.join(60)
    assert results == [target]
    assert compiler.calls == 0
    assert len(lines) == 1 and "waiting for another process" in lines[0]


@pytest.mark.parametrize(
    "damage", ["half-copied", "garbage, no checksum", "checksum of another file"]
)
def test_a_damaged_cached_library_is_rebuilt_not_loaded(
    damage, unbuilt, compiler, monkeypatch
):
    import tensorflow as tf

    whole = compiler.library.read_bytes()
    target = unbuilt.library_path()
    target.parent.mkdir(parents=True)
    stamp = target.with_name(target.name + ".sha256")
    if damage == "half-copied":
        target.write_bytes(whole[: len(whole) // 2])
        stamp.write_text(unbuilt._checksum(compiler.library))
    elif damage == "garbage, no checksum":
        target.write_bytes(b"\x7fELF" + b"\0" * 1000)
    else:
        target.write_bytes(whole[:-1] + b"\0")
        stamp.write_text("0" * 64)
    leftover = target.with_name(target.name + ".x1y2z3.tmp")  # a killed build's
    leftover.write_bytes(b"partial")

    loaded = []
    monkeypatch.setattr(
        tf,
        "load_op_library",
        lambda path: loaded.append(pathlib.Path(path).read_bytes()),
    )
    unbuilt.load()
    assert compiler.calls == 1
    assert loaded == [whole]
    assert not leftover.exists()

    # Damaged again, and no compiler to rebuild it: refused, not loaded.
    target.write_bytes(whole[: len(whole) // 2])
    monkeypatch.setitem(unbuilt._state, "library", None)
    monkeypatch.setenv("CXX", "no-such-compiler")
    with pytest.raises(unbuilt.NativeSamplerError, match="was not found"):
        unbuilt.load()
    assert loaded == [whole]
