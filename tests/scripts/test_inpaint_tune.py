"""train_inpaint.py --tune: a one-trial search on the smoke data, finished;
another setting is then refused without deleting anything, while
--max-trials 2 continues the search with one more trial, killed during it
and after the search, then finished. Each trial is a run in trials/<id>;
the table lists each trial's values (those its run was configured with)
and objective (the held-out hole PSNR its run scored); best_config.json is
the argmax; the rerun after the finished search trains nothing and scores
the winner's own run; the first trial's files are never touched again. Bad
search settings fail clearly."""

import csv
import json
import os
import re
import signal
import subprocess
import sys

import pytest
from testing import run_script_in_process

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPT = os.path.join(ROOT, "train_inpaint.py")
SEARCHED = ("glimpses", "learning_rate", "min_scale")


def run(out, crash_at, max_trials=2):
    env = dict(os.environ, KERAS_BACKEND="tensorflow", TF_CPP_MIN_LOG_LEVEL="2")
    env.pop("CRAM_KERAS_CRASH_AT", None)
    if crash_at is not None:
        env["CRAM_KERAS_CRASH_AT"] = crash_at
    return subprocess.run(
        [sys.executable, SCRIPT, *tune_args(out, max_trials)],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=900,
    )


def tune_args(out, max_trials=2):
    return ["--smoke", "--tune", "--max-trials", str(max_trials), "--epochs", "1",
            "--output-dir", str(out)]  # fmt: skip


def mtimes(directory):
    return {
        os.path.relpath(os.path.join(root, name), directory): os.stat(
            os.path.join(root, name)
        ).st_mtime_ns
        for root, _, names in os.walk(directory)
        for name in names
    }


def read_json(path):
    with open(path) as f:
        return json.load(f)


def last_logged(path, key):
    with open(path, newline="") as f:
        return float(list(csv.DictReader(f))[-1][key])


