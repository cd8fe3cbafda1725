"""train_inpaint.py --patience: the last `valid_fraction` of the training
images are held out and validate every epoch; the run stops after `patience`
epochs without a better hole PSNR on them (the rule recomputed here from
log.csv), and the best epoch's weights, not the last epoch's, are the ones
scored and saved. Bad settings are refused before training."""

import csv
import types

import keras
import numpy as np
import pytest

from cram_keras.data.inpainting import load_images
from cram_keras.experiments import cli, inpaint


def expected_stop(values, patience):
    """(best epoch, epochs trained): early stopping written out again."""
    best, best_epoch, wait = -np.inf, None, 0
    for epoch, value in enumerate(values):
        if value > best:
            best, best_epoch, wait = value, epoch, 0
        else:
            wait += 1
            if wait >= patience:
                return best_epoch, epoch + 1
    return best_epoch, len(values)


def test_validation_images_are_the_last_training_images():
    config = inpaint.smoke_config(patience=3, valid_fraction=0.25)
    run = types.SimpleNamespace(config=config, smoke=True)
    data = inpaint.EXPERIMENT.load_data(run)
    x_train, x_test = load_images(config, bundled=True)
    assert len(x_train) == 64  # the smoke setting's --n-train
    np.testing.assert_array_equal(data.x_train, x_train[:48])
    np.testing.assert_array_equal(data.x_valid, x_train[48:])
    np.testing.assert_array_equal(data.x_test, x_test)
    assert data.valid_masks.shape == (16, 32, 32, 1)
    # Without --patience nothing is held out.
    plain = inpaint.EXPERIMENT.load_data(
        types.SimpleNamespace(config=inpaint.smoke_config(), smoke=True)
    )
    assert plain.x_valid is None and len(plain.x_train) == 64


@pytest.mark.slow
def test_run_stops_after_patience_epochs_and_scores_the_best_epoch(tmp_path):
    """A generator rate of 1e-30 leaves the generator's float32 weights as
    they are, so the validation PSNR cannot improve after the first epoch,
    while the discriminators keep training: the run must stop after epoch
    1 + patience, and the saved model must hold the first epoch's
    discriminators."""
    out = tmp_path / "run"
    patience = 1
    config = inpaint.smoke_config(patience=patience, epochs=4, learning_rate=1e-30)
    metrics = inpaint.train_and_evaluate(
        config, str(out), smoke=True, verbose=0, log=lambda message: None
    )
    with open(out / "log.csv", newline="") as f:
        values = [float(row["val_hole_psnr"]) for row in csv.DictReader(f)]
    best_epoch, trained = expected_stop(values, patience)
    assert trained == len(values) < config.epochs
    assert metrics["epochs"] == trained and metrics["stopped_early"]
    assert metrics["best_epoch"] == best_epoch
    assert metrics["n_train"] == 58 and metrics["n_valid"] == 6

    def discriminators(weights_file=None):
        model = keras.models.load_model(out / "model.keras")
        if weights_file is not None:
            model.load_weights(out / "checkpoints" / weights_file)
        return [
            keras.ops.convert_to_numpy(w)
            for name in ("local_discriminator", "global_discriminator")
            for w in getattr(model, name).weights
        ]

    saved = discriminators()
    best = discriminators(f"best-{best_epoch:04d}.weights.h5")
    last = discriminators(f"epoch-{trained - 1:04d}.weights.h5")
    assert all(np.array_equal(a, b) for a, b in zip(saved, best, strict=True))
    assert not all(np.array_equal(a, b) for a, b in zip(saved, last, strict=True))


def refused(argv, capsys, tmp_path):
    try:
        code = cli.main(
            inpaint.EXPERIMENT, [*argv, "--smoke", "--output-dir", str(tmp_path / "r")]
        )
    except SystemExit as exit_info:
        code = exit_info.code
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert not (tmp_path / "r").exists()
    return code, err


@pytest.mark.parametrize(
    "argv, words",
    [
        (["--patience", "0"], ["patience", "Received: patience=0"]),
        (["--patience", "-3"], ["patience", "-3"]),
        (["--patience", "2", "--set", "valid_fraction=1.0"], ["valid_fraction", "1.0"]),
        (["--patience", "2", "--set", "valid_fraction=0"], ["valid_fraction"]),
        (["--patience", "2", "--tune"], ["--tune", "--patience", "patience=2"]),
        # 1 image: holding one out leaves none to train on.
        (["--patience", "2", "--n-train", "1"], ["--patience", "valid_fraction"]),
    ],
)
def test_bad_patience_settings_are_refused_before_training(
    argv, words, capsys, tmp_path
):
    code, err = refused(argv, capsys, tmp_path)
    assert code == 2, err
    for word in words:
        assert word in err, (word, err)
