"""One process at a time per run directory (`cram_keras.training.run_lock`).

The other processes here are small Python programs that load the lock
module by its path (no TensorFlow start-up): a holder that waits, a holder
that is SIGKILLed, and several contenders started together."""

import json
import os
import subprocess
import sys
import textwrap
import time

import pytest

from cram_keras.training import run_lock

MODULE = run_lock.__file__

# argv: the module's path, the directory (held until stdin closes), and
# optionally a time to start at.
_CHILD = textwrap.dedent(
    """
    import importlib.util, sys, time
    spec = importlib.util.spec_from_file_location("run_lock", sys.argv[1])
    run_lock = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(run_lock)
    directory = sys.argv[2]
    if len(sys.argv) > 3:
        time.sleep(max(0.0, float(sys.argv[3]) - time.time()))
    try:
        lock = run_lock.acquire(directory)
    except run_lock.DirectoryBusy:
        print("busy", flush=True)
        sys.exit(2)
    print("held", flush=True)
    sys.stdin.read()
    lock.release()
    """
)


def start_holder(directory, at=None):
    argv = [sys.executable, "-c", _CHILD, MODULE, str(directory)]
    if at is not None:
        argv.append(repr(at))
    return subprocess.Popen(
        argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )


def hold_in_child(directory):
    child = start_holder(directory)
    assert child.stdout.readline().strip() == "held"
    return child


def listing(directory):
    return sorted(
        os.path.relpath(os.path.join(root, name), directory)
        for root, dirs, files in os.walk(directory)
        for name in dirs + files
    )


def write_lock(directory, **fields):
    """A lock file as another process would have left it."""
    os.makedirs(directory, exist_ok=True)
    record = dict(
        host=run_lock._machine()["host"],
        pid=0,
        started="2030-01-01T00:00:00+00:00",
        command="python train_rnn_spn.py --smoke",
        token="f" * 16,
    )
    record.update(fields)
    path = os.path.join(directory, run_lock.LOCK_NAME)
    with open(path, "w") as f:
        json.dump(record, f)
    return path


def test_a_second_process_is_refused_and_writes_nothing(tmp_path):
    run = tmp_path / "runs" / "x"
    child = hold_in_child(run)
    try:
        record = json.loads((run / ".lock").read_text())
        assert record["pid"] == child.pid
        assert record["process_start"] == run_lock.process_start_time(child.pid)
        for key in ("host", "started", "command", "token"):
            assert record[key]
        before = listing(tmp_path)
        with pytest.raises(run_lock.DirectoryBusy) as busy:
            run_lock.acquire(str(run))
        message = str(busy.value)
        assert "\n" not in message
        assert (
            f"{run} is in use by another process: pid {child.pid} on this machine"
            in message
        )
        assert "started " in message and "ago" in message
        assert "choose another --output-dir" in message
        assert "--overwrite does not take a run directory" in message
        assert busy.value.holder["pid"] == child.pid
        assert listing(tmp_path) == before
        assert run_lock.holder(run)["pid"] == child.pid
    finally:
        child.communicate("")
    assert child.returncode == 0
    # The holder made the folders; released, it leaves none behind.
    assert not (tmp_path / "runs").exists()
    assert run_lock.holder(run) is None


def test_a_lock_of_a_killed_process_is_taken_over_with_one_line(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "log.csv").write_text("epoch\n0\n")
    child = hold_in_child(run)
    child.kill()
    child.communicate()
    assert (run / ".lock").exists()
    lines = []
    with run_lock.hold(str(run), log=lines.append) as lock:
        assert json.loads((run / ".lock").read_text())["pid"] == os.getpid()
        assert lock.directory == str(run)
    assert len(lines) == 1
    assert lines[0].startswith(f"note: {run}: took over from pid {child.pid}")
    assert lines[0].endswith("which is no longer running.")
    # Released: the lock is gone, the run's files and folder stay.
    assert listing(run) == ["log.csv"]


def test_a_reused_pid_does_not_hold_the_directory(tmp_path):
    """A lock whose pid now runs another process (its start time differs)
    is abandoned; with the recorded start time the process holds it."""
    run = tmp_path / "run"
    other = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"],
                             stdin=subprocess.PIPE)  # fmt: skip
    try:
        start = run_lock.process_start_time(other.pid)
        if start is None:
            pytest.skip("this system does not say when a process started")
        write_lock(run, pid=other.pid, process_start=start)
        with pytest.raises(run_lock.DirectoryBusy, match=f"pid {other.pid}"):
            run_lock.acquire(str(run))
        write_lock(run, pid=other.pid, process_start=start - 1)
        lines = []
        with run_lock.hold(str(run), log=lines.append):
            pass
        assert "its pid now belongs to another process" in lines[0]
    finally:
        other.communicate(b"")


