"""The keras-tuner searches. The glimpse search: a two-trial search on a tiny
set completes and writes its table; a rerun reloads it without training
again; a larger `max_trials` runs only the new trials; the best trial's
checkpoint reloads with the validation accuracy the table reports. The
search whose trials are runs (`RunSearch`, with fake runs): its table holds
each trial's values and objective, the best row is the argmax; a rerun
trains nothing; an interrupted trial resumes with its id and values; a
diverged trial fails alone while other errors stop the search; the seed
fixes the values; a second search in a directory that another process is
searching is refused."""

import csv
import json
import os
import warnings

import keras
import numpy as np
import pytest
from testing import TINY_ENCODER

from cram_keras.models.cram import CRAMClassifier, CRAMEncoder
from cram_keras.training import tuner as tuning

SIZE = 16


def tiny_data(n, seed):
    rng = np.random.default_rng(seed)
    images = rng.random((n, SIZE, SIZE, 1)).astype("float32")
    clue = np.zeros((n, SIZE, SIZE, 1), "float32")
    clue[:, 4:12, 4:12] = 1.0
    return (images, clue), rng.integers(0, 3, size=n)


def build_model(num_glimpses, learning_rate):
    encoder = CRAMEncoder(**{**TINY_ENCODER, "num_glimpses": num_glimpses})
    model = CRAMClassifier(encoder, num_classes=3, decoder_units=(4, 4))
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
        run_eagerly=True,
    )
    return model


class CountFits:
    def __init__(self, monkeypatch):
        self.calls = 0
        original = keras.Model.fit

        def fit(model, *args, **kwargs):
            self.calls += 1
            return original(model, *args, **kwargs)

        monkeypatch.setattr(keras.Model, "fit", fit)


def search(directory, max_trials, train, valid):
    (x, c), _ = train
    hypermodel = tuning.GlimpseHyperModel(
        build_model, example_inputs=[x[:2], c[:2]], glimpse_range=(1, 2)
    )
    tuner = tuning.glimpse_search(hypermodel, directory, max_trials=max_trials, seed=3)
    tuner.search(*train, batch_size=16, validation_data=valid, epochs=2, verbose=0)
    return tuner


@pytest.mark.slow
def test_search_writes_table_and_resumes_without_rerunning_trials(
    tmp_path, monkeypatch
):
    train, valid = tiny_data(16, 0), tiny_data(8, 1)
    fits = CountFits(monkeypatch)
    tuner = search(tmp_path, 2, train, valid)
    assert fits.calls == 2

    rows = tuning.trials_table(tuner)
    tuning.write_trials_table(rows, str(tmp_path / "t.csv"), str(tmp_path / "t.json"))
    assert [r["status"] for r in rows] == ["COMPLETED", "COMPLETED"]
    for row in rows:
        assert row["num_glimpses"] in (1, 2)
        assert 1e-5 <= row["learning_rate"] <= 1e-3
        assert row["epochs"] == 2 and len(row["val_error_per_epoch"]) == 2
        assert row["best_val_error"] == min(row["val_error_per_epoch"])
        assert row["seconds"] > 0
    with open(tmp_path / "t.csv", newline="") as f:
        table = list(csv.DictReader(f))
    assert [r["trial_id"] for r in table] == [r["trial_id"] for r in rows]
    assert list(table[0]) == list(tuning.TABLE_COLUMNS)
    assert json.loads((tmp_path / "t.json").read_text())["trials"] == rows

    best = tuning.best_configuration(tuner)
    assert best["best_val_error"] == min(r["best_val_error"] for r in rows)
    # The kept checkpoint is the best epoch's: it scores what the table says.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = tuning.load_trial_model(tuner, best["trial_id"])
    assert [str(w.message) for w in caught if "optimizer" in str(w.message)] == []
    assert model.encoder.num_glimpses == best["num_glimpses"]
    scores = model.evaluate(*valid, batch_size=16, return_dict=True, verbose=0)
    assert 1.0 - scores["accuracy"] == pytest.approx(best["best_val_error"], abs=1e-6)

    # Rerun: the finished search is reloaded, nothing is trained again.
    tuner = search(tmp_path, 2, train, valid)
    assert fits.calls == 2
    assert tuning.trials_table(tuner) == rows
    # A larger budget runs only the new trial.
    tuner = search(tmp_path, 3, train, valid)
    assert fits.calls == 3
    assert len(tuning.trials_table(tuner)) == 3


