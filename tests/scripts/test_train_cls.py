"""train_cls.py end to end: the smoke run writes every artifact for the oracle
(under --strategy mirrored on a CPU split into two logical devices, recording
the two replicas) and the learned-saliency clue, the export serves the same probabilities in a
fresh process, `--clue none` feeds zeros and adds no clue loss, an
interrupted run resumes (without training the saliency network again), the
`--tune` search writes its table and best configuration, and bad flags and
missing data fail clearly (exit 2, no traceback)."""

import csv
import importlib.util
import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
from PIL import Image
from testing import (
    SPLIT_CPU_AND_RUN,
    assert_clear_serving_errors,
    run_script_in_process,
    serve_in_fresh_process,
)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ENV = dict(os.environ, KERAS_BACKEND="tensorflow", TF_CPP_MIN_LOG_LEVEL="2")
SCRIPT = os.path.join(ROOT, "train_cls.py")


def script_main():
    spec = importlib.util.spec_from_file_location("train_cls_script", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


def data_flags(fake_mnist_dir, tmp_path):
    return ["--data-dir", str(fake_mnist_dir), "--cache-dir", str(tmp_path / "cache")]


def assert_run_artifacts(out, epochs):
    for name in (
        "config.json",
        "log.csv",
        "metrics.json",
        "glimpses.png",
        "glimpses.gif",
        "model.keras",
        "checkpoints/epoch-0001.json",
    ):
        assert (out / name).exists(), name
    assert any((out / "tensorboard").rglob("events.out.tfevents*"))
    with open(out / "log.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in rows] == list(range(epochs))
    metrics = json.loads((out / "metrics.json").read_text())
    for key in ("test_error", "valid_error", "best_epoch", "wall_seconds"):
        assert key in metrics
    assert 0.0 <= metrics["test_error"] <= 1.0
    assert len(metrics["valid_error_per_epoch"]) == epochs
    # The best validation epoch is the one evaluated.
    assert metrics["valid_error"] == pytest.approx(
        min(metrics["valid_error_per_epoch"]), abs=1e-6
    )
    with Image.open(out / "glimpses.png") as png:
        assert png.format == "PNG"
    with Image.open(out / "glimpses.gif") as gif:
        assert gif.format == "GIF" and gif.n_frames == metrics["num_glimpses"]
    return metrics


@pytest.mark.slow
def test_smoke_oracle_writes_every_artifact_and_exports(fake_mnist_dir, tmp_path):
    out = tmp_path / "run"
    args = ["--smoke", "--clue", "oracle", "--export", "--strategy", "mirrored",
            "--output-dir", str(out), *data_flags(fake_mnist_dir, tmp_path)]  # fmt: skip
    proc = subprocess.run(
        [sys.executable, "-c", SPLIT_CPU_AND_RUN, SCRIPT, *args],
        capture_output=True,
        text=True,
        env=ENV,
        cwd=ROOT,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    metrics = assert_run_artifacts(out, epochs=2)
    assert metrics["distribution"] == {
        "strategy": "mirrored",
        "replicas": 2,
        "workers": 1,
    }
    assert metrics["epochs"] == 2
    assert metrics["clue"] == "oracle" and metrics["beta"] == 0.1
    assert 0.0 <= metrics["glimpse_in_digit_box"] <= 1.0
    assert json.loads((out / "config.json").read_text())["clue"] == "oracle"
    assert (out / "saved_model" / "saved_model.pb").exists()

    # The SavedModel, reloaded with plain TensorFlow in a fresh process, gives
    # the Keras model's probabilities for (image, clue).
    rng = np.random.default_rng(0)
    x = rng.random((3, 60, 60, 1)).astype("float32")
    c = (rng.random((3, 60, 60, 1)) > 0.7).astype("float32")
    served, report = serve_in_fresh_process(
        out / "saved_model",
        {"images": x, "clue": c},
        tmp_path,
        binary=("clue",),
        env=ENV,
    )
    assert_clear_serving_errors(report, {"images": (60, 60, 1), "clue": (60, 60, 1)})
    import cram_keras.experiments.cram_cls  # noqa: F401  (registers CRAM)

    model = keras.models.load_model(out / "model.keras")
    expected = keras.ops.convert_to_numpy(keras.ops.softmax(model([x, c]), axis=-1))
    assert served.shape == (3, 10)
    np.testing.assert_allclose(served, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(served.sum(-1), 1.0, rtol=1e-5)


@pytest.mark.slow
def test_smoke_saliency_writes_every_artifact(fake_mnist_dir, tmp_path):
    out = tmp_path / "run"
    code = script_main()(
        ["--smoke", "--clue", "saliency", "--output-dir", str(out)]
        + data_flags(fake_mnist_dir, tmp_path)
    )
    assert code == 0
    metrics = assert_run_artifacts(out, epochs=2)
    for name in ("clues.npz", "metrics.json", "network/model.keras", "network/log.csv"):
        assert (out / "saliency" / name).exists(), name
    assert (
        metrics["clue"] == "saliency" and metrics["saliency_targets"] == "ground_truth"
    )
    for split in ("train", "valid", "test"):
        assert 0.0 <= metrics[f"saliency_{split}_iou"] <= 1.0

    # The clues are the thresholded output of the saved saliency network.
    from cram_keras.experiments import cram_cls
    from cram_keras.experiments.run_dir import load_config
    from cram_keras.training.saliency import load_clues, saliency_clues

    config = load_config(cram_cls.Config, out)
    splits, _ = cram_cls.load_splits(config)
    clues = load_clues(str(out / "saliency" / "clues.npz"), splits)
    net = keras.models.load_model(out / "saliency" / "network" / "model.keras")
    for split in ("train", "test"):
        expected = saliency_clues(net, splits[split]["images"], 0.5)
        np.testing.assert_array_equal(clues[split], expected)
        assert set(np.unique(clues[split])) <= {0, 1}


@pytest.mark.slow
def test_clue_none_feeds_zeros_and_adds_no_clue_loss(
    fake_mnist_dir, tmp_path, monkeypatch
):
    from cram_keras.data.pipelines import clue_dataset
    from cram_keras.experiments import cram_cls
    from cram_keras.models.cram import CRAMClassifier

    seen = {"calls": 0, "clue_max": 0.0, "add_loss": 0}
    call, add_loss = CRAMClassifier.call, CRAMClassifier.add_loss

    def spy_call(self, inputs, *args, **kwargs):
        seen["calls"] += 1
        seen["clue_max"] = max(seen["clue_max"], float(np.max(np.asarray(inputs[1]))))
        return call(self, inputs, *args, **kwargs)

    def spy_add_loss(self, loss):
        seen["add_loss"] += 1
        return add_loss(self, loss)

    monkeypatch.setattr(CRAMClassifier, "call", spy_call)
    monkeypatch.setattr(CRAMClassifier, "add_loss", spy_add_loss)
    config = cram_cls.smoke_config(
        clue="none",
        epochs=1,
        data_dir=str(fake_mnist_dir),
        cache_dir=str(tmp_path / "c"),
    )
    assert config.beta == 0.0
    metrics = cram_cls.train_and_evaluate(config, str(tmp_path / "run"))
    assert seen["calls"] > 0  # eager smoke run: every batch goes through the spy
    assert seen["clue_max"] == 0.0 and seen["add_loss"] == 0
    assert metrics["clue"] == "none" and metrics["beta"] == 0.0

    # Without the clue term the training loss is the cross-entropy alone.
    model = cram_cls.build_model(config)
    (x, c), y = next(
        iter(clue_dataset(np.zeros((4, 60, 60, 1), np.uint8), None, np.arange(4), 4))
    )
    assert float(np.max(c)) == 0.0
    model([x, c])
    assert model.losses == []

    with pytest.raises(ValueError, match="Received: beta=0.5"):
        cram_cls.smoke_config(clue="none", beta=0.5)


@pytest.mark.slow
def test_tune_writes_trials_table_and_best_config(fake_mnist_dir, tmp_path):
    # The search's resumption is tested in tests/training/test_tuner.py.
    out = tmp_path / "run"
    args = ["--smoke", "--tune", "--epochs", "1", "--output-dir", str(out)]
    args += data_flags(fake_mnist_dir, tmp_path)
    main = script_main()
    assert main(args) == 0
    with open(out / "trials.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 and {r["status"] for r in rows} == {"COMPLETED"}
    assert all(1 <= int(r["num_glimpses"]) <= 8 for r in rows)
    trials = json.loads((out / "trials.json").read_text())["trials"]
    best = json.loads((out / "best_config.json").read_text())
    assert best["best_val_error"] == min(t["best_val_error"] for t in trials)
    assert best["config"]["glimpses"] == best["num_glimpses"]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["num_glimpses"] == best["num_glimpses"]
    assert metrics["valid_error"] == pytest.approx(best["best_val_error"], abs=1e-6)
    assert (out / "tuner").is_dir() and (out / "glimpses.gif").exists()


def test_contrast_pseudo_masks_mark_the_digit_on_either_background():
    from cram_keras.data.saliency_masks import contrast_pseudo_masks

    images = np.full((2, 12, 12, 3), 40, np.uint8)
    images[1] = 220  # light background, dark digit
    images[0, 3:9, 5:7] = 230
    images[1, 3:9, 5:7] = 20
    expected = np.zeros((12, 12), np.uint8)
    expected[3:9, 5:7] = 1
    masks = contrast_pseudo_masks(images)
    assert masks.shape == (2, 12, 12, 1)
    np.testing.assert_array_equal(masks[..., 0], [expected, expected])
    # A flat image has no salient pixel.
    assert contrast_pseudo_masks(np.full((1, 8, 8, 3), 90, np.uint8)).sum() == 0


@pytest.mark.slow
def test_svhn_path_uses_the_learned_saliency(tmp_path, monkeypatch):
    from cram_keras.data import svhn
    from cram_keras.experiments import cram_cls

    def fake_svhn(data_dir=None, splits=("train", "test")):
        # The real files are 182 MB; the loader itself is tested in tests/data.
        assert data_dir == "SVHN_DIR"
        rng = np.random.default_rng(0)
        out = {}
        for split, n in (("train", 48), ("test", 16)):
            images = rng.integers(0, 60, (n, 32, 32, 3), dtype=np.uint8)
            images[:, 8:24, 12:20] = 200
            out[split] = (images, rng.integers(0, 10, n))
        return out

    monkeypatch.setattr(svhn, "load_svhn", fake_svhn)
    assert cram_cls.Config(dataset="svhn").clue == "saliency"
    config = cram_cls.smoke_config(
        dataset="svhn",
        data_dir="SVHN_DIR",
        epochs=1,
        saliency_epochs=1,
        figure_examples=1,
    )
    assert config.clue == "saliency"
    metrics = cram_cls.train_and_evaluate(config, str(tmp_path / "run"))
    assert (
        metrics["dataset"] == "svhn" and metrics["saliency_targets"] == "pseudo_masks"
    )
    assert "glimpse_in_digit_box" not in metrics  # no ground truth for SVHN
    assert (tmp_path / "run" / "glimpses.gif").exists()


def test_bad_values_fail_clearly(tmp_path, capsys):
    main = script_main()
    cases = [
        (["--glimpses", "0"], "Received: glimpses=0"),
        (["--smoke", "--batch-size", "0"], "Received: batch_size=0"),
        (["--beta", "-1"], "Received: beta=-1.0"),
        (["--learning-rate", "0"], "Received: learning_rate=0.0"),
        (["--dataset", "svhn", "--clue", "oracle"], "no ground-truth saliency"),
        (["--clue", "none", "--beta", "0.5"], "Received: beta=0.5"),
        (["--dataset", "svhn", "--n-train", "80000"], "n_train=80000"),
    ]
    for args, message in cases:
        assert main([*args, "--output-dir", str(tmp_path / "r")]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and message in err and "Traceback" not in err


def test_bad_flags_exit_2_without_traceback():
    proc = run_script_in_process(SCRIPT, "--clue", "sometimes")
    assert proc.returncode == 2 and "must be one of" in proc.stderr
    proc = run_script_in_process(SCRIPT, "--glimpses", "two")
    assert proc.returncode == 2 and "must be an integer" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_missing_data_fails_clearly(tmp_path, capsys):
    code = script_main()(
        [
            "--smoke",
            "--data-dir",
            str(tmp_path / "nowhere"),
            "--output-dir",
            str(tmp_path / "r"),
        ]
    )
    assert code == 1  # a data error
    assert "nowhere" in capsys.readouterr().err


def test_help_documents_every_flag():
    proc = run_script_in_process(SCRIPT, "--help")
    assert proc.returncode == 0
    for flag in (
        "--dataset",
        "--clue",
        "--glimpses",
        "--glimpse-size",
        "--epochs",
        "--batch-size",
        "--beta",
        "--learning-rate",
        "--data-dir",
        "--cache-dir",
        "--output-dir",
        "--seed",
        "--smoke",
        "--export",
        "--tune",
        "--max-trials",
        "--n-train",
    ):
        assert flag in proc.stdout, flag


def test_the_clue_flag_tells_the_ablation_from_unset():
    """`--clue none` is the ablation without a clue; unset (or `null`) is the
    dataset's own clue. The help says which, without a `None` choice."""
    from cram_keras.experiments import cli, cram_cls
    from cram_keras.experiments.cram_cls_config import Config

    parser = cli.build_parser(cram_cls.EXPERIMENT)
    (action,) = [a for a in parser._actions if "--clue" in a.option_strings]
    assert action.metavar == "{oracle,saliency,none}"
    assert action.help.endswith("(default: unset)")
    assert parser.parse_args(["--clue", "none"]).clue == "none"
    assert parser.parse_args(["--clue", "null"]).clue is None
    assert Config(clue=None).clue == "oracle"
    assert Config(clue=None, dataset="svhn").clue == "saliency"
    # Elsewhere None keeps reading "none" ("--set KEY=none").
    (data_dir,) = [a for a in parser._actions if "--data-dir" in a.option_strings]
    assert data_dir.help.endswith("(default: none)")


def test_mixed_bfloat16_classifier_trains_with_the_clue_loss(tmp_path):
    from cram_keras.experiments import cram_cls

    out = tmp_path / "run"
    config = cram_cls.smoke_config(
        clue="oracle", dtype_policy="mixed_bfloat16", epochs=1
    )
    metrics = cram_cls.train_and_evaluate(config, str(out), smoke=True, verbose=0)
    assert np.isfinite(metrics["test_loss"]) and np.isfinite(metrics["test_clue_loss"])
    assert keras.config.dtype_policy().name == "float32"  # restored
    stored = json.loads((out / "config.json").read_text())
    assert stored["dtype_policy"] == "mixed_bfloat16"