def test_a_lock_from_another_machine_counts_until_its_heartbeat_is_stale(tmp_path):
    run = tmp_path / "run"
    path = write_lock(run, host="other-machine.example", pid=os.getpid())
    with pytest.raises(run_lock.DirectoryBusy) as busy:
        run_lock.acquire(str(run))
    message = str(busy.value)
    assert "host 'other-machine.example'" in message
    assert "cannot be checked from here" in message
    assert "once the heartbeat is 10 min old" in message
    assert f"delete {path}" in message
    # Nine minutes without a heartbeat: still held.
    old = time.time() - 540
    os.utime(path, (old, old))
    with pytest.raises(run_lock.DirectoryBusy):
        run_lock.acquire(str(run))
    # Past STALE_SECONDS: abandoned.
    old = time.time() - run_lock.STALE_SECONDS - 60
    os.utime(path, (old, old))
    lines = []
    with run_lock.hold(str(run), log=lines.append):
        record = json.loads((run / ".lock").read_text())
        assert record["host"] != "other-machine.example"
    assert "on another machine, whose heartbeat stopped 11 min ago" in lines[0]


def test_the_holder_refreshes_its_heartbeat(tmp_path, monkeypatch):
    monkeypatch.setattr(run_lock, "HEARTBEAT_SECONDS", 0.05)
    with run_lock.hold(str(tmp_path)) as lock:
        old = time.time() - 3600
        os.utime(lock.path, (old, old))
        deadline = time.time() + 10
        while os.stat(lock.path).st_mtime < old + 60 and time.time() < deadline:
            time.sleep(0.02)
        assert os.stat(lock.path).st_mtime > time.time() - 60


def test_an_unreadable_lock_is_waited_for_then_taken_over(tmp_path):
    path = tmp_path / ".lock"
    path.write_text("")  # being written, for all anyone knows
    old = time.time() - 2 * run_lock.UNREADABLE_GRACE_SECONDS
    os.utime(path, (old, old))
    lines = []
    with run_lock.hold(str(tmp_path), log=lines.append):
        pass
    assert lines == [f"note: {tmp_path}: took over from a lock, which cannot be read."]


def test_a_process_takes_its_own_directory_again(tmp_path):
    with run_lock.hold(str(tmp_path)) as outer:
        with run_lock.hold(str(tmp_path)) as inner:
            assert inner is outer
        assert (tmp_path / ".lock").exists()
    assert not (tmp_path / ".lock").exists()


@pytest.mark.parametrize("left_by_a_killed_run", [False, True])
def test_of_processes_started_together_exactly_one_holds(
    tmp_path, left_by_a_killed_run
):
    """Fresh, or all finding the same abandoned lock at once: one takes it,
    every other one finds it held."""
    run = tmp_path / "run"
    if left_by_a_killed_run:
        dead = subprocess.Popen([sys.executable, "-c", "pass"])
        dead.wait()
        write_lock(run, pid=dead.pid, process_start=None)
    at = time.time() + 1.0
    children = [start_holder(run, at=at) for _ in range(5)]
    # The one that holds it waits until every one has tried.
    outputs = [child.stdout.readline().strip() for child in children]
    for child in children:
        child.communicate("", timeout=60)
    assert sorted(outputs) == ["busy"] * 4 + ["held"], outputs
    assert sorted(c.returncode for c in children) == [0, 2, 2, 2, 2]
    assert listing(run) == []  # released; no guard or temporary file left


def test_a_driver_is_refused_while_its_result_file_is_written(tmp_path, capsys):
    output = tmp_path / "results" / "search.json"

    @run_lock.refuses_when_busy
    def main(argv=None):
        run_lock.hold_for_call(output)
        output.write_text("{}")
        return 0

    child = start_holder(output.parent)  # holds a lock of another name
    try:
        assert child.stdout.readline().strip() == "held"
        assert main() == 0
    finally:
        child.communicate("")
    # Another process writes the same result file.
    held = subprocess.Popen(
        [sys.executable, "-c", _CHILD.replace("run_lock.acquire(directory)",
         f"run_lock.acquire(directory, name='.{output.name}.lock')"),
         MODULE, str(output.parent)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert held.stdout.readline().strip() == "held"
        assert main() == 2
    finally:
        held.communicate("")
    err = capsys.readouterr().err
    assert err.startswith(
        f"error: {output} is in use by another process: pid {held.pid}"
    )
    assert "choose another --output." in err and "--overwrite" not in err
    assert sorted(os.listdir(output.parent)) == ["search.json"]
    with pytest.raises(RuntimeError, match="refuses_when_busy"):
        run_lock.hold_for_call(output)


def test_a_process_killed_while_taking_over_leaves_a_guard_that_is_taken_over(
    tmp_path,
):
    """The guard of a takeover, left by a process killed in that instant,
    is abandoned by the same rules as the lock."""
    run = tmp_path / "run"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    write_lock(run, pid=dead.pid, token="a" * 16)
    guard = write_lock(tmp_path / "guard", pid=dead.pid, token="b" * 16)
    os.replace(guard, run / f".lock.{'a' * 16}")
    lines = []
    with run_lock.hold(str(run), log=lines.append):
        assert listing(run) == [".lock"]
    assert len(lines) == 1 and "no longer running" in lines[0]