def test_bad_ranges_fail_clearly():
    with pytest.raises(ValueError, match="Received: glimpse_range=\\(0, 8\\)"):
        tuning.GlimpseHyperModel(build_model, glimpse_range=(0, 8))
    with pytest.raises(ValueError, match="Received: glimpse_range=\\(8, 1\\)"):
        tuning.GlimpseHyperModel(build_model, glimpse_range=(8, 1))
    with pytest.raises(ValueError, match="learning_rate_range=\\(0.0, 0.001\\)"):
        tuning.GlimpseHyperModel(build_model, learning_rate_range=(0.0, 1e-3))
    hypermodel = tuning.GlimpseHyperModel(build_model)
    with pytest.raises(ValueError, match="Received: max_trials=0"):
        tuning.glimpse_search(hypermodel, "unused", max_trials=0)


# === RunSearch: a search whose trials are runs ===

SPACE = {"glimpses": (1, 6), "learning_rate": (1e-5, 1e-3), "min_scale": (0.25, 0.45)}


def score(values):
    """The objective of the fake runs: best at 3 glimpses, rate 1e-4, 0.3."""
    return (
        -((values["glimpses"] - 3) ** 2)
        - abs(np.log10(values["learning_rate"]) + 4.0)
        - abs(values["min_scale"] - 0.3)
    )


class FakeRuns:
    """`train_trial` of a search: records each call; `interrupt` maps a
    trial id to an exception raised on its first call only."""

    def __init__(self, interrupt=None):
        self.calls = []
        self.interrupt = dict(interrupt or {})

    def __call__(self, trial_id, values):
        self.calls.append((trial_id, dict(values)))
        error = self.interrupt.pop(trial_id, None)
        if error is not None:
            raise error
        return {"psnr": score(values), "epochs": 1, "seconds": 0.5}


def run_search(directory, runs, max_trials=3, seed=0, **kwargs):
    search = tuning.RunSearch(
        runs,
        tuning.search_space(SPACE, log=("learning_rate",)),
        "psnr",
        directory,
        max_trials=max_trials,
        seed=seed,
        **kwargs,
    )
    search.search(verbose=0)
    return search


def test_run_search_table_best_row_and_rerun_without_training(tmp_path):
    runs = FakeRuns()
    search = run_search(tmp_path, runs)
    assert [trial_id for trial_id, _ in runs.calls] == ["0", "1", "2"]

    rows = tuning.run_trials_table(search)
    assert [r["trial_id"] for r in rows] == ["0", "1", "2"]
    for row, (_, values) in zip(rows, runs.calls, strict=True):
        assert row["status"] == "COMPLETED"
        assert {k: row[k] for k in SPACE} == values
        assert isinstance(row["glimpses"], int) and 1 <= row["glimpses"] <= 6
        assert 1e-5 <= row["learning_rate"] <= 1e-3
        assert 0.25 <= row["min_scale"] <= 0.45
        assert row["psnr"] == pytest.approx(score(values))
        assert (row["epochs"], row["seconds"]) == (1, 0.5)
    objectives = [score(values) for _, values in runs.calls]
    best = tuning.best_row(rows, "psnr", "max")
    assert best["trial_id"] == str(int(np.argmax(objectives)))
    assert tuning.best_row(rows, "psnr", "min")["trial_id"] == str(
        int(np.argmin(objectives))
    )

    columns = tuning.table_columns(search)
    assert columns == (
        "trial_id", "status", "glimpses", "learning_rate", "min_scale", "psnr",
        "epochs", "seconds",
    )  # fmt: skip
    tuning.write_trials_table(rows, tmp_path / "t.csv", tmp_path / "t.json", columns)
    with open(tmp_path / "t.csv", newline="") as f:
        table = list(csv.DictReader(f))
    assert list(table[0]) == list(columns)
    assert [float(r["psnr"]) for r in table] == pytest.approx(objectives)
    assert json.loads((tmp_path / "t.json").read_text())["trials"] == rows

    # Rerun: nothing is trained again; a larger budget runs the new trial only.
    again = FakeRuns()
    assert tuning.run_trials_table(run_search(tmp_path, again)) == rows
    assert again.calls == []
    run_search(tmp_path, again, max_trials=4)
    assert [trial_id for trial_id, _ in again.calls] == ["3"]


def test_a_second_search_in_one_directory_is_refused_before_it_writes(tmp_path):
    """`run_search` holds its directory (`cram_keras.training.run_lock`): a
    search while another process holds it writes nothing; once free, the
    search runs, and leaves no lock behind."""
    from testing import held_by_another_process

    from cram_keras.training import run_lock

    def search(runs):
        return tuning.run_search(
            runs, SPACE, "psnr", str(tmp_path), log=("learning_rate",),
            max_trials=2, seed=0, best_config=dict,
        )  # fmt: skip

    runs = FakeRuns()
    with held_by_another_process(tmp_path) as holder:
        with pytest.raises(run_lock.DirectoryBusy, match=f"pid {holder.pid}") as busy:
            search(runs)
        assert "One process at a time writes a search directory" in str(busy.value)
        assert sorted(os.listdir(tmp_path)) == [".lock"]
    assert runs.calls == []
    search(runs)
    assert len(runs.calls) == 2
    assert "tuner" in os.listdir(tmp_path) and ".lock" not in os.listdir(tmp_path)


