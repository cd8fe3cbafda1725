"""The Table 1 campaign (``run_study.py rnn_spn/table1``,
cram_keras/studies/table1.py) and its progress report: test errors of the
best validation epoch re-evaluated from the checkpoint equal the runner's
own final evaluation; a finished run brought back without its weights is
reported from its metrics.json, one without weights or metrics by its
per-epoch log alone; the table names each run's state; each row records
its configuration and settings."""

import json
import os

import pytest
from testing import newest_best_lost

from cram_keras.experiments import rnn_spn
from cram_keras.studies import driver
from cram_keras.studies import table1 as campaign
from cram_keras.training.checkpoint import load_weights_without_optimizer

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, fake_mnist_dir):
    """A finished two-epoch RNN-SPN smoke run on the fake MNIST files."""
    root = tmp_path_factory.mktemp("campaign")
    config = rnn_spn.smoke_config(
        data_dir=str(fake_mnist_dir), cache_dir=str(root / "cache")
    )
    run_dir = root / "runs" / "rnn_spn"
    metrics = rnn_spn.train_and_evaluate(config, str(run_dir), verbose=0)
    return run_dir, metrics


def _best_weights(run_dir):
    record = json.loads((run_dir / "checkpoints" / "epoch-0001.json").read_text())
    return run_dir / "checkpoints" / record["best_weights"]


def test_an_older_record_with_its_weights_does_not_stand_for_the_run(
    finished_run, tmp_path, capsys
):
    # The newest record's best weights are gone (or damaged) while the
    # previous record's are intact: a resume would fall back to that record,
    # but the report must describe the run as it is (epochs, state, the test
    # errors of metrics.json), not re-evaluate an older best.
    run_dir, metrics = finished_run
    for copy, newest, name in newest_best_lost(run_dir, tmp_path / "rnn_spn"):
        damage = name != "best-0001.weights.h5"
        entry = campaign.report_model(str(copy), {})
        assert (entry["epochs_done"], entry["finished"]) == (2, True)
        assert entry["best_epoch"] == newest["early_stopping"]["best_epoch"] + 1
        assert entry["test_per_digit_error_at_best"] == metrics["test_per_digit_error"]
        out = capsys.readouterr().out
        state = "unusable (" if damage else "not here"
        assert f"{name} {state}" in out and "test errors from metrics.json" in out


def test_report_reevaluates_the_best_checkpoint(finished_run, tmp_path):
    run_dir, metrics = finished_run
    figure = tmp_path / "attention.png"
    entry = campaign.report_model(str(run_dir), {}, str(figure))
    assert entry["epochs_done"] == 2 and entry["finished"]
    # The runner evaluated the restored best weights itself at the end of
    # training; the report loads the checkpoint file and evaluates again.
    assert entry["test_per_digit_error_at_best"] == pytest.approx(
        metrics["test_per_digit_error"], abs=1e-6
    )
    assert entry["final_metrics"]["test_per_digit_error"] == pytest.approx(
        metrics["test_per_digit_error"]
    )
    assert figure.stat().st_size > 0


def test_report_without_weights_uses_metrics_or_names_the_file(
    finished_run, tmp_path, capsys
):
    import shutil

    run_dir, metrics = finished_run
    copy = tmp_path / "rnn_spn"
    shutil.copytree(run_dir, copy)
    best = _best_weights(copy)
    best.unlink()
    entry = campaign.report_model(str(copy), {})
    assert entry["test_per_digit_error_at_best"] == metrics["test_per_digit_error"]
    assert entry["test_sequence_error_at_best"] == metrics["test_sequence_error"]
    assert f"{best.name} not here" in capsys.readouterr().out

    # The report is of the run as its newest record leaves it: the same
    # state and the same test errors, whichever best epoch the run had.
    assert (entry["epochs_done"], entry["finished"]) == (2, True)

    # Logs only, as brought back from another machine: every weights file
    # gone, the run unfinished. The curve is reported, without a test error.
    (copy / "metrics.json").unlink()
    for weights in (copy / "checkpoints").glob("*.weights.h5"):
        weights.unlink()
    capsys.readouterr()
    entry = campaign.report_model(str(copy), {})
    out = capsys.readouterr().out
    assert "no weights here; reporting its per-epoch log only" in out
    assert f"{best.name} not here; no test error" in out
    assert entry["epochs_done"] == 2 and len(entry["valid_per_digit_error"]) == 2
    assert "test_per_digit_error_at_best" not in entry


