"""The experiments on JAX: the README's
`KERAS_BACKEND=jax python train_rnn_spn.py --smoke` and
`KERAS_BACKEND=jax python train_cls.py --smoke` write every artifact that
has no TensorFlow-only part; a run directory moves between the backends (an
inpainting run ends on JAX with every artifact);
--export and the mirrored strategy refuse JAX in one line, and the inpainter
refuses torch in one line; a last batch that JAX's data parallelism cannot
shard is refused before the run."""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ENV = dict(os.environ, KERAS_BACKEND="jax", TF_CPP_MIN_LOG_LEVEL="2")


def run(script, *args):
    return subprocess.run(
        [sys.executable, os.path.join(ROOT, script), *args],
        capture_output=True,
        text=True,
        env=ENV,
        cwd=ROOT,
        timeout=900,
    )


@pytest.mark.slow
@pytest.mark.parametrize(
    "script, figure",
    [("train_rnn_spn.py", "attention.png"), ("train_cls.py", "glimpses.png")],
)
def test_smoke_trains_on_jax(script, figure, tmp_path):
    out = tmp_path / "run"
    proc = run(script, "--smoke", "--output-dir", str(out))
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    for name in ("config.json", "log.csv", "metrics.json", "model.keras", figure):
        assert (out / name).exists(), name
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["backend"] == "jax" and metrics["epochs"] == 2
    # Without a GPU the run says once that TensorFlow is faster on a CPU.
    said = proc.stdout + proc.stderr
    assert said.count("note: JAX without a GPU") == ("no GPU" in metrics["hardware"])
    # The step is compiled with jax.jit (an eager JAX step compiles each op).
    config = json.loads((out / "config.json").read_text())
    assert not config.get("run_eagerly", False)


@pytest.mark.parametrize(
    "args, message",
    [
        (("train_rnn_spn.py", "--smoke", "--export"), "--export writes a TensorFlow"),
        (
            ("train_cls.py", "--smoke", "--strategy", "mirrored"),
            "needs KERAS_BACKEND=tensorflow",
        ),
    ],
)
def test_what_jax_cannot_do_is_refused_in_one_line(args, message, tmp_path):
    proc = run(*args, "--output-dir", str(tmp_path / "run"))
    assert proc.returncode == 2, proc.stderr[-2000:]
    error_lines = [
        line for line in proc.stderr.splitlines() if line.startswith("error:")
    ]
    assert len(error_lines) == 1 and message in error_lines[0]
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "run").exists()


def test_a_last_batch_the_devices_cannot_share_is_refused(tmp_path):
    """On two JAX devices (the CPU split in two) the smoke data with 65
    training sequences ends with a batch of 1, which the data parallelism
    cannot shard: refused before anything is written."""
    env = dict(ENV, JAX_PLATFORMS="cpu")
    env["XLA_FLAGS"] = (
        env.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=2"
    ).strip()
    out = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, os.path.join(ROOT, "train_rnn_spn.py"), "--smoke",
         "--set", "n_train=65", "--output-dir", str(out)],
        capture_output=True, text=True, env=env, cwd=ROOT, timeout=900,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "strategy: jax_data_parallel (2 replicas)" in proc.stdout + proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith(
        "error: JAX's data parallelism shards every batch over 2 devices, but "
        "the 65 training sequences in batches of 16 end with a batch of 1"
    )
    assert not out.exists()


