"""Inpainting metrics, per image, in `keras.ops` (any backend, NumPy inputs).

All functions take NHWC batches; `mask` is (B, H, W, 1) or (H, W, 1) with
1 = hole and broadcasts over channels. They return one value per image,
shape (B,), as backend tensors (`keras.ops.convert_to_numpy` for NumPy), so
the same code scores a Keras `test_step` and the NumPy baselines.
"""

import math

import keras
import numpy as np
from keras import ops

# PSNR cap: the hole MSE is clipped below at max_val**2 * 1e-10, so a perfect
# reconstruction scores 100 dB instead of infinity.
PSNR_CAP_DB = 100.0
_MSE_FLOOR = 10.0 ** (-PSNR_CAP_DB / 10.0)

# SSIM constants of Wang et al. (2004), as tf.image.ssim and scikit-image.
SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_K1 = 0.01
SSIM_K2 = 0.03


def hole_psnr(y_true, y_pred, mask, max_val=1.0):
    """Peak signal-to-noise ratio over the hole of each image, in dB.

    `psnr_b = 10 * log10(max_val**2 / max(mse_b, max_val**2 * 1e-10))` with
    `mse_b` the mean squared error over the hole's pixels and channels of
    image b. The clip caps the score at `PSNR_CAP_DB` = 100 dB (a perfect
    hole); an image whose mask has no hole scores NaN.

    Args:
        y_true: ground-truth images (B, H, W, C).
        y_pred: predicted or completed images, same shape.
        mask: (B, H, W, 1) or (H, W, 1), 1 = hole.
        max_val: the largest pixel value (1.0 for [0, 1] images).

    Returns:
        float32 tensor (B,).
    """
    mse = _hole_mean(ops.square(_diff(y_true, y_pred)), mask)
    max_sq = float(max_val) ** 2
    mse = ops.maximum(mse, max_sq * _MSE_FLOOR)
    return 10.0 * ops.log(max_sq / mse) / math.log(10.0)


def hole_l1(y_true, y_pred, mask):
    """Mean absolute error over the hole's pixels and channels of each image.

    This is the CRAM reconstruction loss (paper eq. 12) averaged over the
    hole instead of summed. An image whose mask has no hole scores NaN.

    Args:
        y_true: ground-truth images (B, H, W, C).
        y_pred: predicted or completed images, same shape.
        mask: (B, H, W, 1) or (H, W, 1), 1 = hole.

    Returns:
        float32 tensor (B,).
    """
    return _hole_mean(ops.abs(_diff(y_true, y_pred)), mask)


def ssim(y_true, y_pred, max_val=1.0):
    """Structural similarity of each whole image (Wang et al., 2004).

    `keras.ops.image.ssim` with the constants of Wang et al.: Gaussian window
    of 11x11 taps with sigma 1.5, K1 = 0.01, K2 = 0.03, population
    (co)variances, valid positions only (no padding); the SSIM map is
    averaged over positions and channels. This matches
    `tf.image.ssim(y_true, y_pred, max_val)` and
    `skimage.metrics.structural_similarity(..., gaussian_weights=True,
    sigma=1.5, use_sample_covariance=False, data_range=max_val,
    channel_axis=-1)`. Images must be at least 11x11 (smaller ones are
    refused before the convolution).

    Args:
        y_true: images (B, H, W, C).
        y_pred: images, same shape.
        max_val: the dynamic range of the pixels (1.0 for [0, 1] images).

    Returns:
        float32 tensor (B,).
    """
    y_true = ops.cast(ops.convert_to_tensor(y_true), "float32")
    y_pred = ops.cast(ops.convert_to_tensor(y_pred), "float32")
    shape = y_true.shape
    if len(shape) != 4 or shape[-1] is None:
        raise ValueError(
            "`ssim` expects images (B, H, W, C) with a known channel count. "
            f"Received: shape={shape}"
        )
    for size in shape[1:3]:
        if size is not None and size < SSIM_WINDOW:
            raise ValueError(
                f"`ssim` needs images of at least {SSIM_WINDOW}x{SSIM_WINDOW} "
                f"pixels. Received: shape={shape}"
            )
    return ops.image.ssim(
        y_true,
        y_pred,
        max_val=float(max_val),
        filter_size=SSIM_WINDOW,
        filter_sigma=SSIM_SIGMA,
        k1=SSIM_K1,
        k2=SSIM_K2,
        data_format="channels_last",
    )


def completed_image(images, generated, mask):
    """Pastes the generated hole into the image: `images*(1-mask) + generated*mask`.

    Outside the hole (mask 0) the result equals `images` exactly (for finite
    `generated`); inside (mask 1) it equals `generated`.

    Args:
        images: the original (or occluded) images (B, H, W, C).
        generated: generator output, same shape.
        mask: (B, H, W, 1) or (H, W, 1), 1 = hole.

    Returns:
        float tensor (B, H, W, C).
    """
    images = ops.convert_to_tensor(images)
    generated = ops.convert_to_tensor(generated)
    dtype = _float_dtype(images, generated)
    images = ops.cast(images, dtype)
    generated = ops.cast(generated, dtype)
    mask = ops.cast(ops.convert_to_tensor(mask), dtype)
    return images * (1.0 - mask) + generated * mask


def _diff(y_true, y_pred):
    y_true = ops.cast(ops.convert_to_tensor(y_true), "float32")
    y_pred = ops.cast(ops.convert_to_tensor(y_pred), "float32")
    return y_true - y_pred


def _hole_mean(values, mask):
    """Mean of `values` (B, H, W, C) over the hole pixels and channels."""
    mask = ops.cast(ops.convert_to_tensor(mask), "float32")
    mask = ops.broadcast_to(mask, ops.shape(values))
    total = ops.sum(values * mask, axis=(1, 2, 3))
    count = ops.sum(mask, axis=(1, 2, 3))
    return ops.where(count > 0, total / ops.maximum(count, 1e-12), np.nan)


def _float_dtype(*tensors):
    """The common dtype of `tensors` when it is a float, else float32."""
    dtype = keras.backend.result_type(*(ops.dtype(t) for t in tensors))
    return dtype if "float" in dtype else "float32"