def test_table_states_and_schedule():
    entry = dict(
        epochs_done=96,
        best_epoch=46,
        stopped_early=True,
        finished=True,
        train_wall_seconds=3600.0,
        test_per_digit_error_at_best=0.0244,
        test_sequence_error_at_best=0.072,
        train_sequences_per_second=18332.0,
    )
    running = dict(
        entry,
        stopped_early=False,
        finished=False,
        epochs_done=20,
        train_wall_seconds=90,
    )
    done = dict(entry, stopped_early=False, finished=True, epochs_done=300)
    table = campaign.markdown_table(
        {"models": {"ffn_spn": entry, "rnn_spn": running, "conv": done}}
    )
    rows = {line.split(" | ")[0]: line for line in table.splitlines()[2:]}
    assert (
        "| 2.4 % | 7.2 % | 96 (46) | 1.0 h | 18332 | early-stopped |"
        in rows["| FFN-SPN, d = 2"]
    )
    assert rows["| RNN-SPN, d = 2"].endswith(
        "| 20 (46) | 2 min | 18332 | in progress |"
    )
    assert rows["| CNN"].endswith("| finished (300 epochs) |")
    configs = {
        "rnn_spn": rnn_spn.Config(),
        "rnn_spn_d3": rnn_spn.Config(downsample=3.0),
        "conv": rnn_spn.Config(model="conv"),
    }
    assert campaign.parse_schedule("conv:20,rnn_spn:60", configs) == [
        ("conv", 20),
        ("rnn_spn", 60),
        ("rnn_spn_d3", 60),
    ]
    for bad in ("rnn_spn:0", "rnn_spn", "cnn:20", "rnn_spn:x"):
        with pytest.raises(driver.StudyError, match="--schedule takes model:epochs"):
            campaign.parse_schedule(bad, configs)


