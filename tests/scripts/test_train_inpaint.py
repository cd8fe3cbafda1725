"""train_inpaint.py end to end: the smoke run (under --strategy mirrored on
a CPU split into two logical devices, each step of the two replicas counted
once) writes every artifact, the export completes images as the Keras model
does in a fresh process, --eval-only rescores a checkpoint, an interrupted
run resumes with all three optimizers' state, the default TFDS source works
offline under mock_data, and bad data or flags fail with a clear message."""

import csv
import importlib.util
import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import scipy.io
from testing import (
    SPLIT_CPU_AND_RUN,
    assert_clear_serving_errors,
    run_script_in_process,
    serve_in_fresh_process,
)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPT = os.path.join(ROOT, "train_inpaint.py")
ENV = dict(os.environ, KERAS_BACKEND="tensorflow", TF_CPP_MIN_LOG_LEVEL="2")


def load_script():
    """train_inpaint.py as a module, to call main() in this process (no new
    TensorFlow start-up) where a subprocess is not what is being tested."""
    spec = importlib.util.spec_from_file_location(
        "train_inpaint", os.path.join(ROOT, "train_inpaint.py")
    )
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    return script


@pytest.fixture
def tiny_npz(tmp_path):
    """100 smooth random 32x32 RGB images: 80 train, 20 test (the npz split)."""
    rng = np.random.default_rng(0)
    coarse = rng.integers(0, 256, size=(100, 4, 4, 3)).astype(np.float32)
    images = np.repeat(np.repeat(coarse, 8, axis=1), 8, axis=2).astype(np.uint8)
    path = tmp_path / "tiny.npz"
    np.savez(path, X=images)
    return path


