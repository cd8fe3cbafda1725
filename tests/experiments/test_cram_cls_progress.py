"""The CRAM classification progress report (``run_study.py cram_cls/...
--progress``): each run's validation error curve, best validation epoch and,
once finished, its test error, read from run directories written here by
hand; nothing trains."""

import json
import os
import shutil

import pytest

from cram_keras.studies import cram_cls_budget, driver

HEADER = "epoch,accuracy,loss,train_seconds,val_accuracy,val_loss\n"


def _run(directory, valid_errors, epochs=50, test_error=None):
    """A run directory as the runner leaves it; with ``test_error`` a
    finished one (metrics.json)."""
    os.makedirs(directory)
    with open(os.path.join(directory, "config.json"), "w") as f:
        json.dump(dict(epochs=epochs, batch_size=64, clue="oracle"), f)
    with open(os.path.join(directory, "log.csv"), "w") as f:
        f.write(HEADER)
        for epoch, error in enumerate(valid_errors):
            f.write(f"{epoch},{0.9 - 0.1 * error},0.3,10.0,{1.0 - error},0.4\n")
    if test_error is None:
        return
    best = min(range(len(valid_errors)), key=valid_errors.__getitem__)
    metrics = dict(
        test_error=test_error,
        valid_error=valid_errors[best],
        epochs=len(valid_errors),
        best_epoch=best,
        wall_seconds=120.0,
        valid_error_per_epoch=valid_errors,
        train_error_per_epoch=[0.1] * len(valid_errors),
        glimpse_in_digit_box=0.7,
        glimpse_scale=0.5,
        beta=1.0,
        parameters=5900000,
        train_samples_per_second=800.0,
    )
    with open(os.path.join(directory, "metrics.json"), "w") as f:
        json.dump(metrics, f)


def test_read_run_finds_the_best_validation_epoch(tmp_path):
    assert cram_cls_budget.read_run(str(tmp_path / "missing")) is None
    _run(tmp_path / "empty", [])
    assert cram_cls_budget.read_run(str(tmp_path / "empty")) is None
    _run(tmp_path / "a", [0.5, 0.25, 0.25, 0.375])
    entry = cram_cls_budget.read_run(str(tmp_path / "a"))
    assert entry["valid_error_per_epoch"] == pytest.approx([0.5, 0.25, 0.25, 0.375])
    assert entry["epochs_done"] == 4 and entry["epochs_planned"] == 50
    # The first epoch of the lowest error, as early stopping keeps it; 1-based.
    assert entry["best_valid_epoch"] == 2
    assert entry["best_valid_error"] == pytest.approx(0.25)
    assert entry["finished"] is False and entry["test_error"] is None


def test_run_study_progress_trains_nothing_and_writes_file_and_figure(
    tmp_path, capsys, monkeypatch
):
    def no_training(*args, **kwargs):
        raise AssertionError("--progress trained a run")

    monkeypatch.setattr(cram_cls_budget.cram_cls, "train_and_evaluate", no_training)
    runs = tmp_path / "runs"
    _run(runs / "oracle_seed0", [0.5, 0.25, 0.125], epochs=3, test_error=0.15)
    _run(runs / "none_seed0", [0.75, 0.5])
    _run(runs / "none_seed1", [0.875])
    out, figure = tmp_path / "progress.json", tmp_path / "curves.png"
    code = driver.main(
        [
            "cram_cls/full", "--progress", "--runs-dir", str(runs),
            "--output", str(out), "--figure", f"curves={figure}",
        ]
    )  # fmt: skip
    assert code == 0
    results = json.loads(out.read_text())
    assert results["configuration"] == "cram_cls/full"
    assert len(results["date"]) == 10
    assert results["status"] == {
        "oracle": {"0": "finished", "1": "not started"},
        "saliency": {"0": "not started", "1": "not started"},
        "none": {"0": "epoch 2 of 50", "1": "epoch 1 of 50"},
    }
    oracle = results["progress"]["oracle"]["0"]
    assert oracle["finished"] is True
    assert oracle["test_error"] == pytest.approx(0.15)
    assert oracle["best_valid_epoch"] == 3
    none = results["progress"]["none"]
    assert none["0"]["finished"] is False and none["0"]["test_error"] is None
    assert none["0"]["best_valid_error"] == pytest.approx(0.5)
    assert none["1"]["valid_error_per_epoch"] == pytest.approx([0.875])
    # The finished run as the finished study records it; unfinished ones not.
    assert list(results["runs"]) == ["oracle"]
    assert results["runs"]["oracle"]["test_error_per_seed"] == [0.15]
    assert results["runs"]["oracle"]["best_epoch_per_seed"] == [2]
    assert results["total_wall_seconds"] == pytest.approx(120.0)
    assert figure.stat().st_size > 0
    printed = capsys.readouterr().out
    assert "none seed 0: epoch 2 of 50; best validation error 50.00 % (epoch 2)" in (
        printed
    )


