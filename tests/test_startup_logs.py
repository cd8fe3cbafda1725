"""TensorFlow's C++ start-up logs held to TF_CPP_MIN_LOG_LEVEL
(`cram_keras._startup_logs`): the filter keeps exactly the log lines at or
above the level and every line that is not a C++ log line; through file
descriptor 2 it does the same and restores stderr afterwards; the scripts
default the level to 3 and keep a level the caller set, which then reaches
TensorFlow: at 0 its start-up lines print."""

import importlib.util
import os
import re
import subprocess
import sys

import pytest

from cram_keras._startup_logs import LineFilter, filtered_startup_logs, min_log_level

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPTS = ("train_rnn_spn.py", "train_cls.py", "train_inpaint.py")
# A C++ log line (glog / absl prefix), or absl's banner.
CPP_LOG = re.compile(r"^([IWEF]\d{4} [\d:.]+ +\d+ \S+:\d+\] |WARNING: All log)")

# As TensorFlow 2.21 writes them while its libraries load.
BANNER = (
    "WARNING: All log messages before absl::InitializeLog() is called are "
    "written to STDERR"
)
INFO = (
    "I0000 00:00:1796459513.140190    3895 port.cc:153] oneDNN custom "
    "operations are on."
)
WARNING = (
    "W0605 12:01:02.500000   77 gpu_device.cc:2345] Cannot dlopen some GPU libraries."
)
ERROR = (
    "E0000 00:00:1796459516.373434    3895 cuda_platform.cc:52] failed call "
    "to cuInit: INTERNAL: CUDA error"
)
FATAL = "F0000 00:00:1796459516.373434    3895 status.cc:1] Check failed: x"
OURS = "run directory: /tmp/run (new run)"
LOOKALIKE = "I0000 is not a log line"
PY_WARNING = "/x/y.py:3: DeprecationWarning: old"

STREAM = [BANNER, INFO, OURS, WARNING, LOOKALIKE, PY_WARNING, ERROR, "", FATAL]
KEPT = {
    0: STREAM,
    1: [BANNER, OURS, WARNING, LOOKALIKE, PY_WARNING, ERROR, "", FATAL],
    2: [OURS, LOOKALIKE, PY_WARNING, ERROR, "", FATAL],
    3: [OURS, LOOKALIKE, PY_WARNING, "", FATAL],
}


@pytest.mark.parametrize("level", [0, 1, 2, 3])
def test_the_filter_keeps_what_the_level_allows_and_everything_else(level):
    line_filter = LineFilter(level)
    kept = [line for line in STREAM if line_filter.keep((line + "\n").encode())]
    assert kept == KEPT[level]
    assert all(bool(CPP_LOG.match(line)) for line in set(STREAM) - set(KEPT[3]))


@pytest.mark.parametrize(
    "value, level", [(None, 0), ("", 0), ("0", 0), ("2", 2), (" 3 ", 3), ("x", 0)]
)
def test_min_log_level(value, level):
    environ = {} if value is None else {"TF_CPP_MIN_LOG_LEVEL": value}
    assert min_log_level(environ) == level


def test_file_descriptor_2_is_filtered_inside_the_block_only(capfd):
    with filtered_startup_logs(3):
        os.write(2, ("\n".join(STREAM) + "\n").encode())  # as C++ writes
        os.write(2, b"no newline at the end")
    os.write(2, (INFO + "\n").encode())
    assert capfd.readouterr().err == "\n".join(
        [*KEPT[3], "no newline at the end" + INFO, ""]
    )
    # Level 0: not even redirected.
    with filtered_startup_logs(0):
        os.write(2, (INFO + "\n").encode())
    assert capfd.readouterr().err == INFO + "\n"


def load_script(name):
    spec = importlib.util.spec_from_file_location(
        name.removesuffix(".py") + "_env_check", os.path.join(ROOT, name)
    )
    spec.loader.exec_module(importlib.util.module_from_spec(spec))


@pytest.mark.parametrize("script", SCRIPTS)
def test_scripts_default_the_level_to_3_and_keep_the_callers(script, monkeypatch):
    monkeypatch.delenv("TF_CPP_MIN_LOG_LEVEL", raising=False)
    load_script(script)
    assert os.environ["TF_CPP_MIN_LOG_LEVEL"] == "3"
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "0")
    load_script(script)
    assert os.environ["TF_CPP_MIN_LOG_LEVEL"] == "0"


@pytest.mark.slow
def test_a_level_of_0_set_by_the_caller_lets_tensorflow_log():
    # --help loads TensorFlow (as every run does) and nothing else.
    env = dict(os.environ, KERAS_BACKEND="tensorflow", TF_CPP_MIN_LOG_LEVEL="0")
    proc = subprocess.run(
        [sys.executable, os.path.join(ROOT, "train_rnn_spn.py"), "--help"],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert any(CPP_LOG.match(line) for line in proc.stderr.splitlines()), proc.stderr