@pytest.mark.slow
def test_smoke_run_writes_every_artifact_exports_and_rescores(tiny_npz, tmp_path):
    out = tmp_path / "run"
    dataset = f"npz:{tiny_npz}"
    proc = subprocess.run(
        [sys.executable, "-c", SPLIT_CPU_AND_RUN, SCRIPT, "--smoke", "--export",
         "--strategy", "mirrored", "--dataset", dataset, "--output-dir", str(out)],
        capture_output=True,
        text=True,
        env=ENV,
        cwd=ROOT,
        timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    for name in (
        "config.json",
        "log.csv",
        "metrics.json",
        "inpaint.png",
        "figures/epoch_001.png",
        "figures/epoch_002.png",
        "model.keras",
        "saved_model/saved_model.pb",
    ):
        assert (out / name).exists(), name
    if importlib.util.find_spec("tensorboard") is not None:
        assert any((out / "tensorboard").rglob("events.out.tfevents*"))
    with open(out / "log.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in rows] == [0, 1]
    assert {"g_loss", "local_d_loss", "global_d_loss", "val_hole_psnr"} <= set(rows[0])
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["methods"]) == {"cram", "telea", "navier_stokes", "mean_fill"}
    for scores in metrics["methods"].values():
        assert set(scores) == {"hole_psnr", "hole_l1", "ssim"}
        assert all(np.isfinite(v) for v in scores.values())
    assert metrics["distribution"] == {
        "strategy": "mirrored",
        "replicas": 2,
        "workers": 1,
    }
    assert metrics["epochs"] == 2
    assert metrics["n_train"] == 64 and metrics["n_test"] == 20
    # 64 training images in global batches of 16, two epochs: each step of
    # the two replicas counts once.
    assert metrics["steps"] == {
        "generator": 8,
        "local_discriminator": 8,
        "global_discriminator": 8,
    }
    assert json.loads((out / "config.json").read_text())["encoder"] == "cram"

    # The SavedModel, reloaded with plain TensorFlow in a fresh process,
    # completes images as the Keras model does.
    rng = np.random.default_rng(1)
    x = rng.random((3, 32, 32, 3)).astype("float32")
    m = np.zeros((3, 32, 32, 1), "float32")
    m[0, 12:20, 12:20] = m[1, 3:9, 20:30] = m[2, 0:16, 0:5] = 1.0
    served, report = serve_in_fresh_process(
        out / "saved_model",
        {"image": x, "mask": m},
        tmp_path,
        binary=("mask",),
        env=ENV,
    )
    # Bad inputs are refused with one short line each.
    assert_clear_serving_errors(report, {"image": (32, 32, 3), "mask": (32, 32, 1)})
    from cram_keras.training.checkpoint import load_inpainter

    model = load_inpainter(str(out / "model.keras"))
    expected = keras.ops.convert_to_numpy(model([x, m], training=False))
    assert served.shape == (3, 32, 32, 3)
    np.testing.assert_allclose(served, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(
        served[m.repeat(3, -1) < 0.5], x[m.repeat(3, -1) < 0.5]
    )

    # --eval-only rescores the checkpoint on the same test images and masks.
    code = load_script().main(
        ["--smoke", "--dataset", dataset, "--eval-only", str(out / "model.keras"),
         "--output-dir", str(tmp_path / "eval")]
    )  # fmt: skip
    assert code == 0
    rescored = json.loads((tmp_path / "eval" / "eval_metrics.json").read_text())
    # What it wrote, and no lock left: it held the folder while writing.
    assert sorted(os.listdir(tmp_path / "eval")) == [
        "eval_inpaint.png",
        "eval_metrics.json",
    ]
    for method, scores in metrics["methods"].items():
        for name, value in scores.items():
            np.testing.assert_allclose(
                rescored["methods"][method][name], value, rtol=1e-5
            )


@pytest.mark.slow
def test_default_svhn_source_is_tfds_and_runs_offline_under_mock_data(tmp_path):
    tfds = pytest.importorskip("tensorflow_datasets")
    from cram_keras.experiments import inpaint

    config = inpaint.smoke_config(encoder="cnn", epochs=1)
    assert config.dataset == "svhn" and config.data_dir is None  # the default
    with tfds.testing.mock_data(num_examples=72):  # No network.
        metrics = inpaint.train_and_evaluate(config, str(tmp_path / "run"))
    assert metrics["n_train"] == 64 and metrics["n_test"] == 32
    assert set(metrics["methods"]) == {
        "cnn_encoder",
        "telea",
        "navier_stokes",
        "mean_fill",
    }


def test_truncated_svhn_file_fails_with_a_clear_message(tmp_path):
    # A real .mat file in the official layout, cut short like an interrupted
    # download and given the official name.
    images = np.random.default_rng(0).integers(0, 256, (32, 32, 3, 64), dtype=np.uint8)
    scipy.io.savemat(
        tmp_path / "full.mat", {"X": images, "y": np.ones((64, 1), np.uint8)}
    )
    data = (tmp_path / "full.mat").read_bytes()
    (tmp_path / "train_32x32.mat").write_bytes(data[: len(data) // 3])
    proc = run_script_in_process(SCRIPT, "--dataset", "svhn", "--data-dir",
                                 str(tmp_path), "--smoke",
                                 "--output-dir", str(tmp_path / "run"))  # fmt: skip
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    # TensorFlow's own log lines may precede it; the error is one clear line.
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, proc.stderr[-3000:]
    assert "truncated" in errors[0] and "re-download" in errors[0]
    assert "train_32x32.mat" in errors[0]


def test_bad_flags_fail_clearly(tmp_path, capsys):
    proc = run_script_in_process(SCRIPT, "--encoder", "rnn")
    assert proc.returncode == 2 and "must be one of" in proc.stderr
    script = load_script()
    out = str(tmp_path / "run")
    assert script.main(["--dataset", "cifar10", "--smoke", "--output-dir", out]) == 2
    assert "error: `dataset` must be" in capsys.readouterr().err
    assert script.main(["--batch-size", "0", "--smoke", "--output-dir", out]) == 2
    assert "batch_size=0" in capsys.readouterr().err
    missing = str(tmp_path / "none.keras")
    assert (
        script.main(["--smoke", "--dataset", "npz:x.npz", "--eval-only", missing]) == 2
    )
    assert "no inpainting checkpoint" in capsys.readouterr().err


def test_every_flag_is_documented_in_help(capsys):
    from cram_keras.experiments import cli, inpaint

    parser = cli.build_parser(inpaint.EXPERIMENT)
    actions = [a for a in parser._actions if a.dest != "help"]
    flags = {s for a in actions for s in a.option_strings}
    required = {
        "--epochs", "--dataset", "--data-dir", "--batch-size", "--glimpses", "--alpha",
        "--beta", "--encoder", "--mask", "--output-dir", "--seed", "--smoke",
        "--export", "--eval-only",
    }  # fmt: skip
    assert required <= flags
    with pytest.raises(SystemExit):
        parser.parse_args(["--help"])
    text = capsys.readouterr().out
    for action in actions:
        assert action.help and len(action.help) > 8, action.option_strings
        assert action.option_strings[0] in text
    # Unset flags stay None, so the config's defaults (the paper's) apply.
    args = parser.parse_args([])
    assert args.epochs is None and args.encoder is None and not args.smoke


def test_mixed_bfloat16_run_stops_resumes_and_scores_in_float32(tmp_path):
    """`--dtype-policy mixed_bfloat16`: a run stopped after its first epoch
    resumes from the checkpoint (float32 weights and optimizer state), is
    scored on float32 completed images, and its model.keras computes in
    bfloat16 again when loaded (under any global policy)."""
    from cram_keras.experiments import inpaint

    out = tmp_path / "run"
    config = inpaint.smoke_config(
        dtype_policy="mixed_bfloat16", epochs=2, n_train=32, n_test=16
    )
    kwargs = dict(smoke=True, verbose=0, log=lambda message: None)
    assert (
        inpaint.train_and_evaluate(config, str(out), stop_after_epochs=1, **kwargs)
        is None
    )
    assert keras.config.dtype_policy().name == "float32"  # restored
    metrics = inpaint.train_and_evaluate(config, str(out), **kwargs)
    assert metrics["epochs"] == 2
    assert metrics["steps"]["generator"] == 2 * 32 // config.batch_size
    assert np.isfinite(metrics["methods"]["cram"]["hole_psnr"])
    stored = json.loads((out / "config.json").read_text())
    assert stored["dtype_policy"] == "mixed_bfloat16"
    with open(out / "log.csv", newline="") as f:
        assert [row["epoch"] for row in csv.DictReader(f)] == ["0", "1"]
    model = keras.models.load_model(out / "model.keras")
    assert {w.dtype for w in model.weights} == {"float32"}
    images = np.zeros((2, 32, 32, 3), "float32")
    masks = np.ones((2, 32, 32, 1), "float32")
    z = model.encoder([images, masks])
    assert keras.backend.standardize_dtype(z.dtype) == "bfloat16"
    completed = model([images, masks])
    assert keras.backend.standardize_dtype(completed.dtype) == "float32"
