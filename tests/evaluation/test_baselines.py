"""Tests of the classical inpainting baselines and the shared scorer."""

import numpy as np
import pytest

from cram_keras.data.masks import center_mask, random_rectangle_masks
from cram_keras.evaluation.baselines import (
    BASELINES,
    evaluate_inpainting,
    mean_fill,
    navier_stokes_inpaint,
    telea_inpaint,
)


def random_images(n=3, channels=3, seed=0):
    return np.random.default_rng(seed).random((n, 32, 32, channels)).astype(np.float32)


@pytest.mark.parametrize("name", sorted(BASELINES))
@pytest.mark.parametrize("channels", [1, 3])
def test_baselines_leave_pixels_outside_the_hole_untouched(name, channels):
    images = random_images(channels=channels)
    masks = random_rectangle_masks(3, seed=1)
    filled = BASELINES[name](images, masks)
    assert filled.shape == images.shape
    assert filled.dtype == np.float32
    outside = np.broadcast_to(masks == 0, images.shape)
    np.testing.assert_array_equal(filled[outside], images[outside])
    assert filled.min() >= 0.0 and filled.max() <= 1.0


def test_mean_fill_uses_each_images_visible_mean_colour():
    images = random_images(n=2)
    masks = random_rectangle_masks(2, seed=5)
    filled = mean_fill(images, masks)
    for i in range(2):
        hole = masks[i, :, :, 0] == 1
        visible_mean = images[i][~hole].mean(axis=0)  # (3,): per channel.
        np.testing.assert_allclose(
            filled[i][hole], np.broadcast_to(visible_mean, (hole.sum(), 3)), rtol=1e-6
        )


def test_mean_fill_needs_visible_pixels():
    with pytest.raises(ValueError, match="visible pixels"):
        mean_fill(random_images(n=1), np.ones((32, 32, 1)))


@pytest.mark.parametrize(
    "method, tolerance",
    [
        (navier_stokes_inpaint, 1e-7),
        # OpenCV's Telea (5.0) rounds its gradient term: a few hole pixels of
        # a constant image come out 1-2 grey levels off.
        (telea_inpaint, 2.5 / 255),
    ],
)
def test_opencv_methods_reproduce_a_constant_image(method, tolerance):
    images = np.full((2, 32, 32, 3), 100 / 255, np.float32)
    filled = method(images, center_mask())
    np.testing.assert_allclose(filled, images, atol=tolerance)
    np.testing.assert_allclose(filled.mean(), 100 / 255, atol=0.1 / 255)


def test_opencv_methods_fill_the_hole_from_its_surroundings():
    # Left half dark, right half bright: the filled hole keeps that split.
    images = np.zeros((1, 32, 32, 1), np.float32)
    images[:, :, 16:] = 1.0
    filled = telea_inpaint(images, center_mask())
    assert filled[0, 12:20, 12, 0].max() < 0.5 < filled[0, 12:20, 19, 0].min()


def test_inputs_are_validated():
    images = random_images(n=2)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        telea_inpaint(images * 255, center_mask())
    with pytest.raises(ValueError, match=r"masks.shape=\(3, 32, 32, 1\)"):
        mean_fill(images, random_rectangle_masks(3, seed=0))
    with pytest.raises(ValueError, match="radius=0"):
        telea_inpaint(images, center_mask(), radius=0)
    with pytest.raises(ValueError, match="1- or 3-channel"):
        telea_inpaint(random_images(n=1, channels=2), center_mask())


def test_evaluate_inpainting_scores_known_completions():
    y_true = random_images(n=4) * 0.5
    mask = center_mask()
    perfect = evaluate_inpainting(y_true, y_true, mask)
    assert set(perfect) == {"hole_psnr", "hole_l1", "ssim"}
    assert all(isinstance(v, np.floating) for v in perfect.values())
    np.testing.assert_allclose(perfect["hole_psnr"], 100.0, atol=1e-3)
    assert perfect["hole_l1"] == 0.0
    np.testing.assert_allclose(perfect["ssim"], 1.0, atol=1e-6)

    off_by = y_true + 0.1 * mask  # Constant error 0.1 in the hole only.
    scores = evaluate_inpainting(y_true, off_by, mask)
    np.testing.assert_allclose(scores["hole_psnr"], 20.0, atol=1e-3)
    np.testing.assert_allclose(scores["hole_l1"], 0.1, atol=1e-6)
    assert scores["ssim"] < 1.0
    # Scoring in batches gives the same means.
    in_batches = evaluate_inpainting(
        y_true, off_by, np.repeat(mask[None], 4, axis=0), batch_size=3
    )
    for name in scores:
        np.testing.assert_allclose(in_batches[name], scores[name], rtol=1e-6)
