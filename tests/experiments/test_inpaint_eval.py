"""The inpainting experiment's config, data pipeline and scoring protocol:
bad settings are rejected, augmentation only flips / negates the images,
every method is scored on the same masks, and the local crop fits the hole."""

import numpy as np
import pytest

from cram_keras.data.inpainting import evaluation_masks
from cram_keras.data.masks import center_mask
from cram_keras.evaluation.inpainting import score_methods
from cram_keras.experiments import inpaint
from cram_keras.models.inpainting.sizes import local_crop_size
from cram_keras.training.checkpoint import load_inpainter


@pytest.mark.parametrize(
    "overrides, match",
    [
        ({"dataset": "cifar10"}, "dataset='cifar10'"),
        ({"dataset": "npz:"}, "dataset='npz:'"),
        ({"encoder": "ram"}, "encoder='ram'"),
        ({"mask": "square"}, "mask='square'"),
        ({"width": 20}, "width=20"),
        ({"beta": -1.0}, "beta=-1.0"),
        ({"learning_rate": 0.0}, "learning_rate=0.0"),
        ({"min_hole": 9, "max_hole": 8}, "min_hole=9"),
        ({"n_train": 0}, "n_train=0"),
    ],
)
def test_bad_settings_are_rejected(overrides, match):
    with pytest.raises(ValueError, match=match):
        inpaint.Config(**overrides)


def test_defaults_are_the_paper_setting_and_smoke_is_small():
    config = inpaint.Config()
    assert (config.dataset, config.mask, config.hole_size, config.encoder) == (
        "svhn", "center", 8, "cram"
    )  # fmt: skip
    assert (config.epochs, config.alpha, config.beta, config.clue_weight) == (
        50,
        1.0,
        1e-3,
        0.1,
    )
    assert (
        config.method == "cram"
        and inpaint.Config(encoder="cnn").method == "cnn_encoder"
    )
    smoke = inpaint.smoke_config(dataset="mnist32")
    assert smoke.dataset == "mnist32" and smoke.epochs == 2 and smoke.width == 8


def test_every_method_is_scored_on_the_same_masks():
    center = evaluation_masks(inpaint.Config(), 5)
    np.testing.assert_array_equal(center, np.repeat(center_mask()[None], 5, axis=0))
    config = inpaint.Config(mask="random")
    first = evaluation_masks(config, 7)
    np.testing.assert_array_equal(first, evaluation_masks(config, 7))
    assert first.shape == (7, 32, 32, 1) and not np.array_equal(first[0], first[1])
    # Methods differ only in how they fill the hole; with no model, the
    # classical baselines alone are scored.
    x = np.random.default_rng(0).random((6, 32, 32, 3)).astype("float32")
    scores = score_methods(None, x, center[:1].repeat(6, 0), "cram")
    assert set(scores) == {"telea", "navier_stokes", "mean_fill"}


def test_local_crop_holds_the_largest_hole_and_its_margins():
    assert local_crop_size(inpaint.Config()) == 16  # 8 + 2 * 4
    assert local_crop_size(inpaint.Config(mask="random")) == 24  # 16 + 2 * 4
    assert local_crop_size(inpaint.Config(local_margin=0)) == 16  # at least 16
    assert local_crop_size(inpaint.Config(mask="random", local_margin=10)) == 32


def test_augmentation_only_flips_rotates_or_negates_the_images():
    rng = np.random.default_rng(0)
    images = rng.random((16, 32, 32, 3)).astype("float32")
    config = inpaint.Config(augment=True, batch_size=16, mask="random")
    (batch, masks), *_ = list(inpaint.train_dataset(config, images))
    batch, masks = np.asarray(batch), np.asarray(masks)
    assert batch.shape == images.shape and masks.shape == (16, 32, 32, 1)
    variants = []
    for image in images:
        for negative in (image, 1.0 - image):
            for k in range(4):
                rotated = np.rot90(negative, k, axes=(0, 1))
                variants += [rotated, rotated[:, ::-1]]
    variants = np.stack(variants)
    for augmented in batch:
        assert np.min(np.abs(variants - augmented).max(axis=(1, 2, 3))) < 1e-6
    # Not all identical to the originals (16 images, 16 possible variants each).
    assert sum(any(np.allclose(a, x) for x in images) for a in batch) < 16