@pytest.mark.slow
def test_a_run_started_on_jax_finishes_on_tensorflow(tmp_path):
    """A run directory is portable across backends: the first epoch on JAX,
    the rest on TensorFlow from JAX's checkpoint (as the Table 1 GPU run
    finished on a CPU machine)."""
    import csv

    out = tmp_path / "run"
    first = run(
        "train_rnn_spn.py", "--smoke", "--stop-after-epochs", "1",
        "--output-dir", str(out),
    )  # fmt: skip
    assert first.returncode == 0, first.stdout[-2000:] + first.stderr[-3000:]
    with open(out / "log.csv") as f:
        jax_rows = list(csv.DictReader(f))
    assert len(jax_rows) == 1 and not (out / "metrics.json").exists()

    second = subprocess.run(
        [sys.executable, os.path.join(ROOT, "train_rnn_spn.py"), "--smoke",
         "--output-dir", str(out)],
        capture_output=True, text=True, cwd=ROOT, timeout=900,
        env=dict(ENV, KERAS_BACKEND="tensorflow"),
    )  # fmt: skip
    assert second.returncode == 0, second.stdout[-2000:] + second.stderr[-3000:]
    assert "resuming" in second.stdout + second.stderr
    assert "after epoch 1 of 2" in second.stdout + second.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["backend"] == "tensorflow" and metrics["epochs"] == 2
    with open(out / "log.csv") as f:
        rows = list(csv.DictReader(f))
    # The JAX epoch is kept as it was, and one more epoch was trained.
    assert len(rows) == 2 and rows[0] == jax_rows[0]
    assert rows[1]["epoch"] != rows[0]["epoch"]


@pytest.mark.slow
def test_an_inpainting_run_started_on_tensorflow_finishes_on_jax(tmp_path):
    """The first epoch on TensorFlow, the second on JAX from TensorFlow's
    checkpoint: the weights and the three optimizers' state carry over (their
    step counters go on from 4 to 8; fresh optimizers would end at 4), and
    the JAX process writes every artifact of the run's end. (The inpainter
    built and trained on JAX from the start: the kill test on JAX and the
    two-step comparison with TensorFlow in tests/models.)"""
    import csv

    out = tmp_path / "run"
    first = subprocess.run(
        [sys.executable, os.path.join(ROOT, "train_inpaint.py"), "--smoke",
         "--stop-after-epochs", "1", "--output-dir", str(out)],
        capture_output=True, text=True, cwd=ROOT, timeout=900,
        env=dict(ENV, KERAS_BACKEND="tensorflow"),
    )  # fmt: skip
    assert first.returncode == 0, first.stdout[-2000:] + first.stderr[-3000:]
    with open(out / "log.csv") as f:
        tf_rows = list(csv.DictReader(f))
    assert len(tf_rows) == 1 and not (out / "metrics.json").exists()

    second = run("train_inpaint.py", "--smoke", "--output-dir", str(out))
    assert second.returncode == 0, second.stdout[-2000:] + second.stderr[-3000:]
    assert "after epoch 1 of 2" in second.stdout + second.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["backend"] == "jax" and metrics["epochs"] == 2
    assert set(metrics["steps"].values()) == {8}
    with open(out / "log.csv") as f:
        rows = list(csv.DictReader(f))
    # The TensorFlow epoch is kept as it was, and one more epoch was trained.
    assert len(rows) == 2 and rows[0] == tf_rows[0]
    assert rows[1]["epoch"] == "1"
    for name in ("config.json", "model.keras", "inpaint.png", "glimpse_windows.png"):
        assert (out / name).exists(), name
    scores = metrics["methods"]["cram"]
    assert 0.0 < scores["ssim"] <= 1.0 and 0.0 < scores["hole_l1"] < 1.0


def test_the_inpainter_refuses_torch_in_one_line(monkeypatch):
    """The run stops before anything is loaded or written (torch is not
    installed here, so the backend check is asked in this process)."""
    import keras

    from cram_keras.experiments.errors import UsageError
    from cram_keras.experiments.experiment import check_backend
    from cram_keras.experiments.inpaint import EXPERIMENT

    monkeypatch.setattr(keras.backend, "backend", lambda: "torch")
    with pytest.raises(UsageError) as info:
        check_backend(EXPERIMENT)
    message = str(info.value)
    assert "\n" not in message
    assert "trains on tensorflow or jax only" in message
    assert "KERAS_BACKEND='torch'" in message
