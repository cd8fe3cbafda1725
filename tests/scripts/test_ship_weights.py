"""tools/ship_weights.py on a finished two-epoch RNN-SPN smoke run: the
shipped weights, loaded and evaluated by `cram_keras.pretrained` on the
regenerated test set, give the test error the runner itself wrote to
metrics.json; float16 is stored only when float32 does not fit and the
test-set check passed, and refused without it; the 20 MB budget of all
shipped files is enforced; no local folder enters the manifest; the
command line evaluates offline with a clear note and draws the figure."""

import importlib.util
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from testing import newest_best_lost

from cram_keras import pretrained
from cram_keras.experiments import rnn_spn

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MB = 1_000_000


def _load_tool():
    path = os.path.join(ROOT, "tools", "ship_weights.py")
    spec = importlib.util.spec_from_file_location("ship_weights", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


tool = _load_tool()


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, fake_mnist_dir):
    """A finished two-epoch RNN-SPN smoke run (d = 2: 10 MB of float32
    weights) on the fake MNIST files."""
    root = tmp_path_factory.mktemp("ship")
    config = rnn_spn.smoke_config(
        data_dir=str(fake_mnist_dir), cache_dir=str(root / "cache")
    )
    run_dir = root / "runs" / "rnn_spn"
    metrics = rnn_spn.train_and_evaluate(config, str(run_dir), verbose=0)
    return run_dir, metrics


@pytest.fixture(scope="module")
def shipped_float16(finished_run, fake_mnist_dir, tmp_path_factory):
    run_dir, _ = finished_run
    out = tmp_path_factory.mktemp("weights16")
    code = tool.main(
        [str(run_dir), "smoke", "--data-dir", str(fake_mnist_dir)]
        + ["--output-dir", str(out), "--commit", "a" * 40]
    )
    assert code == 0
    return out


def _manifest(folder, name="smoke"):
    return json.loads((folder / f"{name}.json").read_text())


def test_float16_ship_evaluates_to_the_runners_test_error(
    finished_run, shipped_float16, fake_mnist_dir
):
    run_dir, metrics = finished_run
    manifest = _manifest(shipped_float16)
    check = manifest["storage_check"]
    # 2.5 M parameters: 10 MB as float32, over the 6 MB limit.
    assert check["float32_bytes"] > 6 * MB >= manifest["files"]["weights"]["bytes"]
    assert manifest["storage_dtype"] == "float16"
    # The tool's float32 measurement is the runner's own test error.
    assert check["float32_test_per_digit_error"] == pytest.approx(
        metrics["test_per_digit_error"], abs=1e-6
    )
    assert check["float32_test_sequence_error"] == pytest.approx(
        metrics["test_sequence_error"], abs=1e-6
    )
    result = pretrained.evaluate(
        "smoke", data_dir=str(fake_mnist_dir), directory=shipped_float16
    )
    assert result["same_test_set"] and result["comparable"]
    assert result["sequences"] == 32
    assert result["per_digit_error"] == manifest["test_per_digit_error"]
    assert result["sequence_error"] == manifest["test_sequence_error"]
    assert abs(result["per_digit_error"] - metrics["test_per_digit_error"]) <= 0.0002

    assert manifest["status"] == "finished" and manifest["epochs_trained"] == 2
    record = json.loads((run_dir / "checkpoints" / "epoch-0001.json").read_text())
    assert manifest["best_epoch"] == record["early_stopping"]["best_epoch"] + 1
    assert (
        manifest["runner_metrics"]["test_per_digit_error"]
        == (metrics["test_per_digit_error"])
    )
    assert manifest["commit"] == "a" * 40
    assert (manifest["data_seed"], manifest["n_train"], manifest["n_test"]) == (
        1234,
        64,
        32,
    )


def test_the_manifest_holds_no_local_folder(shipped_float16, fake_mnist_dir):
    text = (shipped_float16 / "smoke.json").read_text()
    assert str(fake_mnist_dir) not in text
    manifest = json.loads(text)
    assert "--data-dir MNIST_DIR" in manifest["training_command"]
    assert manifest["training_config"]["data_dir"] == "MNIST_DIR"
    assert "cache_dir" not in manifest["training_config"]
    assert manifest["evaluate_command"] == (
        "python -m cram_keras.pretrained evaluate smoke --data-dir MNIST_DIR"
    )


