"""One process at a time per run directory (or result file).

A training run writes checkpoints, commit records, ``log.csv`` and
``metrics.json`` into its run directory, and a rerun trusts what it finds
there; two processes writing one directory at once would leave a mix of
two trainings. So a process first takes the directory: it creates
``<directory>/.lock``, a small JSON file naming the holder (pid, host, the
process's start time, when it took the directory, its command line), and
removes it when it is done. `hold` is the context manager that does both;
`DirectoryBusy` is what another process gets: one paragraph naming the
holder and what to do, raised before that process has written anything.

The rules:

* **Atomic.** The file is created complete under its final name in one
  step (a hard link of a fully written temporary file; ``O_CREAT|O_EXCL``
  on a filesystem without hard links), so of two processes starting
  together exactly one gets it.
* **Released** when the holder is done, whether it finished, failed or was
  interrupted (Ctrl-C): the file is removed, and so is a directory that the
  lock itself created and that is still empty (a refused or failed first
  attempt leaves no folder behind).
* **A holder that is gone** (a run killed with SIGKILL, a machine that
  rebooted) is replaced, with one line saying so, so that rerunning the
  command resumes after any kill. On the holder's own machine (same host
  name, boot and pid namespace) the process is checked directly: the lock
  is abandoned when that pid no longer runs, is a zombie, or now belongs to
  a process that started at another time than the one recorded (pid
  reuse; the start time is read from ``/proc/<pid>/stat`` where the system
  has it, elsewhere a running pid counts as the holder).
* **Another machine** (a shared filesystem) cannot be checked: the holder
  refreshes the file's modification time every `HEARTBEAT_SECONDS`
  (1 minute) from a background thread, and its lock counts as abandoned
  once that heartbeat is older than `STALE_SECONDS` (10 minutes) by the
  clock of the machine that looks (the machines' clocks must agree to
  within a few minutes). If you know such a holder is gone, deleting
  ``<directory>/.lock`` frees the directory at once.
* **Taking over is atomic too**: the process that replaces an abandoned
  lock first creates a guard file named after that lock's token
  (``.lock.<token>``, the same way as the lock), checks that the lock is
  still the abandoned one and replaces it; of several processes that find
  the same abandoned lock, one takes it over and the others then find a
  live holder. A guard left by a process killed in that instant is
  abandoned by the same rules.
* **Re-entrant within a process**: a process that holds a directory may
  "take" it again (a search driver and the run it is part of); it is
  released when the outermost holder is done.

Nothing else is needed: a second ``python train_*.py`` on a busy
``--output-dir`` exits with code 2 and this message; ``--overwrite`` does
not take a directory from a live holder. Under MultiWorkerMirroredStrategy
only the chief takes the run directory (the runner).

>>> with hold("runs/rnn_spn/x"):
...     train()

The module uses the standard library only.
"""

import contextlib
import datetime
import functools
import hashlib
import json
import os
import secrets
import shlex
import socket
import sys
import threading
import time

LOCK_NAME = ".lock"
HEARTBEAT_SECONDS = 60.0
STALE_SECONDS = 600.0
# A lock file that cannot be parsed is being written (O_EXCL, no hard
# links) for this long at most; older, it is garbage and taken over.
UNREADABLE_GRACE_SECONDS = 10.0
_ATTEMPTS = 200


class DirectoryBusy(Exception):
    """Another live process holds the directory (exit code 2 in the scripts).

    Attributes:
        directory: the directory asked for.
        holder: the holder's lock record (a dict).
    """

    def __init__(self, message, directory=None, holder=None):
        super().__init__(message)
        self.directory = directory
        self.holder = holder or {}


# === This process and its machine ===


def _read_text(path):
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def _proc_stat(pid):
    """``(state, start time in clock ticks after boot)`` of ``pid`` from
    ``/proc/<pid>/stat``; None where there is no such file."""
    text = _read_text(f"/proc/{int(pid)}/stat")
    if not text:
        return None
    # The command name (field 2) is in parentheses and may hold spaces.
    fields = text[text.rfind(")") + 2 :].split()
    try:
        return fields[0], int(fields[19])
    except (IndexError, ValueError):
        return None


def process_start_time(pid):
    """When ``pid`` started (clock ticks after boot, from ``/proc``), or
    None where the system does not say."""
    stat = _proc_stat(pid)
    return None if stat is None else stat[1]


