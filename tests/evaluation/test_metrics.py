"""Tests of the inpainting metrics against hand-computed values and references."""

import numpy as np
import pytest
import tensorflow as tf
from keras import ops
from skimage.metrics import structural_similarity

from cram_keras.data.masks import center_mask
from cram_keras.evaluation.metrics import (
    PSNR_CAP_DB,
    completed_image,
    hole_l1,
    hole_psnr,
    ssim,
)


def numpy(x):
    return ops.convert_to_numpy(x)


def with_hole_error(errors, outside_error=0.5, channels=3):
    """Images whose hole (centred 8x8) differs by +-errors[b], the rest by
    `outside_error` (which the hole metrics must ignore)."""
    rng = np.random.default_rng(0)
    y_true = rng.uniform(0.0, 0.4, (len(errors), 32, 32, channels)).astype(np.float32)
    mask = center_mask()
    signs = rng.choice([-1.0, 1.0], y_true.shape)
    delta = np.where(mask > 0, np.asarray(errors)[:, None, None, None], outside_error)
    y_pred = (y_true + signs * delta).astype(np.float32)
    return y_true, y_pred, mask


def test_hole_psnr_of_a_constant_hole_error():
    y_true, y_pred, mask = with_hole_error([0.1, 0.01, 0.25])
    # MSE = e**2, so PSNR = -20 log10(e): 20 dB, 40 dB, 12.04 dB.
    expected = [20.0, 40.0, -20.0 * np.log10(0.25)]
    np.testing.assert_allclose(
        numpy(hole_psnr(y_true, y_pred, mask)), expected, atol=1e-3
    )
    batch_mask = np.repeat(mask[None], 3, axis=0)
    np.testing.assert_allclose(
        numpy(hole_psnr(y_true, y_pred, batch_mask)), expected, atol=1e-3
    )
    # max_val scales out: the same images in 0..255.
    np.testing.assert_allclose(
        numpy(hole_psnr(255 * y_true, 255 * y_pred, mask, max_val=255.0)),
        expected,
        atol=1e-3,
    )


def test_hole_metrics_average_over_channels():
    y_true = np.zeros((1, 32, 32, 3), np.float32)
    y_pred = y_true.copy()
    mask = center_mask()
    y_pred[0, 12:20, 12:20, 1] = 0.3  # Error in one channel of three.
    # MSE = 0.09 / 3 = 0.03; L1 = 0.3 / 3 = 0.1.
    np.testing.assert_allclose(
        numpy(hole_psnr(y_true, y_pred, mask)), [10 * np.log10(1 / 0.03)], atol=1e-4
    )
    np.testing.assert_allclose(numpy(hole_l1(y_true, y_pred, mask)), [0.1], atol=1e-6)


def test_hole_psnr_is_capped_for_a_perfect_hole_and_nan_without_hole():
    y_true, y_pred, mask = with_hole_error([0.0, 0.0])
    np.testing.assert_allclose(
        numpy(hole_psnr(y_true, y_pred, mask)), PSNR_CAP_DB, atol=1e-3
    )
    no_hole = np.zeros_like(mask)
    assert np.all(np.isnan(numpy(hole_psnr(y_true, y_pred, no_hole))))
    assert np.all(np.isnan(numpy(hole_l1(y_true, y_pred, no_hole))))


def test_hole_l1_of_a_constant_hole_error():
    y_true, y_pred, mask = with_hole_error([0.1, 0.25], channels=1)
    np.testing.assert_allclose(
        numpy(hole_l1(y_true, y_pred, mask)), [0.1, 0.25], atol=1e-6
    )


def test_hole_metrics_run_in_a_graph_with_unknown_batch():
    spec = tf.TensorSpec((None, 32, 32, 3), tf.float32)
    mask_spec = tf.TensorSpec((None, 32, 32, 1), tf.float32)
    graph_psnr = tf.function(hole_psnr, input_signature=[spec, spec, mask_spec])
    y_true, y_pred, mask = with_hole_error([0.1, 0.01])
    masks = np.repeat(mask[None], 2, axis=0)
    np.testing.assert_allclose(
        graph_psnr(y_true, y_pred, masks).numpy(), [20.0, 40.0], atol=1e-3
    )
    graph_ssim = tf.function(ssim, input_signature=[spec, spec])
    np.testing.assert_allclose(
        graph_ssim(y_true, y_pred).numpy(), numpy(ssim(y_true, y_pred)), atol=1e-6
    )


@pytest.mark.parametrize("channels", [1, 3])
def test_ssim_matches_skimage_and_tf_image(channels):
    rng = np.random.default_rng(channels)
    y_true = rng.random((3, 32, 32, channels)).astype(np.float32)
    y_pred = np.clip(y_true + rng.normal(0.0, 0.2, y_true.shape), 0.0, 1.0).astype(
        np.float32
    )
    ours = numpy(ssim(y_true, y_pred))
    assert ours.shape == (3,)
    reference = [
        structural_similarity(
            t.astype(np.float64),
            p.astype(np.float64),
            gaussian_weights=True,
            sigma=1.5,
            use_sample_covariance=False,
            data_range=1.0,
            channel_axis=-1,
        )
        for t, p in zip(y_true, y_pred, strict=True)
    ]
    np.testing.assert_allclose(ours, reference, atol=1e-5)
    np.testing.assert_allclose(
        ours, tf.image.ssim(y_true, y_pred, max_val=1.0).numpy(), atol=1e-5
    )
    np.testing.assert_allclose(numpy(ssim(y_true, y_true)), 1.0, atol=1e-6)


def test_ssim_of_0_255_images_uses_max_val_as_the_data_range():
    # K1 and K2 scale with max_val: 0..255 images scored with max_val=255
    # match scikit-image with data_range=255 (and the [0, 1] scores).
    rng = np.random.default_rng(7)
    y_true = rng.random((2, 16, 16, 3)).astype(np.float32)
    y_pred = np.clip(y_true + rng.normal(0.0, 0.1, y_true.shape), 0.0, 1.0).astype(
        np.float32
    )
    ours = numpy(ssim(255.0 * y_true, 255.0 * y_pred, max_val=255.0))
    reference = [
        structural_similarity(
            255.0 * t.astype(np.float64),
            255.0 * p.astype(np.float64),
            gaussian_weights=True,
            sigma=1.5,
            use_sample_covariance=False,
            data_range=255.0,
            channel_axis=-1,
        )
        for t, p in zip(y_true, y_pred, strict=True)
    ]
    np.testing.assert_allclose(ours, reference, atol=1e-5)
    np.testing.assert_allclose(ours, numpy(ssim(y_true, y_pred)), atol=1e-5)
    assert np.all(np.asarray(reference) < 0.95)  # Not trivially 1.


def test_ssim_rejects_images_smaller_than_the_window():
    with pytest.raises(ValueError, match="at least 11x11"):
        ssim(np.zeros((1, 8, 8, 3)), np.zeros((1, 8, 8, 3)))


def test_completed_image_keeps_the_input_outside_the_hole_exactly():
    rng = np.random.default_rng(1)
    images = rng.random((2, 32, 32, 3)).astype(np.float32)
    generated = rng.random((2, 32, 32, 3)).astype(np.float32)
    mask = center_mask()
    completed = numpy(completed_image(images, generated, mask))
    outside = np.broadcast_to(mask == 0, completed.shape)
    np.testing.assert_array_equal(completed[outside], images[outside])
    np.testing.assert_array_equal(completed[~outside], generated[~outside])