def test_float32_ship_reproduces_the_runners_errors_exactly(
    finished_run, fake_mnist_dir, tmp_path, monkeypatch
):
    run_dir, metrics = finished_run
    monkeypatch.setattr(pretrained, "MAX_WEIGHTS_BYTES", 20 * MB)
    assert tool.main(
        [str(run_dir), "smoke32", "--data-dir", str(fake_mnist_dir)]
        + ["--output-dir", str(tmp_path)]
    ) == 0  # fmt: skip
    manifest = _manifest(tmp_path, "smoke32")
    assert manifest["storage_dtype"] == "float32"
    assert manifest["storage_check"]["float16_bytes"] is None
    result = pretrained.evaluate("smoke32", str(fake_mnist_dir), tmp_path)
    assert result["per_digit_error"] == pytest.approx(
        metrics["test_per_digit_error"], abs=1e-6
    )
    assert result["sequence_error"] == pytest.approx(
        metrics["test_sequence_error"], abs=1e-6
    )
    with np.load(tmp_path / "smoke32.batch.npz") as batch:
        np.testing.assert_array_equal(batch["logits"], batch["logits_float32"])


def test_float16_is_refused_without_the_test_set_check(finished_run, tmp_path, capsys):
    run_dir, _ = finished_run
    assert tool.main([str(run_dir), "smoke", "--output-dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "Float16 storage" in err and "--data-dir" in err
    assert not list(tmp_path.iterdir())


def test_a_missing_or_damaged_best_file_of_the_newest_record_is_refused(
    finished_run, tmp_path, capsys
):
    # The older record's best weights are intact, but they are an older
    # model than the run's best: nothing is shipped, and the error says why.
    run_dir, _ = finished_run
    out = tmp_path / "out"
    for copy, _, name in newest_best_lost(run_dir, tmp_path / "run"):
        argv = [str(copy), "smoke", "--output-dir", str(out)]
        assert tool.main(argv) == 1
        err = capsys.readouterr().err
        assert "cannot be shipped" in err and name in err and "after epoch 2" in err
        assert not out.exists() or not list(out.iterdir())


def test_the_20_mb_budget_of_all_shipped_files_is_enforced(
    finished_run, fake_mnist_dir, tmp_path, capsys
):
    run_dir, _ = finished_run
    (tmp_path / "other.weights.h5").write_bytes(b"\0" * (16 * MB))
    code = tool.main(
        [str(run_dir), "smoke", "--data-dir", str(fake_mnist_dir)]
        + ["--output-dir", str(tmp_path)]
    )
    assert code == 1
    assert "20 MB all shipped files" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other.weights.h5"]


@pytest.mark.parametrize(
    "sizes, errors, expected",
    [
        ((5 * MB, None), (None, None), "float32"),
        ((10 * MB, 5 * MB), (0.0200, 0.0202), "float16"),
        ((10 * MB, 5 * MB), (0.0200, 0.0198), "float16"),
        ((10 * MB, 5 * MB), (0.0200, 0.0203), "moves the per-digit test error"),
        ((10 * MB, 5 * MB), (None, None), "pass --data-dir"),
        ((14 * MB, 7 * MB), (0.02, 0.02), "too large to ship"),
    ],
)
def test_storage_choice(sizes, errors, expected):
    if expected in ("float32", "float16"):
        assert tool.choose_storage(*sizes, *errors) == expected
    else:
        with pytest.raises(tool.ShipError, match=expected):
            tool.choose_storage(*sizes, *errors)


def test_the_command_line_evaluates_offline_with_a_note_and_draws(
    shipped_float16, tmp_path
):
    figure = tmp_path / "attention.png"
    code = (
        "import sys\n"
        "from cram_keras.pretrained import main\n"
        "weights = ['--weights-dir', sys.argv[1]]\n"
        "assert main(weights + ['evaluate', 'smoke']) == 0\n"
        "assert main(weights + ['figure', 'smoke', '--output', sys.argv[2],\n"
        "                       '--examples', '2']) == 0\n"
        "assert main(weights + ['evaluate', 'missing']) == 2\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, str(shipped_float16), str(figure)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert "bundled MNIST sample" in out
    assert "NOT the paper's test set" in out and "NOT comparable" in out
    assert "per-digit test error:" in out
    assert "No shipped model named 'missing'" in proc.stderr
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