@pytest.mark.slow
def test_tune_continues_survives_kills_and_reuses_the_winning_trial(
    tmp_path, monkeypatch
):
    out = tmp_path / "run"
    # A finished search of one trial.
    proc = run(out, None, max_trials=1)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert read_json(out / "metrics.json")["trials"] == 1
    assert sorted(os.listdir(out / "trials")) == ["0"]
    first = mtimes(out / "trials/0")
    everything = mtimes(out)

    # Another searched range is another search: refused, nothing deleted.
    monkeypatch.setenv("KERAS_BACKEND", "tensorflow")
    proc = run_script_in_process(
        SCRIPT, *tune_args(out, 2), "--set", "glimpse_range=1,1"
    )
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "glimpse_range: [1, 2] -> [1, 1]" in proc.stderr
    assert "a search with 1 trial" in proc.stderr and "--overwrite" in proc.stderr
    assert mtimes(out) == everything

    # --max-trials 2 continues it: one more trial, killed after its first
    # batch.
    proc = run(out, "trial:1:batch:0")
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    assert "max_trials: 1 -> 2" in proc.stderr
    assert mtimes(out / "trials/0") == first
    assert sorted(os.listdir(out / "trials")) == ["0", "1"]
    assert not (out / "trials/1/metrics.json").exists()
    assert not (out / "metrics.json").exists()  # the search is not finished
    second_config = read_json(out / "trials/1/config.json")

    # Rerun, killed after the search (before the winner is scored): the
    # second trial is resumed with its values, in its directory.
    proc = run(out, "after_fit")
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    assert not (out / "metrics.json").exists()
    assert mtimes(out / "trials/0") == first
    assert read_json(out / "trials/1/config.json") == second_config
    trial_files = mtimes(out / "trials")

    # The same command again trains nothing new and finishes.
    monkeypatch.delenv("CRAM_KERAS_CRASH_AT", raising=False)
    monkeypatch.setenv("KERAS_BACKEND", "tensorflow")
    proc = run_script_in_process(SCRIPT, *tune_args(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert mtimes(out / "trials") == trial_files
    assert sorted(os.listdir(out / "trials")) == ["0", "1"]

    with open(out / "trials.csv", newline="") as f:
        table = list(csv.DictReader(f))
    assert list(table[0]) == [
        "trial_id", "status", *SEARCHED, "valid_hole_psnr", "epochs", "seconds",
    ]  # fmt: skip
    assert [r["trial_id"] for r in table] == ["0", "1"]
    rows = read_json(out / "trials.json")["trials"]
    for row, line in zip(rows, table, strict=True):
        trial = out / "trials" / row["trial_id"]
        config = read_json(trial / "config.json")
        metrics = read_json(trial / "metrics.json")
        assert row["status"] == line["status"] == "COMPLETED"
        # The values are those the trial's run was trained with.
        for name in SEARCHED:
            assert row[name] == config[name]
            assert float(line[name]) == pytest.approx(config[name])
        assert not config["tune"] and config["epochs"] == 1
        assert 1 <= config["glimpses"] <= 2  # the smoke search's range
        # The objective: the run's held-out hole PSNR, which its last
        # validation pass (the model's own metric, on the same images after
        # the same recalibration) also logged.
        assert row["valid_hole_psnr"] == metrics["valid_hole_psnr"]
        assert float(line["valid_hole_psnr"]) == pytest.approx(row["valid_hole_psnr"])
        assert row["valid_hole_psnr"] == pytest.approx(
            last_logged(trial / "log.csv", "val_hole_psnr"), abs=1e-3
        )
        assert metrics["n_valid"] == round(0.1 * 64)
        assert metrics["n_train"] == 64 - metrics["n_valid"]
        assert row["epochs"] == int(line["epochs"]) == 1 and row["seconds"] > 0

    best = read_json(out / "best_config.json")
    objectives = [float(r["valid_hole_psnr"]) for r in table]
    winner = table[objectives.index(max(objectives))]
    assert best["trial_id"] == winner["trial_id"]
    assert best["valid_hole_psnr"] == pytest.approx(max(objectives))
    trial = out / "trials" / best["trial_id"]
    trial_config = read_json(trial / "config.json")
    trial_config.pop("data_source")
    # The search's max_trials when the trial ran is no setting of its run.
    assert best["config"]["max_trials"] == 2
    assert {**best["config"], "max_trials": None} == {
        **trial_config,
        "max_trials": None,
    }
    assert best["values"] == {name: trial_config[name] for name in SEARCHED}

    # metrics.json names the winner, whose own run was scored (not retrained).
    metrics = read_json(out / "metrics.json")
    expected = read_json(trial / "metrics.json")
    assert metrics["best_trial"] == best["trial_id"] and metrics["trials"] == 2
    assert {name: metrics[name] for name in SEARCHED} == best["values"]
    assert metrics["steps"] == expected["steps"]
    assert metrics["n_train"] == expected["n_train"]
    assert metrics["methods"]["cram"] == pytest.approx(
        expected["methods"]["cram"], abs=1e-5
    )


def test_bad_search_settings_fail_clearly(tmp_path):
    from cram_keras.experiments import inpaint

    bad = {
        "glimpse_range": ([0, 3], "Received: glimpse_range=[0, 3]"),
        "learning_rate_range": ([1e-3, 1e-4], "learning_rate_range=[0.001, 0.0001]"),
        "min_scale_range": ([0.3, 0.5], "high < initial_scale (0.5)"),
        "tune_valid_fraction": (1.0, "tune_valid_fraction"),
    }
    for name, (value, message) in bad.items():
        with pytest.raises(ValueError, match=re.escape(message)):
            inpaint.smoke_config(**{name: value})
    with pytest.raises(ValueError, match="encoder='cnn' has none"):
        inpaint.smoke_config(tune=True, encoder="cnn")
    config = inpaint.smoke_config(tune=True, learning_rate_range=[1e-4, 1e-4])
    assert config.learning_rate_range == [1e-4, 1e-4]
    # A hold-out that leaves nothing to train on is refused before training.
    proc = run_script_in_process(
        SCRIPT, "--smoke", "--tune", "--set", "n_train=1", "--batch-size", "1",
        "--output-dir", str(tmp_path / "run"),
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "leaves none to train on" in proc.stderr
    assert not (tmp_path / "run" / "trials").exists()
