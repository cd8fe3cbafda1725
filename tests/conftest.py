"""Test-wide settings: TensorFlow is the default backend, logs stay quiet,
oneDNN kernels are on as in the scripts, the suite never touches the
network, and it fails when a test leaves a file of the repository changed
(see the end of this file).

The network guard: from the moment this file is imported, every Python-level
outside connection fails with `NetworkBlockedError` (an `OSError`, so code
that handles "no network" sees just that), naming the address. Loopback
(127.0.0.0/8, ::1, "localhost", this machine's own name) and Unix sockets
stay allowed: the multi-worker tests run TensorFlow workers on 127.0.0.1.
Name lookups of outside hosts are refused the same way (they would send a
DNS query). Connections made by C++ code (TensorFlow's gRPC) do not pass
through Python's `socket` and are not covered.

Subprocesses started by tests are outside this guard; for them
`CRAM_KERAS_OFFLINE=1` is exported, which `cram_keras.data.sources` reads as
"the network is unreachable, do not try", so a script decides instantly.
"""

import ipaddress
import os
import pathlib
import socket

import pytest

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ["CRAM_KERAS_OFFLINE"] = "1"
# As the training scripts do (their subprocess runs set it themselves):
# TensorFlow's oneDNN CPU kernels, which it leaves off on CPUs without
# AVX-512, so that in-process tests run the kernels the scripts run.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
# Tests run tiny shapes, so XLA's compile time is what they pay, not the
# compiled code's speed: JAX compiles every eager op, and the JAX reruns and
# smoke scripts compile whole training steps. XLA's -O0 compiles faster, and
# so do its older CPU loop emitters: the inpainter's smoke run on JAX spends
# about half as long in XLA with them as with the newer fusion emitters,
# with the same scores. Inherited by the subprocesses; an XLA_FLAGS of the
# caller is kept.
os.environ.setdefault(
    "XLA_FLAGS",
    "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"
    " --xla_cpu_use_fusion_emitters=false",
)

# Loopback names, and this machine's own name (resolved from /etc/hosts).
_LOCAL_NAMES = {
    "localhost",
    "localhost.localdomain",
    "ip6-localhost",
    "ip6-loopback",
    socket.gethostname().lower(),
}


class NetworkBlockedError(OSError):
    """An outside connection attempted while the test suite runs."""


def _is_local(host) -> bool:
    if host is None or host in ("", b""):
        return True  # getaddrinfo(None, port): the local wildcard / loopback.
    if isinstance(host, bytes):
        host = host.decode("ascii", "replace")
    host = str(host).split("%", 1)[0]  # Drop an IPv6 zone ("fe80::1%eth0").
    if host.lower() in _LOCAL_NAMES:
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False  # A name other than localhost.
    return address.is_loopback or address.is_unspecified


def _blocked(what, address):
    return NetworkBlockedError(
        f"tests/conftest.py blocks network access: {what} {address!r} was "
        "refused (only loopback and Unix sockets are allowed in the test suite)."
    )


_real_connect = socket.socket.connect
_real_connect_ex = socket.socket.connect_ex
_real_getaddrinfo = socket.getaddrinfo


def _check(sock, address, what):
    if sock.family in (socket.AF_INET, socket.AF_INET6):
        host = address[0] if isinstance(address, tuple) and address else address
        if not _is_local(host):
            raise _blocked(what, address)


def _guarded_connect(self, address):
    _check(self, address, "connect to")
    return _real_connect(self, address)


def _guarded_connect_ex(self, address):
    _check(self, address, "connect to")
    return _real_connect_ex(self, address)


def _guarded_getaddrinfo(host, *args, **kwargs):
    if not _is_local(host):
        try:  # Numeric addresses need no lookup; connect() checks them.
            ipaddress.ip_address(str(host).split("%", 1)[0])
        except ValueError:
            raise _blocked("name lookup of", host) from None
    return _real_getaddrinfo(host, *args, **kwargs)


socket.socket.connect = _guarded_connect
socket.socket.connect_ex = _guarded_connect_ex
socket.getaddrinfo = _guarded_getaddrinfo


# === The two sampler kernels ===
# Modules marked `pytest.mark.usefixtures("sampler_kernel")` (the sampling
# ops and the SpatialTransformer tests) run every test twice: with the
# keras.ops sampler and with the compiled TensorFlow kernel
# (cram_keras.ops.native_sampler). The kernel is built once per test session
# into the run's cache folder (`CRAM_KERAS_CACHE`, below), which the xdist
# workers and the scripts' processes share.


@pytest.fixture(scope="session")
def native_sampler_cache():
    path = pathlib.Path(os.environ["CRAM_KERAS_CACHE"])
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture
def native(monkeypatch, native_sampler_cache):
    """The compiled kernels forced on, cached in the suite's shared folder
    (tests that take it skip where they cannot be built)."""
    from cram_keras.ops import native_sampler

    monkeypatch.setenv(native_sampler.CACHE_VARIABLE, str(native_sampler_cache))
    with native_sampler.native_sampler(True):
        yield native_sampler