@pytest.mark.parametrize(
    "env, args, message",
    [
        ({"STOP_AFTER": "7m"}, [], "STOP_AFTER must be a whole number of seconds"),
        ({"STOP_AFTER": "-5"}, [], "STOP_AFTER must be a whole number of seconds"),
        ({}, [], "set OUT to the output folder"),
        ({"STOP_AFTER": "5"}, ["cnn:2"], "a job is search, search:K/N or MODEL"),
        ({"STOP_AFTER": "5"}, ["rnn_spn:3:dropout"], "each KEY=VALUE non-empty"),
        ({"STOP_AFTER": "5", "RESUME_DIR": "nowhere"}, [], "RESUME_DIR nowhere is no"),
        ({"STOP_AFTER": "5", "STAGES": "6,3"}, ["search"], "STAGES must be increasing"),
    ],
)
def test_gpu_script_refuses_bad_settings_before_anything_runs(
    env, args, message, tmp_path
):
    import subprocess

    script = os.path.join(ROOT, "benchmarks", "rnn_spn_paper_gpu.sh")
    names = ("OUT", "STOP_AFTER", "RESUME_DIR", "STAGES", "SEARCH_ARGS", "RUNS_DIR")
    base = {k: v for k, v in os.environ.items() if k not in names}
    if "STOP_AFTER" in env:
        base["OUT"] = str(tmp_path / "out")
    base["RUNS_DIR"] = str(tmp_path / "runs")
    proc = subprocess.run(
        ["bash", script, *args], env={**base, **env}, capture_output=True,
        text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode != 0 and message in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists() and not (tmp_path / "runs").exists()


def test_set_changes_the_config_not_the_run_directory(tmp_path, monkeypatch, capsys):
    trained = []
    monkeypatch.setattr(
        rnn_spn, "train_and_evaluate",
        lambda config, run_dir, **kw: trained.append((config, run_dir, kw)),
    )  # fmt: skip
    argv = ["rnn_spn/table1", "--runs-dir", str(tmp_path), "--variants", "ffn_spn_d3"]
    argv += ["--schedule", "ffn_spn:5", "--set", "dropout=0.2"]
    assert driver.main(argv) == 0
    # The row's two stages, in its own run directory.
    assert [os.path.basename(d) for _, d, _ in trained] == ["ffn_spn_d3"] * 2
    assert [kw["stop_after_epochs"] for _, _, kw in trained] == [5, None]
    config = trained[0][0]
    assert (config.model, config.downsample, config.dropout) == ("ffn_spn", 3.0, 0.2)
    assert config.gru_initializer == "lasagne" and config.epochs == 300
    # A bad setting, or a row's own field, is refused before anything trains.
    trained.clear()
    for bad, message in [
        (["--set", "dropout=1.5"], "dropout"),
        (["--set", "downsample=3"], "set by the row"),
        (["--set", "model=conv"], "set by the row"),
        (["--set", "dropuot=0.3"], "has no setting 'dropuot'"),
        (["--variants", "rnn_spn_d5"], "--variants takes distinct names"),
    ]:
        capsys.readouterr()
        assert driver.main(argv[:3] + bad) == 2
        assert message in capsys.readouterr().err
    assert trained == []


def test_report_rows_by_model_and_d_with_the_window_area(tmp_path, fake_mnist_dir):
    """A d = 3 run directory becomes its own row (``rnn_spn_d3``) beside the
    paper's d = 3 number; its zoom is the mean |det A| of each step's
    transform over the test set, recomputed here from the model itself."""
    import numpy as np

    from cram_keras.experiments.experiment import Run
    from cram_keras.experiments.run_dir import load_config

    config = rnn_spn.smoke_config(
        data_dir=str(fake_mnist_dir), cache_dir=str(tmp_path / "cache"), downsample=3.0
    )
    runs = tmp_path / "runs"
    rnn_spn.train_and_evaluate(config, str(runs / "rnn_spn_d3"), verbose=0)
    output = tmp_path / "progress.json"
    driver.main(
        [
            "rnn_spn/table1",
            "--report",
            "--runs-dir",
            str(runs),
            "--output",
            str(output),
            "--curves-figure",
            str(tmp_path / "curves.png"),
            "--attention-figure",
            f"rnn_spn_d3={tmp_path / 'd3.png'}",
        ]
    )
    results = json.loads(output.read_text())
    entry = results["models"]["rnn_spn_d3"]
    assert entry["downsample"] == 3.0 and entry["paper_per_digit_error"] == 0.018
    # Each row names its configuration and the settings it trained with.
    assert results["configuration"] == "rnn_spn/table1"
    assert entry["configuration"] == "rnn_spn/table1:rnn_spn_d3"
    assert (
        entry["settings"]["downsample"] == 3.0 and "data_dir" not in entry["settings"]
    )
    assert (tmp_path / "d3.png").stat().st_size > 0
    # The reference: the affine matrices of every test image, their
    # determinants by NumPy, averaged per step.
    run = Run(
        str(runs / "rnn_spn_d3"), load_config(rnn_spn.Config, str(runs / "rnn_spn_d3"))
    )
    data = run.data = rnn_spn.EXPERIMENT.load_data(run)
    model = rnn_spn.EXPERIMENT.build_model(run)
    checkpoints = runs / "rnn_spn_d3" / "checkpoints"
    record = json.loads(sorted(checkpoints.glob("epoch-*.json"))[-1].read_text())
    load_weights_without_optimizer(model, str(checkpoints / record["best_weights"]))
    images = data.splits["test"][0].astype("float32") / 255.0
    _, thetas = model(images, training=False, return_transforms=True)
    dets = np.abs(np.linalg.det(np.asarray(thetas)[..., :2]))
    np.testing.assert_allclose(entry["window_area_per_step"], dets.mean(0), rtol=1e-4)
    # A report of other rows only (another campaign's commit) leaves this
    # row as it was.
    argv = ["rnn_spn/table1", "--report", "--runs-dir", str(runs)]
    argv += ["--output", str(output), "--curves-figure", "", "--attention-figure", ""]
    assert driver.main(argv + ["--variants", "ffn_spn_d4", "--commit", "abc123"]) == 0
    again = json.loads(output.read_text())
    assert again["models"]["rnn_spn_d3"] == entry
    assert again["models"]["rnn_spn_d3"]["commit"] != "abc123"
    assert entry["date"] == results["date"]  # each row the date of its report
    # A kept row without a date (an older file's) takes its report's date.
    del again["models"]["rnn_spn_d3"]["date"]
    output.write_text(json.dumps(dict(again, date="2020-01-02")))
    assert driver.main(argv + ["--variants", "ffn_spn_d4", "--commit", "abc123"]) == 0
    kept = json.loads(output.read_text())["models"]["rnn_spn_d3"]
    assert kept == dict(entry, date="2020-01-02")
    table = campaign.markdown_table(results)
    rows = [line for line in table.splitlines()[2:]]
    assert len(rows) == 9  # the paper's nine rows, run or not
    assert rows[2].startswith("| RNN-SPN, d = 3 | 1.8 % |")
    assert rows[0].startswith("| RNN-SPN, d = 1 | 1.8 % | not run |")


def test_a_run_of_another_seed_is_a_row_of_its_own(tmp_path, fake_mnist_dir):
    """``rnn_spn_seed1`` (train_rnn_spn.py --config table1:rnn_spn --seed 1)
    is reported as its own row, after the d = 2 row it repeats, with its
    seed and the configuration of that row; its name says the seed."""
    config = rnn_spn.smoke_config(
        data_dir=str(fake_mnist_dir), cache_dir=str(tmp_path / "cache"), seed=1
    )
    runs = tmp_path / "runs"
    rnn_spn.train_and_evaluate(config, str(runs / "rnn_spn_seed1"), verbose=0)
    output = tmp_path / "progress.json"
    argv = ["rnn_spn/table1", "--report", "--runs-dir", str(runs)]
    argv += ["--output", str(output), "--curves-figure", str(tmp_path / "c.png")]
    assert driver.main([*argv, "--attention-figure", ""]) == 0
    results = json.loads(output.read_text())
    entry = results["models"]["rnn_spn_seed1"]
    assert entry["seed"] == 1 and entry["model"] == "rnn_spn"
    assert entry["configuration"] == "rnn_spn/table1:rnn_spn"
    assert entry["paper_per_digit_error"] == 0.015
    assert results["variants"] == {"rnn_spn": {"model": "rnn_spn", "downsample": 2.0}}
    rows = campaign.markdown_table(results).splitlines()[2:]
    assert len(rows) == 10  # the paper's nine rows and this seed's
    assert rows[1].startswith("| RNN-SPN, d = 2 | 1.5 % | not run |")
    assert rows[2].startswith("| RNN-SPN, d = 2, seed 1 | 1.5 % |")
    assert (tmp_path / "c.png").stat().st_size > 0
    # --variants names a row; its runs of other seeds are reported with it.
    assert driver.main([*argv, "--variants", "rnn_spn", "--commit", "abc123"]) == 0
    assert json.loads(output.read_text())["models"]["rnn_spn_seed1"]["commit"] == (
        "abc123"
    )
    assert campaign.split_seed("ffn_spn_d3") == ("ffn_spn_d3", 0)
    assert campaign.split_seed("ffn_spn_d3_seed12") == ("ffn_spn_d3", 12)
    assert campaign.row_key("ffn_spn", 3.0, seed=2) == "ffn_spn_d3_seed2"
