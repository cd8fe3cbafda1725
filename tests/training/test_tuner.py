"""The keras-tuner glimpse search: a two-trial search on a tiny set completes
and writes its table; a rerun reloads it without training again; a larger
`max_trials` runs only the new trials; the best trial's checkpoint reloads
with the validation accuracy the table reports."""

import csv
import json

import keras
import numpy as np
import pytest

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
    encoder = CRAMEncoder(
        num_glimpses=num_glimpses,
        glimpse_size=6,
        core_units=8,
        context_filters=(2,),
        context_units=4,
        localization_filters=(2,),
        localization_units=4,
        glimpse_filters=(2,),
        glimpse_units=4,
    )
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
    model = tuning.load_trial_model(tuner, best["trial_id"])
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