def test_progress_without_any_run_says_where_it_looked(tmp_path, capsys):
    code = driver.main(
        [
            "cram_cls/full", "--progress", "--runs-dir", str(tmp_path),
            "--output", str(tmp_path / "p.json"),
        ]
    )  # fmt: skip
    assert code == 2
    assert "no run of cram_cls/full has finished an epoch" in capsys.readouterr().err
    assert not (tmp_path / "p.json").exists()


def test_progress_records_the_commit_that_trained_the_runs(tmp_path, capsys):
    """A report written from another checkout than the runs' records the
    commit it is given; a value that is no commit hash is refused."""
    runs = tmp_path / "runs"
    _run(runs / "oracle_seed0", [0.5, 0.25])
    out = tmp_path / "progress.json"
    args = ["cram_cls/full", "--progress", "--runs-dir", str(runs)]
    args += ["--output", str(out), "--figure", "curves="]
    assert driver.main([*args, "--commit", "0c65a8c" + "0" * 33]) == 0
    assert json.loads(out.read_text())["commit"] == "0c65a8c" + "0" * 33
    capsys.readouterr()
    out.unlink()
    with pytest.raises(SystemExit) as exit_info:
        driver.main([*args, "--commit", "HEAD~1"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "--commit" in err and "4 to 40 hexadecimal digits" in err
    assert "Received: 'HEAD~1'" in err
    assert not out.exists()


def test_result_files_record_run_directories_without_the_machines_folders():
    """A run directory given as an absolute path (a folder of the machine
    that trained it) is recorded as DIR/<its name>; a relative one as is."""
    assert driver.recorded_path("/home/someone/runs/float32_seed0") == (
        "DIR/float32_seed0"
    )
    assert driver.recorded_path("/home/someone/runs/float32_seed0/") == (
        "DIR/float32_seed0"
    )
    relative = os.path.join("runs", "studies", "inpaint", "float32_seed0")
    assert driver.recorded_path(relative) == relative
    # Inside the study's --runs-dir: its path there.
    runs = "/home/someone/runs"
    assert driver.recorded_path(f"{runs}/rnn_spn/p0_d3", runs) == "DIR/rnn_spn/p0_d3"
    assert driver.recorded_path("/elsewhere/p0_d3", runs) == "DIR/p0_d3"


def test_a_restarted_run_keeps_the_lost_runs_curve(tmp_path, capsys):
    """A run directory restarted from scratch (a fresh machine) reports fewer
    epochs than the result file holds: the further run is kept under
    lost_runs, and kept again by later reports."""
    runs = tmp_path / "runs"
    _run(runs / "oracle_seed0", [0.5, 0.25, 0.125, 0.2])
    out = tmp_path / "progress.json"
    args = ["cram_cls/full", "--progress", "--runs-dir", str(runs)]
    args += ["--output", str(out), "--figure", "curves="]
    assert driver.main(args) == 0
    assert json.loads(out.read_text())["lost_runs"] == []
    # The directory is lost and the run starts again.
    shutil.rmtree(runs / "oracle_seed0")
    _run(runs / "oracle_seed0", [0.5, 0.25])
    assert driver.main(args) == 0
    results = json.loads(out.read_text())
    assert results["progress"]["oracle"]["0"]["epochs_done"] == 2
    [lost] = results["lost_runs"]
    assert (lost["variant"], lost["seed"], lost["epochs_done"]) == ("oracle", "0", 4)
    assert lost["valid_error_per_epoch"] == pytest.approx([0.5, 0.25, 0.125, 0.2])
    assert lost["best_valid_epoch"] == 3
    # Once the new run has got further, the next report adds nothing new.
    _run(runs / "oracle_seed1", [0.5])
    assert driver.main(args) == 0
    assert len(json.loads(out.read_text())["lost_runs"]) == 1
    capsys.readouterr()
