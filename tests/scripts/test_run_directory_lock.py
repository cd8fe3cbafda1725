"""One training process per run directory, in the scripts.

Two processes started together on one run directory: exactly one trains,
the other exits 2 with one paragraph naming it, and the run holds exactly
what a single run with that seed holds (log rows, checkpoints, metrics,
weights; --deterministic). A directory held by another process is refused
before anything is read or written, also with --overwrite, and so is a
search (--tune) in it, and --eval-only's writing into it. A plain ``kill``
(SIGTERM) stops a run as Ctrl-C does and releases its directory, so that
the rerun resumes without taking anything over. A lock left by a SIGKILLed
run is taken over: see `test_kill_resume.py`; the lock itself:
`tests/training/test_run_lock.py`."""

import csv
import json
import os
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import pytest
from testing import held_by_another_process

from cram_keras.experiments import cli, cram_cls, inpaint, rnn_spn

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# A small, fast smoke run (as the kill tests').
RNN_SPN_ARGS = ["--smoke", "--deterministic", "--model", "ffn_spn", "--set",
                "n_train=32", "--set", "n_valid=16", "--set", "n_test=16"]  # fmt: skip
# Columns of log.csv that time the epoch rather than train it.
TIMING = ("train_seconds", "train_samples_per_second")


def files(directory):
    return sorted(
        os.path.relpath(os.path.join(root, name), directory)
        for root, _, names in os.walk(directory)
        for name in names
    )


def log_rows(out):
    with open(out / "log.csv") as f:
        return [
            {k: v for k, v in row.items() if k not in TIMING}
            for row in csv.DictReader(f)
        ]


def event_file_pids(out):
    """The process ids in the names of the TensorBoard event files."""
    return {
        int(name.split(".")[-3])
        for name in files(out / "tensorboard")
        if os.path.basename(name).startswith("events.out.tfevents.")
    }


def weights(out):
    import cram_keras.models  # noqa: F401  Registers the custom classes.

    model = keras.models.load_model(out / "model.keras", compile=False)
    return [np.asarray(w) for w in model.weights]


