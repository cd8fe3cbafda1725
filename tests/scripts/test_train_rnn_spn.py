"""train_rnn_spn.py end to end: the smoke run (under --strategy mirrored on
a CPU split into two logical devices) says where it writes, with which data,
backend and strategy, before anything else (no TensorFlow C++ logs), one
line per epoch with its time and ETA, and ends naming its outputs; it
records the two replicas, writes every artifact, the export serves the same
probabilities in a fresh process, an interrupted run resumes, and bad flags
fail clearly."""

import csv
import json
import os
import re
import subprocess
import sys

import keras
import numpy as np
import pytest
from testing import (
    SPLIT_CPU_AND_RUN,
    assert_clear_serving_errors,
    run_script_in_process,
    serve_in_fresh_process,
)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ENV = dict(os.environ, KERAS_BACKEND="tensorflow", TF_CPP_MIN_LOG_LEVEL="2")


# A line of TensorFlow's C++ logging (glog / absl prefix, or absl's notice).
CPP_LOG = re.compile(r"^([IWEF]\d{4} [\d:.]+ +\d+ \S+:\d+\] |WARNING: All log)")
EPOCH_LINE = re.compile(r"^Epoch (\d+)/(\d+) - [\d.hms]+ - ETA [\d.hms]+ - \w")


def check_run_report(output, out, data_dir, epochs, strategy="default (1 replica)"):
    """What a run prints, stdout and stderr together in order: its own
    lines first, the run directory, data, backend and strategy among them,
    no C++ log line at all (the scripts' default level), a line per epoch,
    and a summary naming outputs that exist."""
    lines = output.splitlines()
    assert not [line for line in lines if CPP_LOG.match(line)], output[:3000]
    first = lines.index(f"run directory: {out} (new run)")
    assert all(line.startswith("note: ") for line in lines[:first]), output[:3000]
    head = "\n".join(lines[first : first + 4])
    assert f"backend: tensorflow; strategy: {strategy}" in head
    assert "\ndata: " in head and str(data_dir) in head
    assert re.search(r"^splits: train \d+, valid \d+, test \d+$", head, re.M)
    numbers = [m.group(1, 2) for m in map(EPOCH_LINE.match, lines) if m]
    assert numbers == [(str(e), str(epochs)) for e in range(1, epochs + 1)], output
    finished = next(i for i, line in enumerate(lines) if line.startswith("Finished"))
    assert re.fullmatch(r"Finished in [\d.hms]+\. Results:", lines[finished])
    assert re.fullmatch(
        r"  test per digit error [\d.]+ %, test sequence error [\d.]+ %",
        lines[finished + 1],
    )
    listing = lines[lines.index(f"Outputs in {out}:") + 1 :]
    named = [line.split()[0] for line in listing]
    for name in named:
        assert (out / name).exists(), name
    return named


