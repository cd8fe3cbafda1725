"""The suite's disk guard (tests/conftest.py), tmp_path retention, and the
JAX compilation cache its processes share.

Run on an inner pytest session in a subprocess whose conftest loads the
suite's conftest with a 1 MB budget: a test that writes 2 MB under its
tmp_path fails and names its largest file, one that writes 0.5 MB passes.
"""

import json
import os
import subprocess
import sys
import textwrap

CONFTEST = os.path.join(os.path.dirname(os.path.abspath(__file__)), "conftest.py")


def inner_session(tmp_path, hooks):
    """A folder for an inner pytest session whose conftest loads the suite's
    conftest and exports ``hooks`` (lines of Python run after loading it)."""
    inner = tmp_path / "inner"
    inner.mkdir()
    (inner / "conftest.py").write_text(
        textwrap.dedent(
            f"""
            import importlib.util

            spec = importlib.util.spec_from_file_location("suite_conftest", {CONFTEST!r})
            suite = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(suite)
            """
        )
        + textwrap.dedent(hooks)
    )
    return inner


def test_a_test_over_the_disk_budget_fails_naming_its_largest_file(tmp_path):
    inner = inner_session(
        tmp_path,
        """
        suite.DISK_BUDGET_MB = 1
        pytest_runtest_call = suite.pytest_runtest_call
        """,
    )
    (inner / "test_inner.py").write_text(
        textwrap.dedent(
            """
            def test_writes_two_mb(tmp_path):
                (tmp_path / "sub").mkdir()
                (tmp_path / "sub" / "big.bin").write_bytes(bytes(2 * 2**20))
                (tmp_path / "small.bin").write_bytes(bytes(10))

            def test_writes_half_a_mb(tmp_path):
                (tmp_path / "ok.bin").write_bytes(bytes(2**19))

            def test_without_tmp_path():
                pass
            """
        )
    )
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p",
         "no:xdist", "-rf", f"--basetemp={tmp_path / 'base'}", str(inner)],
        cwd=inner, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out
    assert "1 failed, 2 passed" in out, out
    assert "FAILED test_inner.py::test_writes_two_mb" in out, out
    assert "the test wrote 2 MB under its tmp_path" in out, out
    assert "budget of 1 MB" in out, out
    assert os.path.join("sub", "big.bin") + " (2 MB)" in out, out


def test_the_suite_deletes_a_passed_tests_tmp_path(pytestconfig):
    # What keeps the suite's disk use at what the running tests write.
    assert pytestconfig.getini("tmp_path_retention_policy") == "failed"


def test_jax_processes_of_a_run_share_one_compilation_cache(tmp_path):
    """An inner session on two workers: both see the same JAX cache folder, a
    second process compiling what a first compiled adds no entry to it, and
    the folder is gone when the session ends. The same for the scripts'
    cache folder (CRAM_KERAS_CACHE), which is not the home folder's."""
    inner = inner_session(
        tmp_path,
        """
        pytest_configure = suite.pytest_configure
        pytest_unconfigure = suite.pytest_unconfigure
        """,
    )
    (inner / "test_inner.py").write_text(
        textwrap.dedent(
            """
            import json, os, subprocess, sys

            import pytest

            PROGRAM = (
                "import jax, jax.numpy as jnp; "
                "print(float(jax.jit(lambda x: (x * 3.0 + 1.0).sum())(jnp.ones(7))))"
            )

            def entries(folder):
                return sorted(n for n in os.listdir(folder) if n.endswith("-cache"))

            @pytest.mark.parametrize("name", ["a", "b"])
            def test_compile_twice(name):
                folder = os.environ["JAX_COMPILATION_CACHE_DIR"]
                counts = []
                for _ in range(2):
                    out = subprocess.run(
                        [sys.executable, "-c", PROGRAM], capture_output=True,
                        text=True, timeout=120, env=dict(os.environ, JAX_PLATFORMS="cpu"),
                    )
                    assert out.returncode == 0, out.stderr
                    assert out.stdout.strip() == "28.0"
                    counts.append(len(entries(folder)))
                report = {"folder": folder, "counts": counts,
                          "cache": os.environ["CRAM_KERAS_CACHE"]}
                with open(os.environ["REPORT_DIR"] + "/" + name + ".json", "w") as f:
                    json.dump(report, f)
            """
        )
    )
    reports = tmp_path / "reports"
    reports.mkdir()
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("JAX_") and k != "CRAM_KERAS_CACHE"
    }
    env.update(REPORT_DIR=str(reports), KERAS_BACKEND="tensorflow")
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-n", "2",
         f"--basetemp={tmp_path / 'base'}", str(inner)],
        cwd=inner, capture_output=True, text=True, timeout=600, env=env,
    )  # fmt: skip
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "2 passed" in out, out
    a, b = (json.loads((reports / f"{n}.json").read_text()) for n in "ab")
    assert a["folder"] == b["folder"]
    assert not os.path.exists(a["folder"])
    for report in (a, b):
        first, second = report["counts"]
        assert first > 0 and second == first, report
    assert a["cache"] == b["cache"] != a["folder"]
    assert not os.path.exists(a["cache"])
    assert not a["cache"].startswith(os.path.expanduser("~"))