def _machine():
    """What identifies the machine and pid namespace of this process."""
    pid_namespace = None
    with contextlib.suppress(OSError):
        pid_namespace = os.readlink("/proc/self/ns/pid")
    return {
        "host": socket.gethostname(),
        "boot_id": _read_text("/proc/sys/kernel/random/boot_id"),
        "pid_namespace": pid_namespace,
    }


def _command():
    argv = list(sys.argv) or ["python"]
    if argv[0].endswith(".py"):
        argv = ["python", *argv]
    return shlex.join(argv)


def _own_record():
    now = time.time()
    return dict(
        _machine(),
        pid=os.getpid(),
        process_start=process_start_time(os.getpid()),
        started=datetime.datetime.fromtimestamp(now)
        .astimezone()
        .isoformat(timespec="seconds"),
        started_unix=now,
        command=_command(),
        cwd=os.getcwd(),
        token=secrets.token_hex(8),
    )


# === Judging a lock ===


def _pid_runs(pid):
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    except OSError:
        return False
    return True


def same_machine(record):
    """Whether the process of ``record`` can be checked from here: the same
    host name, and the same boot and pid namespace where both are known."""
    here = _machine()
    if record.get("host") != here["host"]:
        return False
    for key in ("boot_id", "pid_namespace"):
        if record.get(key) and here[key] and record[key] != here[key]:
            return False
    return True


def judge(record, mtime, now=None):
    """``(live, why)`` of a lock ``record`` whose file was last modified at
    ``mtime``: whether its holder counts as running, and if not, why (for
    the line that reports a takeover)."""
    now = time.time() if now is None else now
    if same_machine(record):
        pid = record.get("pid")
        if not _pid_runs(pid):
            return False, "which is no longer running"
        stat = _proc_stat(pid)
        if stat is not None:
            state, start = stat
            if state in ("Z", "X"):
                return False, "which is no longer running"
            recorded = record.get("process_start")
            if recorded is not None and recorded != start:
                return False, (
                    "which is no longer running (its pid now belongs to another "
                    "process)"
                )
        if pid == os.getpid() and record.get("process_start") == process_start_time(
            pid
        ):
            # This process, but no holder in it: a lock it failed to remove.
            return False, "which is this process and no longer holds it"
        return True, None
    age = now - mtime
    if age > STALE_SECONDS:
        return False, (
            f"on another machine, whose heartbeat stopped {_duration(age)} ago"
        )
    return True, None


def _duration(seconds):
    seconds = max(0.0, float(seconds))
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def describe_holder(record):
    """``pid 123 on this machine (started ..., 5 min ago; python ...)``."""
    where = "this machine" if same_machine(record) else f"host {record.get('host')!r}"
    text = f"pid {record.get('pid')} on {where}"
    details = []
    if record.get("started"):
        since = record["started"].replace("T", " ")
        if isinstance(record.get("started_unix"), (int, float)):
            since += f", {_duration(time.time() - record['started_unix'])} ago"
        details.append(f"started {since}")
    if record.get("command"):
        details.append(record["command"])
    if details:
        text += f" ({'; '.join(details)})"
    return text


def _busy_message(subject, path, record, mtime, what, flag, overwrite_flag):
    text = (
        f"{subject} is in use by another process: {describe_holder(record)}. "
        f"One process at a time writes a {what}."
    )
    if not same_machine(record):
        text += (
            f" That process runs on another machine and cannot be checked from "
            f"here: its heartbeat is {_duration(time.time() - mtime)} old, and its "
            f"lock counts as abandoned once the heartbeat is "
            f"{_duration(STALE_SECONDS)} old (a running holder refreshes it every "
            f"{_duration(HEARTBEAT_SECONDS)}); if you know it is gone, delete "
            f"{path}."
        )
    text += " Wait for it to finish (the same command then continues"
    text += (
        " or reports the finished run)" if what == "run directory" else " from there)"
    )
    text += f", or choose another {flag}."
    if overwrite_flag:
        text += f" {overwrite_flag} does not take a {what} from a running process."
    return text


# === Files ===