@pytest.mark.parametrize("interrupted", ["0", "1"])
def test_an_interrupted_trial_resumes_with_its_id_and_values(tmp_path, interrupted):
    runs = FakeRuns(interrupt={interrupted: KeyboardInterrupt()})
    with pytest.raises(KeyboardInterrupt):
        run_search(tmp_path, runs)
    before = list(runs.calls)
    assert before[-1][0] == interrupted

    resumed = FakeRuns()
    search = run_search(tmp_path, resumed)
    # The interrupted trial comes first, with the values it had; the trials
    # that had completed are not run again.
    assert resumed.calls[0] == before[-1]
    assert [t for t, _ in resumed.calls] == [str(i) for i in range(int(interrupted), 3)]
    rows = tuning.run_trials_table(search)
    assert [r["status"] for r in rows] == ["COMPLETED"] * 3
    # The same seed in a fresh directory samples the same values.
    fresh = FakeRuns()
    run_search(tmp_path / "fresh", fresh)
    assert [v for _, v in fresh.calls] == [v for _, v in before[:-1] + resumed.calls]


def test_failed_errors_fail_one_trial_and_other_errors_stop_the_search(tmp_path):
    class Diverged(RuntimeError):
        pass

    runs = FakeRuns(interrupt={"0": Diverged("loss became nan")})
    search = run_search(tmp_path / "a", runs, failed_errors=(Diverged,))
    rows = tuning.run_trials_table(search)
    assert [r["status"] for r in rows] == ["FAILED", "COMPLETED", "COMPLETED"]
    assert "loss became nan" in rows[0]["message"] and rows[0]["psnr"] is None
    assert tuning.best_row(rows, "psnr", "max")["trial_id"] in ("1", "2")
    with pytest.raises(RuntimeError, match="No trial of the search"):
        tuning.best_row(rows[:1], "psnr", "max")

    # Any other error is raised as it is, and the trial runs again next time.
    runs = FakeRuns(interrupt={"1": OSError("disk full")})
    with pytest.raises(OSError, match="disk full"):
        run_search(tmp_path / "b", runs, failed_errors=(Diverged,))
    resumed = FakeRuns()
    run_search(tmp_path / "b", resumed)
    assert resumed.calls[0] == runs.calls[-1]


def test_trial_crash_points_are_the_trials_own(monkeypatch):
    from cram_keras.training.checkpoint import CRASH_ENV

    monkeypatch.setenv(CRASH_ENV, "trial:1:batch:0")
    with tuning.trial_crash_points("1"):
        assert os.environ[CRASH_ENV] == "batch:0"
    with tuning.trial_crash_points("0"):
        assert os.environ[CRASH_ENV] == ""
    assert os.environ[CRASH_ENV] == "trial:1:batch:0"
    # An unprefixed point fires outside the trials only.
    monkeypatch.setenv(CRASH_ENV, "evaluate")
    with tuning.trial_crash_points("0"):
        assert os.environ[CRASH_ENV] == ""
    assert os.environ[CRASH_ENV] == "evaluate"
    monkeypatch.delenv(CRASH_ENV)
    with tuning.trial_crash_points("0"):
        assert CRASH_ENV not in os.environ


def test_search_space_kinds_and_seeds():
    hp = tuning.search_space(
        {"n": (1, 4), "x": (0.5, 1.5), "rate": (1e-4, 1e-2), "fixed": (2, 2)},
        log=("rate",),
    )
    kinds = {p.name: type(p).__name__ for p in hp.space}
    assert kinds == {"n": "Int", "x": "Float", "rate": "Float", "fixed": "Fixed"}
    spec = {p.name: p.get_config() for p in hp.space}
    assert (spec["n"]["min_value"], spec["n"]["max_value"]) == (1, 4)
    assert spec["rate"]["sampling"] == "log" and spec["x"]["sampling"] == "linear"
    assert spec["fixed"]["value"] == 2
    with pytest.raises(ValueError, match="Received: n_range=\\(4, 1\\)"):
        tuning.search_space({"n": (4, 1)})
    with pytest.raises(ValueError, match="Received: rate_range=\\(0.0, 0.1\\)"):
        tuning.search_space({"rate": (0.0, 0.1)}, log=("rate",))
    # keras-tuner would replace seed 0 with a random one.
    assert tuning.search_seed(0) == tuning.search_seed(0) != 0
    assert tuning.search_seed(0) != tuning.search_seed(1)