@pytest.mark.slow
def test_two_processes_started_together_train_the_run_once(tmp_path):
    out, reference = tmp_path / "run", tmp_path / "reference"
    env = dict(os.environ, KERAS_BACKEND="tensorflow", TF_CPP_MIN_LOG_LEVEL="2")
    env.pop("CRAM_KERAS_CRASH_AT", None)
    script = os.path.join(ROOT, "train_rnn_spn.py")
    procs = [
        subprocess.Popen(
            [sys.executable, script, *RNN_SPN_ARGS, "--output-dir", str(directory)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            cwd=ROOT,
        )
        for directory in (out, out, reference)
    ]
    results = [(p, *p.communicate(timeout=600)) for p in procs]
    assert results[2][0].returncode == 0, results[2][2][-3000:]
    pair = sorted(results[:2], key=lambda r: r[0].returncode)
    (winner, won_out, won_err), (loser, lost_out, lost_err) = pair
    assert winner.returncode == 0, won_err[-3000:]
    assert f"run directory: {out} (new run)" in won_out
    # The other one: exit 2, one paragraph naming the process that trains,
    # nothing on stdout, no traceback.
    assert loser.returncode == 2, lost_out[-2000:] + lost_err[-3000:]
    assert lost_out == ""
    assert "Traceback" not in lost_err
    error = [line for line in lost_err.splitlines() if line.startswith("error:")]
    assert len(error) == 1, lost_err
    assert error[0].startswith(
        f"error: {out} is in use by another process: pid {winner.pid} on this "
        "machine (started "
    )
    assert "train_rnn_spn.py" in error[0] and "--overwrite does not take" in error[0]

    # What a single run with that seed holds, written by the winner alone,
    # and no lock once it is done.
    assert event_file_pids(out) == {winner.pid}
    assert log_rows(out) == log_rows(reference)
    assert files(out / "checkpoints") == files(reference / "checkpoints")
    assert not (out / ".lock").exists()
    metrics = json.loads((out / "metrics.json").read_text())
    expected = json.loads((reference / "metrics.json").read_text())
    for key in ("epochs", "best_epoch", "test_per_digit_error", "test_loss"):
        assert metrics[key] == expected[key], key
    for a, b in zip(weights(out), weights(reference), strict=True):
        np.testing.assert_array_equal(a, b)


def run_cli(experiment, argv, capsys):
    code = cli.main(experiment, argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize(
    "experiment, flags",
    [
        (rnn_spn.EXPERIMENT, ["--smoke"]),
        (rnn_spn.EXPERIMENT, ["--smoke", "--overwrite"]),
        (inpaint.EXPERIMENT, ["--smoke", "--tune"]),
        (cram_cls.EXPERIMENT, ["--smoke", "--tune"]),
    ],
    ids=["rnn_spn", "rnn_spn-overwrite", "inpaint-tune", "cls-tune"],
)
def test_a_busy_run_directory_is_refused_and_left_as_it_was(
    experiment, flags, tmp_path, capsys
):
    out = tmp_path / "run"
    out.mkdir()
    (out / "config.json").write_text("{}")  # the holder's run, so far
    with held_by_another_process(out) as holder:
        before = {name: (out / name).read_bytes() for name in files(out)}
        code, stdout, stderr = run_cli(
            experiment, [*flags, "--output-dir", str(out)], capsys
        )
        after = {name: (out / name).read_bytes() for name in files(out)}
    assert code == 2, stdout[-2000:] + stderr[-3000:]
    assert stdout == "" and "Traceback" not in stderr
    assert stderr.startswith(
        f"error: {out} is in use by another process: pid {holder.pid} on this machine"
    )
    assert len(stderr.strip().splitlines()) == 1
    assert "choose another --output-dir" in stderr
    assert after == before  # nothing written, nothing removed
    assert not (out / "tuner").exists()


def test_eval_only_is_refused_in_a_busy_directory(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    with held_by_another_process(out) as holder:
        code, stdout, stderr = run_cli(
            inpaint.EXPERIMENT,
            ["--smoke", "--eval-only", str(out / "model.keras")],
            capsys,
        )
        assert sorted(os.listdir(out)) == [".lock"]  # nothing written
    assert code == 2, stdout[-2000:] + stderr[-3000:]
    assert stdout == "" and "Traceback" not in stderr
    assert stderr.startswith(
        f"error: {out} is in use by another process: pid {holder.pid} on this machine"
    )


@pytest.mark.slow
def test_a_terminated_run_releases_its_directory_and_resumes(tmp_path):
    out = tmp_path / "run"
    env = dict(os.environ, KERAS_BACKEND="tensorflow", TF_CPP_MIN_LOG_LEVEL="2")
    env.pop("CRAM_KERAS_CRASH_AT", None)
    command = [sys.executable, os.path.join(ROOT, "train_rnn_spn.py"),
               *RNN_SPN_ARGS, "--epochs", "1000", "--output-dir", str(out)]  # fmt: skip
    proc = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=env, cwd=ROOT,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 300
        while not (out / "log.csv").exists():  # mid-training, an epoch done
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 128 + signal.SIGTERM, stderr[-3000:]
    assert "interrupted: completed epochs are saved" in stderr
    assert "Traceback" not in stderr
    assert not (out / ".lock").exists()  # released
    done = len(log_rows(out))
    assert 1 <= done < 1000

    # The rerun resumes (two epochs on: the epoch being logged may have
    # been committed already) and takes nothing over.
    rerun = subprocess.run(
        [*command, "--stop-after-epochs", str(done + 2)],
        capture_output=True, text=True, env=env, cwd=ROOT, timeout=600,
    )  # fmt: skip
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert f"note: resuming {out} after epoch " in rerun.stderr
    assert "took over" not in rerun.stderr
    assert [int(row["epoch"]) for row in log_rows(out)] == list(range(done + 2))
