"""The inpainting progress report: curves against steps and the CRAM - CNN
gap, read from run directories written here by hand."""

import json
import os
import shutil

import pytest

from cram_keras.studies import driver, inpaint_progress

HEADER = "epoch,recon_loss,train_seconds,val_hole_l1,val_hole_psnr,val_ssim\n"


def _run(
    directory, psnrs, n_train=None, available=60000, batch=64, epochs=50, **settings
):
    os.makedirs(directory)
    config = dict(
        n_train=n_train,
        batch_size=batch,
        epochs=epochs,
        data_source=dict(n_train=available, n_test=10000),
        **settings,
    )
    with open(os.path.join(directory, "config.json"), "w") as f:
        json.dump(config, f)
    with open(os.path.join(directory, "log.csv"), "w") as f:
        f.write(HEADER)
        for epoch, psnr in enumerate(psnrs):
            f.write(f"{epoch},0.1,100.0,0.12,{psnr},0.95\n")


def test_steps_count_whole_batches_of_the_training_images(tmp_path):
    _run(tmp_path / "a", [13.0, 14.5, 15.0])
    curves = inpaint_progress.read_run(str(tmp_path / "a"))
    # 60,000 // 64 = 937 steps per epoch.
    assert curves["steps"] == [937, 1874, 2811]
    assert curves["epochs"] == [1, 2, 3]
    assert curves["val_hole_psnr"] == [13.0, 14.5, 15.0]
    assert curves["train_seconds"] == pytest.approx(300.0)
    assert curves["final"] is None
    _run(tmp_path / "b", [13.0], n_train=8000)
    assert inpaint_progress.read_run(str(tmp_path / "b"))["steps"] == [125]


def test_a_run_with_patience_trains_on_the_images_it_does_not_hold_out(tmp_path):
    # 883 images, 10 % held out: round(88.3) = 88, so 795 // 64 = 12 steps.
    _run(
        tmp_path / "p", [20.0, 21.5, 21.0, 21.5], available=883, epochs=1000,
        patience=30, valid_fraction=0.1,
    )  # fmt: skip
    curves = inpaint_progress.read_run(str(tmp_path / "p"))
    assert curves["steps"] == [12, 24, 36, 48]
    # The first of the equal best values: a tie is no improvement.
    assert curves["best_epoch"] == 2
    assert inpaint_progress._status(curves) == (
        "epoch 4 of at most 1000, best epoch 2 (stops 30 epochs after its best)"
    )
    curves["final"] = {"cram": {"hole_psnr": 21.0}}
    assert inpaint_progress._status(curves) == "finished after 4 epochs, best epoch 2"


def test_a_run_without_a_finished_epoch_has_no_curves(tmp_path):
    assert inpaint_progress.read_run(str(tmp_path / "missing")) is None
    _run(tmp_path / "empty", [])
    assert inpaint_progress.read_run(str(tmp_path / "empty")) is None


def test_the_gap_uses_only_epochs_both_runs_finished(tmp_path):
    _run(tmp_path / "cram", [13.0, 14.0, 15.5])
    _run(tmp_path / "cnn", [14.5, 14.9])
    runs = {
        "cram": {"0": inpaint_progress.read_run(str(tmp_path / "cram"))},
        "cnn_encoder": {"0": inpaint_progress.read_run(str(tmp_path / "cnn"))},
    }
    gap = inpaint_progress.gaps(runs)
    assert list(gap) == ["0"]
    assert gap["0"]["epochs"] == [1, 2]
    assert gap["0"]["steps"] == [937, 1874]
    assert gap["0"]["db"] == pytest.approx([-1.5, -0.9])
    # A seed that only one of the two ran has no gap.
    runs["cram"]["1"] = runs["cram"]["0"]
    assert list(inpaint_progress.gaps(runs)) == ["0"]


def test_run_study_progress_writes_the_file_and_figure(tmp_path, capsys):
    runs = tmp_path / "runs"
    _run(runs / "cram_seed0", [13.0, 14.0])
    _run(runs / "cnn_encoder_seed0", [14.0, 14.5])
    out, figure = tmp_path / "progress.json", tmp_path / "gap.png"
    code = driver.main(
        [
            "inpaint/full_mnist32", "--progress", "--runs-dir", str(runs),
            "--output", str(out), "--figure", f"gap={figure}",
        ]
    )  # fmt: skip
    assert code == 0
    results = json.loads(out.read_text())
    assert results["configuration"] == "inpaint/full_mnist32"
    assert len(results["date"]) == 10  # YYYY-MM-DD, the report's day
    assert results["status"]["cram"] == {
        "0": "epoch 2 of 50, best epoch 2",
        "1": "not started",
    }
    assert results["status"]["cram_skip"]["0"] == "not started"
    assert results["gap_db"]["0"]["db"] == pytest.approx([-1.0, -0.5])
    assert figure.stat().st_size > 0
    last = capsys.readouterr().out.splitlines()[-1]
    assert last == "CRAM - CNN encoder, seed 0, epoch 2: -0.50 dB"


def test_progress_without_any_run_says_where_it_looked(tmp_path, capsys):
    code = driver.main(
        [
            "inpaint/full_mnist32", "--progress", "--runs-dir", str(tmp_path),
            "--output", str(tmp_path / "p.json"),
        ]
    )  # fmt: skip
    assert code == 2
    err = capsys.readouterr().err
    assert "no run of inpaint/full_mnist32 has finished an epoch" in err
    assert not (tmp_path / "p.json").exists()


def test_a_restarted_run_keeps_the_lost_runs_curves(tmp_path, capsys):
    runs = tmp_path / "runs"
    _run(runs / "cram_seed0", [13.0, 14.0, 14.5])
    out = tmp_path / "progress.json"
    args = ["inpaint/full_mnist32", "--progress", "--runs-dir", str(runs)]
    args += ["--output", str(out), "--figure", "gap="]
    assert driver.main(args) == 0
    assert json.loads(out.read_text())["lost_runs"] == []
    # The directory is lost and the run starts again.
    shutil.rmtree(runs / "cram_seed0")
    _run(runs / "cram_seed0", [13.0])
    assert driver.main(args) == 0
    results = json.loads(out.read_text())
    assert results["runs"]["cram"]["0"]["epochs"] == [1]
    [lost] = results["lost_runs"]
    assert (lost["variant"], lost["seed"], lost["epochs"]) == ("cram", "0", [1, 2, 3])
    assert lost["val_hole_psnr"] == [13.0, 14.0, 14.5]
    assert driver.main(args) == 0  # kept, not added twice
    assert len(json.loads(out.read_text())["lost_runs"]) == 1
    capsys.readouterr()