@pytest.mark.slow
def test_logged_validation_is_the_final_score_on_the_same_images(tmp_path):
    """The per-epoch validation metrics use the final scoring's batch-norm
    statistics: with every test image monitored, the last epoch's logged
    hole PSNR / L1 are the final scores, and the per-epoch figures and
    metrics.json say which statistics they use."""
    import csv

    config = inpaint.smoke_config(
        dataset="mnist32", n_test=24, monitor_examples=24, eval_batch_size=8
    )
    metrics = inpaint.train_and_evaluate(config, str(tmp_path / "run"), smoke=True)
    with open(tmp_path / "run" / "log.csv") as f:
        last = list(csv.DictReader(f))[-1]
    scores = metrics["methods"]["cram"]
    assert abs(float(last["val_hole_psnr"]) - scores["hole_psnr"]) < 1e-3
    assert abs(float(last["val_hole_l1"]) - scores["hole_l1"]) < 1e-5
    assert metrics["batch_norm_statistics"] == "BN recalibrated on 2 training batches"
    # Pathway diagnostics: the unablated PSNR is the score; the ablations and
    # window statistics are there, and the windows figure is drawn.
    diagnostics = metrics["pathway_diagnostics"]
    assert diagnostics["hole_psnr"] == pytest.approx(scores["hole_psnr"], abs=1e-4)
    for key in ("hole_psnr_glimpses_zeroed", "hole_psnr_context_zeroed"):
        assert np.isfinite(diagnostics[key])
    windows = diagnostics["windows"]
    assert 0.0 < windows["mean_scale"] <= 1.0
    assert windows["mean_pairwise_distance_px"] >= 0.0
    assert 0.0 <= windows["ring_coverage"] <= 1.0
    assert (tmp_path / "run" / "glimpse_windows.png").exists()


@pytest.mark.slow
def test_context_skip_variant_trains_scores_reloads_and_diagnoses(tmp_path):
    """`--encoder cram_skip` (beyond the paper): scored as "cram_skip", with
    the skip pathway among the diagnostics, and its model.keras reloads to
    the same completions."""
    import keras

    from cram_keras.models.inpainting import ContextSkipEncoder

    config = inpaint.smoke_config(
        dataset="mnist32", encoder="cram_skip", n_test=16, epochs=1
    )
    metrics = inpaint.train_and_evaluate(config, str(tmp_path / "run"), smoke=True)
    assert set(metrics["methods"]) >= {"cram_skip", "telea"}
    diagnostics = metrics["pathway_diagnostics"]
    assert diagnostics["hole_psnr"] == pytest.approx(
        metrics["methods"]["cram_skip"]["hole_psnr"], abs=1e-4
    )
    assert {"hole_psnr_glimpses_zeroed", "hole_psnr_context_zeroed",
            "hole_psnr_skip_zeroed"} <= set(diagnostics)  # fmt: skip
    model = load_inpainter(str(tmp_path / "run" / "model.keras"))
    assert isinstance(model.encoder, ContextSkipEncoder)
    x = np.random.default_rng(0).random((2, 32, 32, 1)).astype("float32")
    m = np.zeros((2, 32, 32, 1), "float32")
    m[:, 12:20, 12:20] = 1
    z = keras.ops.convert_to_numpy(model.encoder([x * (1 - m), m]))
    assert z.shape == (2, config.core_units + config.core_units // 4)
    cut = keras.ops.convert_to_numpy(model.encoder([x * (1 - m), m], ablate="skip"))
    np.testing.assert_array_equal(cut[:, config.core_units :], 0.0)
    np.testing.assert_allclose(cut[:, : config.core_units], z[:, : config.core_units])
