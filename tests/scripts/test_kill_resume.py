"""SIGKILL at any moment costs no completed work, in every script.

Each test runs a script's smoke run and SIGKILLs it at named moments
(`cram_keras.training.checkpoint.crash_point`, enabled by the environment
variable CRAM_KERAS_CRASH_AT): mid-epoch, while a checkpoint's weights are
being written (the temporary file exists, the final name does not yet),
between the weights and the epoch's record, after the last epoch (during
batch-norm recalibration / before evaluation), during the final evaluation,
and after the figures. After every kill the same command is run again; the
last one finishes the run; each run after a kill takes over the lock the
killed one left on the run directory, saying so in one line. Then
`log.csv` holds each epoch exactly once,
`metrics.json` counts the epochs right, and — with `--deterministic` — the
final weights equal those of an uninterrupted run bit for bit (tolerance 0).
"""

import csv
import json
import os
import signal
import subprocess
import sys

import keras
import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def run(script, out, *args, crash_at=None, timeout=600, backend="tensorflow", env=None):
    """The script's smoke run; ``env``: more variables (None removes one)."""
    env = dict(
        os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="2", **(env or {})
    )
    for name in [name for name, value in env.items() if value is None]:
        del env[name]
    env.pop("CRAM_KERAS_CRASH_AT", None)
    if crash_at:
        env["CRAM_KERAS_CRASH_AT"] = crash_at
    return subprocess.run(
        [
            sys.executable,
            os.path.join(ROOT, script),
            "--smoke",
            "--deterministic",
            "--output-dir",
            str(out),
            *args,
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=timeout,
    )


def epochs_in_log(out):
    with open(out / "log.csv") as f:
        return [int(r["epoch"]) for r in csv.DictReader(f)]


def weights(out):
    import cram_keras.models  # noqa: F401  Registers the custom classes.

    model = keras.models.load_model(out / "model.keras", compile=False)
    return [np.asarray(w) for w in model.weights]


def kill_then_finish(script, out, moments, *args, backend="tensorflow", env=None):
    killed = None
    for moment in moments:
        proc = run(script, out, *args, crash_at=moment, backend=backend, env=env)
        assert proc.returncode == -signal.SIGKILL, (
            f"{moment}: expected a SIGKILL, got {proc.returncode}\n"
            + proc.stderr[-3000:]
        )
        assert not (out / "metrics.json").exists(), moment
        if killed is not None:
            assert_took_over(proc, out, killed)
        # The killed run's lock stays; the next run takes it over.
        killed = json.loads((out / ".lock").read_text())["pid"]
    proc = run(script, out, *args, backend=backend, env=env)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert_took_over(proc, out, killed)
    assert not (out / ".lock").exists()
    return proc


def assert_took_over(proc, out, pid):
    """``proc`` took over the run directory from the killed process ``pid``
    (one line), and went on."""
    said = f"note: {out}: took over from "
    notes = [line for line in proc.stderr.splitlines() if line.startswith(said)]
    assert len(notes) == 1, proc.stderr[-3000:]
    assert notes[0].startswith(f"{said}pid {pid} on this machine ("), notes[0]
    assert notes[0].endswith("which is no longer running."), notes[0]


@pytest.mark.slow
def test_rnn_spn_survives_kills_mid_epoch_mid_checkpoint_and_in_evaluation(tmp_path):
    args = ("--model", "ffn_spn", "--set", "n_train=32", "--set", "n_valid=16",
            "--set", "n_test=16")  # fmt: skip
    reference = tmp_path / "reference"
    proc = run("train_rnn_spn.py", reference, *args)
    assert proc.returncode == 0, proc.stderr[-3000:]

    out = tmp_path / "run"
    kill_then_finish(
        "train_rnn_spn.py",
        out,
        [
            "batch:1",  # mid-epoch 2: epoch 1's checkpoint is kept
            "checkpoint_tmp:epoch-0001.weights.h5",  # during the write
            "before_record:1",  # weights written, record not yet
            "evaluate",  # after training, during the final evaluation
        ],
        *args,
    )
    assert epochs_in_log(out) == [0, 1]
    metrics = json.loads((out / "metrics.json").read_text())
    expected = json.loads((reference / "metrics.json").read_text())
    assert metrics["epochs"] == 2
    for key in ("test_per_digit_error", "test_loss", "valid_loss", "best_epoch"):
        assert metrics[key] == expected[key], key
    for a, b in zip(weights(out), weights(reference), strict=True):
        np.testing.assert_array_equal(a, b)
    # No temporary file of the killed writers is left behind.
    assert not list((out / "checkpoints").glob(".*tmp*"))


@pytest.mark.slow
def test_cram_cls_survives_kills_in_the_first_epoch_and_after_training(tmp_path):
    out = tmp_path / "run"
    kill_then_finish(
        "train_cls.py",
        out,
        ["batch:0", "after_fit", "after_outputs"],
        "--clue",
        "saliency",
    )
    assert epochs_in_log(out) == [0, 1]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["epochs"] == 2
    # The saliency network was trained once (its log has its epochs once).
    with open(out / "saliency" / "network" / "log.csv") as f:
        rows = [int(r["epoch"]) for r in csv.DictReader(f)]
    assert rows == sorted(set(rows))


@pytest.mark.slow
def test_inpaint_survives_a_kill_during_recalibration_and_evaluation(tmp_path):
    out = tmp_path / "run"
    kill_then_finish(
        "train_inpaint.py", out, ["after_fit", "evaluate"], "--dataset", "mnist32"
    )
    assert epochs_in_log(out) == [0, 1]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["epochs"] == 2
    # Every optimizer stepped once per batch of the two epochs, not more.
    steps = metrics["steps"]
    assert steps["generator"] == 2 * (64 // 16)


@pytest.mark.slow
def test_inpaint_on_jax_survives_a_kill_mid_epoch(tmp_path):
    """On JAX, whose trainer holds the weights and the optimizers' state
    outside the variables during an epoch: after a kill in the second epoch,
    the rerun resumes from the first epoch's checkpoint (written from JAX),
    and the final weights and scores equal those of an uninterrupted JAX run
    bit for bit (tolerance 0; XLA on the CPU is deterministic). The moments
    after training are backend-independent (the TensorFlow test above). The
    CNN encoder: the same run machinery as CRAM's, with less to compile in
    each of the three processes.

    The processes use the scripts' own compilation cache in their cache
    folder (not the test suite's): the first compiles its steps and writes
    them there, and the last loads the training step from there (JAX's own
    log of each compilation and cache hit says so)."""
    args = ("--dataset", "mnist32", "--encoder", "cnn")
    cache = tmp_path / "cache"
    env = {
        "CRAM_KERAS_CACHE": str(cache),
        "JAX_COMPILATION_CACHE_DIR": None,
        "JAX_LOG_COMPILES": "1",
    }
    reference = tmp_path / "reference"
    proc = run("train_inpaint.py", reference, *args, backend="jax", env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    compiled = "Finished XLA compilation of jit(train_step)"
    loaded = "Persistent compilation cache hit for 'jit_train_step'"
    assert compiled in proc.stderr and loaded not in proc.stderr, proc.stderr[-3000:]
    assert list((cache / "jax").glob("jit_train_step-*")), sorted(cache.rglob("*"))

    out = tmp_path / "run"
    proc = kill_then_finish(
        "train_inpaint.py",
        out,
        ["batch:1"],  # mid-epoch 2: epoch 1's checkpoint is kept
        *args,
        backend="jax",
        env=env,
    )
    assert loaded in proc.stderr, proc.stderr[-3000:]
    assert epochs_in_log(out) == [0, 1]
    metrics = json.loads((out / "metrics.json").read_text())
    expected = json.loads((reference / "metrics.json").read_text())
    assert metrics["backend"] == "jax" and metrics["epochs"] == 2
    # Every optimizer stepped once per batch of the two epochs, not more.
    assert set(metrics["steps"].values()) == {2 * (64 // 16)}
    assert metrics["methods"]["cnn_encoder"] == expected["methods"]["cnn_encoder"]
    for a, b in zip(weights(out), weights(reference), strict=True):
        np.testing.assert_array_equal(a, b)
