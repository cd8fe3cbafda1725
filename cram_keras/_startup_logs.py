"""TensorFlow's C++ start-up logs, held to ``TF_CPP_MIN_LOG_LEVEL``.

TensorFlow applies ``TF_CPP_MIN_LOG_LEVEL`` (0: everything, 1: no INFO,
2: no WARNING either, 3: no ERROR either) to what it logs once its logging
is set up. The lines its libraries log while they load (oneDNN's "custom
operations are on", the CUDA stub's "Could not find cuda drivers", and
absl's "WARNING: All log messages before absl::InitializeLog() is called are
written to STDERR") reach stderr whatever the level. `filtered_startup_logs`
holds those to the level too: while TensorFlow loads, stderr passes through
a filter that drops the C++ log lines below the level and lets every other
line through unchanged. With the level unset or 0 nothing is filtered.

Only the standard library is used here: the package imports this module
before Keras (and with it TensorFlow).
"""

import contextlib
import os
import re
import sys
import threading

# glog / absl prefix: severity letter, MMDD, time, thread id, file:line]. The
# time is hh:mm:ss.micro, or before absl's logging is initialised
# 00:00:<seconds since 1970>.micro (with MMDD 0000).
_LOG_LINE = re.compile(rb"^([IWEF])\d{4} +\d+:\d+:\d+(?:\.\d+)? +\d+ +[^\s:\]]+:\d+\] ")
_SEVERITY = {b"I": 0, b"W": 1, b"E": 2, b"F": 3}
# absl's notice before its logging is initialised (a warning).
_BANNER = (
    b"WARNING: All log messages before absl::InitializeLog() is called are "
    b"written to STDERR"
)


def min_log_level(environ=None):
    """``TF_CPP_MIN_LOG_LEVEL`` as a number: 0 where unset or not a number
    (TensorFlow then logs everything)."""
    value = (os.environ if environ is None else environ).get("TF_CPP_MIN_LOG_LEVEL")
    try:
        return int(str(value).strip())
    except ValueError:
        return 0


class LineFilter:
    """Says whether a line of stderr is kept at ``level``: a C++ log line
    if its severity (I 0, W 1, E 2, F 3; absl's banner counts as a warning)
    is at least ``level``; every other line always (also the second line of
    a multi-line log message: a line without the prefix cannot be told
    apart from output that must not be lost)."""

    def __init__(self, level):
        self.level = level

    def keep(self, line):
        text = line.rstrip(b"\r\n")
        match = _LOG_LINE.match(text)
        if match:
            return _SEVERITY[match.group(1)] >= self.level
        if text == _BANNER:
            return self.level <= 1
        return True


def _write_all(fd, data):
    while data:
        written = os.write(fd, data)
        data = data[written:]


def _forward(read_fd, out_fd, line_filter):
    pending = b""
    try:
        while True:
            chunk = os.read(read_fd, 65536)
            if not chunk:
                break
            pending += chunk
            *lines, pending = pending.split(b"\n")
            kept = b"".join(
                line + b"\n" for line in lines if line_filter.keep(line + b"\n")
            )
            if kept:
                _write_all(out_fd, kept)
        if pending and line_filter.keep(pending):
            _write_all(out_fd, pending)
    except OSError:
        pass
    finally:
        os.close(read_fd)


@contextlib.contextmanager
def filtered_startup_logs(level=None):
    """Inside the block, what is written to file descriptor 2 (stderr, from
    C++ and Python alike) passes through `LineFilter` at ``level`` (default:
    `min_log_level` of the environment) on its way to the real stderr.

    Does nothing when ``level`` is 0 or less, or when file descriptor 2
    cannot be redirected.
    """
    level = min_log_level() if level is None else level
    if level <= 0:
        yield
        return
    try:
        sys.stderr.flush()
    except (AttributeError, OSError, ValueError):
        pass
    try:
        saved = os.dup(2)
    except OSError:
        yield
        return
    try:
        read_fd, write_fd = os.pipe()
    except OSError:
        os.close(saved)
        yield
        return
    try:
        os.dup2(write_fd, 2)
    except OSError:
        for fd in (saved, read_fd, write_fd):
            os.close(fd)
        yield
        return
    os.close(write_fd)
    thread = threading.Thread(
        target=_forward,
        args=(read_fd, saved, LineFilter(level)),
        name="tensorflow-startup-logs",
        daemon=True,
    )
    thread.start()
    try:
        yield
    finally:
        try:
            sys.stderr.flush()
        except (AttributeError, OSError, ValueError):
            pass
        # Restoring descriptor 2 closes the pipe's last write end, so the
        # thread reads to the end, writes what is left and stops.
        os.dup2(saved, 2)
        thread.join(timeout=2.0)
        if not thread.is_alive():
            os.close(saved)
        # Else a process started inside the block still holds the pipe: the
        # thread keeps forwarding its output (and needs `saved` for it).