def _read(path):
    """``(record, raw bytes, mtime)`` of the lock file ``path``; ``record``
    None if it does not parse; None if there is no file."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
            mtime = os.fstat(f.fileno()).st_mtime
    except FileNotFoundError:
        return None
    try:
        record = json.loads(raw.decode())
        if not isinstance(record, dict):
            record = None
    except ValueError:
        record = None
    return record, raw, mtime


def _identity(found):
    """What tells this lock file apart from any other (its token)."""
    record, raw, _ = found
    if record and record.get("token"):
        return str(record["token"])
    return hashlib.sha256(raw).hexdigest()[:16]


def _write_new(path, payload):
    """Creates ``path`` holding ``payload``, flushed to disk;
    `FileExistsError` if it exists."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        os.write(fd, payload)
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_temporary(directory, name, payload):
    tmp = os.path.join(directory, f".{name}.{secrets.token_hex(6)}.tmp")
    _write_new(tmp, payload)
    return tmp


def _create(path, payload):
    """Creates ``path`` holding ``payload`` unless it exists; returns
    whether this call created it. Readers never see it partly written
    (except on a filesystem without hard links)."""
    directory, name = os.path.split(path)
    tmp = _write_temporary(directory, name, payload)
    try:
        try:
            os.link(tmp, path)
            return True
        except FileExistsError:
            return False
        except OSError:
            # NFS may report a link that it made as failed.
            with contextlib.suppress(OSError):
                if os.stat(tmp).st_nlink == 2:
                    return True
        # No hard links here: create it exclusively and write it.
        try:
            _write_new(path, payload)
        except FileExistsError:
            return False
        return True
    finally:
        with contextlib.suppress(OSError):
            os.remove(tmp)


def _replace(path, payload):
    directory, name = os.path.split(path)
    tmp = _write_temporary(directory, name, payload)
    try:
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise


def _remove_if_ours(path, token):
    found = _read(path)
    if found is not None and found[0] and found[0].get("token") == token:
        with contextlib.suppress(FileNotFoundError):
            os.remove(path)


def _take(path, payload, token, busy, depth=0):
    """Makes the lock file ``path`` ours. Returns None when it was free, or
    ``(record, why)`` of the abandoned lock it took over; ``busy(record,
    mtime)`` makes the exception raised for a live holder."""
    for _ in range(_ATTEMPTS):
        try:
            if _create(path, payload):
                return None
        except FileNotFoundError:
            # The directory was removed meanwhile (a holder that created it
            # released it); make it again.
            os.makedirs(os.path.dirname(path), exist_ok=True)
            continue
        found = _read(path)
        if found is None:
            continue  # released meanwhile
        record, _, mtime = found
        if record is None:
            if time.time() - mtime < UNREADABLE_GRACE_SECONDS:
                time.sleep(0.05)  # being written
                continue
            why = "which cannot be read"
        else:
            live, why = judge(record, mtime)
            if live:
                raise busy(record, mtime)
        if depth >= 4:
            raise RuntimeError(f"Could not take over {path}: too many guard files.")
        # Abandoned: take it over under a guard named after it.
        guard = f"{path}.{_identity(found)}"
        try:
            _take(guard, payload, token, busy, depth + 1)
        except DirectoryBusy:
            time.sleep(0.02 + 0.05 * secrets.randbelow(100) / 100)
            continue  # another process is taking it over now
        try:
            current = _read(path)
            if current is not None and _identity(current) == _identity(found):
                _replace(path, payload)
                return record or {}, why
        finally:
            _remove_if_ours(guard, token)
    raise RuntimeError(f"Could not take {path} after {_ATTEMPTS} attempts.")


# === Holding ===

# Locks held by this process: {lock file's real path: Lock}.
_HELD = {}
_HELD_GUARD = threading.Lock()


class Lock:
    """A held lock (see `acquire`); `release` gives it back."""

    def __init__(self, directory, path, token, created):
        self.directory = directory
        self.path = path
        self.token = token
        self.created = created  # folders the lock made, deepest last
        self.depth = 1
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._heartbeat, name=f"run-lock heartbeat {path}", daemon=True
        )
        self._thread.start()

    def _heartbeat(self):
        while not self._stop.wait(HEARTBEAT_SECONDS):
            found = _read(self.path)
            if found is None or not found[0] or found[0].get("token") != self.token:
                return  # removed or replaced: nothing of ours to refresh
            with contextlib.suppress(OSError):
                os.utime(self.path)

    def release(self):
        """Gives the directory back (the outermost holder of this process)."""
        with _HELD_GUARD:
            self.depth -= 1
            if self.depth > 0:
                return
            _HELD.pop(_key(self.path), None)
        self._stop.set()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout=5)
        with contextlib.suppress(OSError):
            _remove_if_ours(self.path, self.token)
        _remove_empty(self.created)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.release()


def _key(path):
    return os.path.realpath(os.path.abspath(path))


