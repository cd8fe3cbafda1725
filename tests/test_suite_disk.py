"""The suite's disk guard (tests/conftest.py) and tmp_path retention.

Run on an inner pytest session in a subprocess whose conftest loads the
suite's conftest with a 1 MB budget: a test that writes 2 MB under its
tmp_path fails and names its largest file, one that writes 0.5 MB passes.
"""

import os
import subprocess
import sys
import textwrap

CONFTEST = os.path.join(os.path.dirname(os.path.abspath(__file__)), "conftest.py")


def test_a_test_over_the_disk_budget_fails_naming_its_largest_file(tmp_path):
    inner = tmp_path / "inner"
    inner.mkdir()
    (inner / "conftest.py").write_text(
        textwrap.dedent(
            f"""
            import importlib.util

            spec = importlib.util.spec_from_file_location("suite_conftest", {CONFTEST!r})
            suite = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(suite)
            suite.DISK_BUDGET_MB = 1
            pytest_runtest_call = suite.pytest_runtest_call
            """
        )
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