@pytest.mark.slow
def test_smoke_run_writes_every_artifact_and_exports(fake_mnist_dir, tmp_path):
    out = tmp_path / "run"
    # TF_CPP_MIN_LOG_LEVEL left to the script; stderr merged in order.
    env = {k: v for k, v in ENV.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    argv = [os.path.join(ROOT, "train_rnn_spn.py"), "--smoke", "--export",
            "--strategy", "mirrored", "--set", "n_train=32", "--data-dir",
            str(fake_mnist_dir), "--cache-dir", str(tmp_path / "cache"),
            "--output-dir", str(out)]  # fmt: skip
    proc = subprocess.run(
        [sys.executable, "-c", SPLIT_CPU_AND_RUN, *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-6000:]
    named = check_run_report(
        proc.stdout, out, fake_mnist_dir, epochs=2, strategy="mirrored (2 replicas)"
    )
    assert set(named) >= {"metrics.json", "model.keras", "attention.png",
                          "saved_model/", "tensorboard/", "log.csv"}  # fmt: skip
    for name in (
        "config.json",
        "log.csv",
        "metrics.json",
        "attention.png",
        "model.keras",
        "checkpoints/epoch-0001.json",
        "saved_model/saved_model.pb",
    ):
        assert (out / name).exists(), name
    assert any((out / "tensorboard").rglob("events.out.tfevents*"))
    with open(out / "log.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in rows] == [0, 1]
    metrics = json.loads((out / "metrics.json").read_text())
    for key in ("test_per_digit_error", "test_sequence_error", "wall_seconds"):
        assert key in metrics
    assert metrics["distribution"] == {
        "strategy": "mirrored",
        "replicas": 2,
        "workers": 1,
    }
    assert metrics["epochs"] == 2
    assert (
        0.0 <= metrics["test_per_digit_error"] <= metrics["test_sequence_error"] <= 1.0
    )
    assert json.loads((out / "config.json").read_text())["model"] == "rnn_spn"

    # The SavedModel, reloaded with plain TensorFlow in a fresh process, gives
    # the Keras model's probabilities.
    x = np.random.default_rng(0).random((3, 100, 100, 1)).astype("float32")
    served, report = serve_in_fresh_process(
        out / "saved_model", {"images": x}, tmp_path, env=ENV
    )
    assert_clear_serving_errors(report, {"images": (100, 100, 1)})
    import cram_keras  # noqa: F401  (registers the model classes)

    model = keras.models.load_model(out / "model.keras")
    expected = keras.ops.convert_to_numpy(keras.ops.softmax(model(x), axis=-1))
    assert served.shape == (3, 3, 10)
    np.testing.assert_allclose(served, expected, rtol=1e-5, atol=1e-6)

    # Rerunning a finished run does not train again.
    again = subprocess.run(
        [sys.executable, "-c", SPLIT_CPU_AND_RUN, *argv],
        capture_output=True,
        text=True,
        env=ENV,
        cwd=ROOT,
        timeout=600,
    )
    assert again.returncode == 0 and "is complete" in again.stdout + again.stderr


def test_bad_flags_fail_clearly():
    script = os.path.join(ROOT, "train_rnn_spn.py")
    proc = run_script_in_process(script, "--model", "transformer")
    assert proc.returncode == 2 and "must be one of" in proc.stderr
    proc = run_script_in_process(script, "--downsample", "0.5", "--smoke")
    assert proc.returncode == 2 and "downsample=0.5" in proc.stderr


@pytest.mark.parametrize(
    "script", ["train_cls.py", "train_inpaint.py", "train_rnn_spn.py"]
)
def test_help_works(script):
    proc = run_script_in_process(os.path.join(ROOT, script), "--help")
    assert proc.returncode == 0 and "--smoke" in proc.stdout


def test_mixed_bfloat16_trains_in_bfloat16_with_float32_weights(tmp_path):
    from cram_keras.experiments import rnn_spn

    out = tmp_path / "run"
    config = rnn_spn.smoke_config(dtype_policy="mixed_bfloat16", epochs=1)
    metrics = rnn_spn.train_and_evaluate(config, str(out), smoke=True, verbose=0)
    assert np.isfinite(metrics["test_loss"])
    assert keras.config.dtype_policy().name == "float32"  # restored
    stored = json.loads((out / "config.json").read_text())
    assert stored["dtype_policy"] == "mixed_bfloat16"
    # model.keras holds float32 weights; loaded under the run's policy it
    # computes in bfloat16 as in training (its sub-layers take the policy
    # in force when they are built).
    from cram_keras.training.precision import dtype_policy_scope

    with dtype_policy_scope(config):
        model = keras.models.load_model(out / "model.keras")
    kernels = [w for w in model.weights if "kernel" in w.path]
    assert kernels and all(w.dtype == "float32" for w in kernels)
    logits = model(np.zeros((2, 100, 100, 1), "float32"))
    assert keras.backend.standardize_dtype(logits.dtype) == "bfloat16"