def _missing_folders(directory):
    """The folders that ``os.makedirs(directory)`` would create, deepest last."""
    missing = []
    probe = os.path.abspath(directory)
    while not os.path.exists(probe):
        missing.append(probe)
        parent = os.path.dirname(probe)
        if parent == probe:
            break
        probe = parent
    return missing[::-1]


def _remove_empty(folders):
    for folder in reversed(folders):
        try:
            os.rmdir(folder)
        except OSError:
            return  # not empty (or gone): so are its parents


def acquire(
    directory,
    *,
    name=LOCK_NAME,
    log=None,
    what="run directory",
    flag="--output-dir",
    overwrite_flag="--overwrite",
    subject=None,
):
    """Takes ``directory`` for this process and returns the `Lock`.

    Raises `DirectoryBusy` (before writing anything) when another running
    process holds it; an abandoned lock (see the module docstring) is taken
    over with one line through ``log`` (default: stderr). ``subject``
    (default ``directory``), ``what``, ``flag`` and ``overwrite_flag`` word
    the refusal (``overwrite_flag`` None: no such flag). ``name``: the lock
    file's name in ``directory``. Creates ``directory`` if needed.
    """
    path = os.path.join(os.fspath(directory), name)
    key = _key(path)
    with _HELD_GUARD:
        held = _HELD.get(key)
        if held is not None:
            held.depth += 1
            return held
    log = log or (lambda message: print(message, file=sys.stderr, flush=True))

    def busy(record, mtime):
        return DirectoryBusy(
            _busy_message(
                subject or directory, path, record, mtime, what, flag, overwrite_flag
            ),
            directory=directory,
            holder=record,
        )

    # A live holder is refused before anything is written.
    found = _read(path) if os.path.isdir(directory) else None
    if found is not None and found[0] is not None:
        live, _ = judge(found[0], found[2])
        if live:
            raise busy(found[0], found[2])
    record = _own_record()
    payload = (json.dumps(record, indent=2, sort_keys=True) + "\n").encode()
    created = _missing_folders(directory)
    os.makedirs(directory, exist_ok=True)
    try:
        taken = _take(path, payload, record["token"], busy)
    except BaseException:
        _remove_empty(created)
        raise
    if taken is not None:
        previous, why = taken
        holder = describe_holder(previous) if previous else "a lock"
        log(f"note: {subject or directory}: took over from {holder}, {why}.")
    lock = Lock(directory, path, record["token"], created)
    with _HELD_GUARD:
        _HELD[key] = lock
    return lock


@contextlib.contextmanager
def hold(directory, **kwargs):
    """``with hold(directory):`` the body runs holding ``directory`` (see
    `acquire` for the arguments); released however the body ends."""
    lock = acquire(directory, **kwargs)
    try:
        yield lock
    finally:
        lock.release()


def holder(directory, name=LOCK_NAME):
    """The record of the live process holding ``directory``, or None."""
    found = _read(os.path.join(os.fspath(directory), name))
    if found is None or found[0] is None:
        return None
    return found[0] if judge(found[0], found[2])[0] else None


# === Result files of drivers ===

_CALL_LOCKS = threading.local()


def refuses_when_busy(main):
    """Decorates a driver's ``main(argv) -> exit code``: the locks taken
    with `hold_for_call` during a call are released when it returns, and a
    `DirectoryBusy` is printed as ``error: <paragraph>`` with exit code 2."""

    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        stack = getattr(_CALL_LOCKS, "stack", None)
        _CALL_LOCKS.stack = contextlib.ExitStack()
        try:
            with _CALL_LOCKS.stack:
                return main(*args, **kwargs)
        except DirectoryBusy as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        finally:
            _CALL_LOCKS.stack = stack

    return wrapper


def hold_for_call(path, flag="--output"):
    """Takes the result file ``path`` (a lock file ``.<name>.lock`` beside
    it) until the `refuses_when_busy` call that is running returns: a
    second driver writing the same file is refused."""
    stack = getattr(_CALL_LOCKS, "stack", None)
    if stack is None:
        raise RuntimeError("hold_for_call() runs inside a @refuses_when_busy call.")
    folder, base = os.path.split(os.path.abspath(os.fspath(path)))
    return stack.enter_context(
        hold(
            folder,
            name=f".{base}.lock",
            what="result file",
            flag=flag,
            overwrite_flag=None,
            subject=os.fspath(path),
        )
    )