@pytest.fixture(params=["keras_ops", "native"])
def sampler_kernel(request, monkeypatch):
    from cram_keras.ops import native_sampler

    if request.param == "native":
        from testing import native_sampler_unavailable

        reason = native_sampler_unavailable()
        if reason:
            pytest.skip(reason)
        cache = request.getfixturevalue("native_sampler_cache")
        monkeypatch.setenv(native_sampler.CACHE_VARIABLE, str(cache))
    with native_sampler.native_sampler(request.param == "native"):
        yield request.param


# === The repository stays as it was ===
# A test writes only under its tmp_path: the suite fails when it leaves a
# file in the repository changed or new (ignored paths such as runs/ and the
# build caches excepted). Checked once, by the process that runs the session
# (the xdist controller, after every worker has finished), from `git status`.

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _repository_state():
    """`git status` lines of the repository, or None outside a git checkout."""
    import subprocess

    try:
        proc = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=all"],
            cwd=_REPO,
            capture_output=True,
            text=True,
            timeout=60,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return set(proc.stdout.splitlines()) if proc.returncode == 0 else None


def _is_controller(config):
    return not hasattr(config, "workerinput")


def pytest_sessionstart(session):
    if _is_controller(session.config):
        session.config._repository_before = _repository_state()


def pytest_sessionfinish(session, exitstatus):
    before = getattr(session.config, "_repository_before", None)
    if before is None or not _is_controller(session.config):
        return
    after = _repository_state() or set()
    changed = sorted(after - before)
    if changed:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        message = (
            "the test run changed files in the repository (tests write only "
            "under their tmp_path): " + "; ".join(changed)
        )
        if reporter is not None:
            reporter.write("\n")
            reporter.write_line(f"ERROR: {message}", red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


# === The run's own cache folders ===
# The process that runs the session (the xdist controller, before it starts
# the workers) makes two fresh folders that every worker and subprocess
# inherits, and removes them at the end; a folder the caller set is kept.
#
# `CRAM_KERAS_CACHE`: the scripts' cache (generated data sets, the compiled
# kernel library), so that the suite writes nothing into the home folder and
# builds the kernel library once per run, for the in-process tests and the
# scripts' processes alike (the `native_sampler_cache` fixture).
#
# `JAX_COMPILATION_CACHE_DIR`: the JAX tests are mostly subprocess runs of the
# scripts, and each process compiles the same training steps and eager ops
# again: a smoke run of the inpainter spends most of its time in XLA's
# compiler. Every compiled program is cached, however small. No size limit:
# with one, JAX scans the whole folder at every write, which for thousands of
# small programs costs more than it saves. Without it JAX takes no lock; a
# process that reads an entry while another is writing it warns and compiles
# the program itself, so a race costs time, not results.

_JAX_CACHE_ENV = {
    "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
    "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0",
}
_RUN_FOLDERS = {
    "CRAM_KERAS_CACHE": "cram-keras-cache-",
    "JAX_COMPILATION_CACHE_DIR": "cram-keras-jax-cache-",
}


def pytest_configure(config):
    if not _is_controller(config):
        return
    import tempfile

    config._run_folders = {
        name: tempfile.mkdtemp(prefix=prefix)
        for name, prefix in _RUN_FOLDERS.items()
        if not os.environ.get(name)
    }
    os.environ.update(config._run_folders)
    if "JAX_COMPILATION_CACHE_DIR" in config._run_folders:
        for name, value in _JAX_CACHE_ENV.items():
            os.environ.setdefault(name, value)


def pytest_unconfigure(config):
    import shutil

    for name, path in getattr(config, "_run_folders", {}).items():
        shutil.rmtree(path, ignore_errors=True)
        del os.environ[name]


# === Disk ===
# pyproject.toml deletes a passed test's tmp_path when it ends, so at any
# moment the suite holds what the running tests write. A test that writes more
# than DISK_BUDGET_MB under its tmp_path fails, naming its largest files: a
# suite that needs gigabytes of free disk fails on a small CI machine in the
# middle of the run, with errors that name no test.

DISK_BUDGET_MB = 400


def _tree_bytes(path):
    sizes = []
    for root, _, files in os.walk(path):
        for name in files:
            file = os.path.join(root, name)
            try:
                sizes.append((os.lstat(file).st_size, file))
            except OSError:
                pass  # Removed while walking.
    return sizes


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
    result = yield
    tmp_path = getattr(item, "funcargs", {}).get("tmp_path")
    if tmp_path is not None:
        sizes = _tree_bytes(tmp_path)
        total = sum(size for size, _ in sizes)
        if total > DISK_BUDGET_MB * 2**20:
            largest = ", ".join(
                f"{os.path.relpath(file, tmp_path)} ({size / 2**20:.0f} MB)"
                for size, file in sorted(sizes, reverse=True)[:3]
            )
            pytest.fail(
                f"the test wrote {total / 2**20:.0f} MB under its tmp_path, over "
                f"the suite's budget of {DISK_BUDGET_MB} MB a test (tests/conftest.py"
                f"). Largest: {largest}. Use a smaller model or fewer saved files.",
                pytrace=False,
            )
    return result
