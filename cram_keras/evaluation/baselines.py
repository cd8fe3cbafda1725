"""Classical inpainting baselines and the shared inpainting scorer.

The CRAM inpainter is compared (docs/design.md, experiment E3) with OpenCV's
Telea (2004) fast marching and Navier-Stokes (Bertalmio et al., 2001)
inpainting and with a mean-colour fill. Every method, the model included, is
scored by `evaluate_inpainting` on completed images, so all are measured the
same way.

Images are float [0, 1] NHWC with 1 or 3 channels; masks are (N, H, W, 1) or
one (H, W, 1) mask for all images, 1 = hole (values above 0.5). Each
baseline returns float32 images equal to the input outside the hole.
"""

import numbers

import cv2
import numpy as np
from keras import ops

from cram_keras.evaluation.metrics import hole_l1, hole_psnr, ssim


def telea_inpaint(images, masks, radius=3):
    """Fills each hole with OpenCV's Telea method (`cv2.INPAINT_TELEA`).

    The images are rounded to uint8 for OpenCV; only the hole pixels of the
    result are kept, the others are the input's exact values.

    Args:
        images: float images in [0, 1], (N, H, W, C) with C in {1, 3}.
        masks: (N, H, W, 1) or (H, W, 1), 1 = hole.
        radius: radius in pixels of the neighbourhood each filled pixel
            draws on.

    Returns:
        float32 array (N, H, W, C) in [0, 1].
    """
    return _opencv_inpaint(images, masks, radius, cv2.INPAINT_TELEA)


def navier_stokes_inpaint(images, masks, radius=3):
    """Fills each hole with OpenCV's Navier-Stokes method (`cv2.INPAINT_NS`).

    Args and returns as `telea_inpaint`.
    """
    return _opencv_inpaint(images, masks, radius, cv2.INPAINT_NS)


def mean_fill(images, masks):
    """Fills each hole with the mean colour of that image's visible pixels.

    Args:
        images: float images in [0, 1], (N, H, W, C).
        masks: (N, H, W, 1) or (H, W, 1), 1 = hole.

    Returns:
        float32 array (N, H, W, C); per image and channel, the hole holds the
        mean over the pixels outside the hole.
    """
    images, hole = _check_inputs(images, masks)
    visible = (~hole).astype(np.float64)
    count = visible.sum(axis=(1, 2))  # (N, 1)
    if np.any(count == 0):
        raise ValueError(
            "`mean_fill` needs visible pixels, but some masks cover the whole "
            f"image: indices {np.flatnonzero(count[:, 0] == 0).tolist()}"
        )
    mean = (images * visible).sum(axis=(1, 2)) / count  # (N, C)
    filled = np.broadcast_to(mean[:, None, None, :], images.shape)
    return np.where(hole, filled, images).astype(np.float32)


def evaluate_inpainting(y_true, y_completed, masks, batch_size=1024):
    """Scores completed images: mean hole PSNR, hole L1 and whole-image SSIM.

    Args:
        y_true: ground-truth images in [0, 1], (N, H, W, C).
        y_completed: completed images (the prediction pasted into the hole,
            see `completed_image`), same shape.
        masks: (N, H, W, 1) or (H, W, 1), 1 = hole.
        batch_size: images scored at a time (bounds memory).

    Returns:
        dict with NumPy float64 values: `hole_psnr` (dB, capped at 100),
        `hole_l1` and `ssim`, each the mean over the N images.
    """
    y_true = np.asarray(y_true, np.float32)
    y_completed = np.asarray(y_completed, np.float32)
    if y_true.ndim != 4 or y_true.shape != y_completed.shape:
        raise ValueError(
            "`y_true` and `y_completed` must be image batches (N, H, W, C) of "
            f"one shape. Received: y_true.shape={y_true.shape}, "
            f"y_completed.shape={y_completed.shape}"
        )
    masks = _broadcast_masks(masks, y_true.shape)
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(
            f"`batch_size` must be a positive int. Received: batch_size={batch_size!r}"
        )
    scores = {"hole_psnr": [], "hole_l1": [], "ssim": []}
    for start in range(0, len(y_true), batch_size):
        batch = slice(start, start + batch_size)
        true, completed, mask = y_true[batch], y_completed[batch], masks[batch]
        scores["hole_psnr"].append(
            ops.convert_to_numpy(hole_psnr(true, completed, mask))
        )
        scores["hole_l1"].append(ops.convert_to_numpy(hole_l1(true, completed, mask)))
        scores["ssim"].append(ops.convert_to_numpy(ssim(true, completed)))
    return {
        name: np.float64(np.mean(np.concatenate(values)))
        for name, values in scores.items()
    }


# Name -> baseline, for experiment scripts that loop over methods.
BASELINES = {
    "telea": telea_inpaint,
    "navier_stokes": navier_stokes_inpaint,
    "mean_fill": mean_fill,
}


def _opencv_inpaint(images, masks, radius, method):
    images, hole = _check_inputs(images, masks)
    if isinstance(radius, bool) or not isinstance(radius, numbers.Real) or radius <= 0:
        raise ValueError(
            f"`radius` must be a positive number. Received: radius={radius!r}"
        )
    channels = images.shape[-1]
    if channels not in (1, 3):
        raise ValueError(
            "OpenCV inpainting takes 1- or 3-channel images. "
            f"Received: images.shape={images.shape}"
        )
    images_u8 = np.round(images * 255.0).astype(np.uint8)
    holes_u8 = hole[..., 0].astype(np.uint8)
    filled = np.empty_like(images_u8)
    for i in range(len(images)):
        source = images_u8[i, :, :, 0] if channels == 1 else images_u8[i]
        result = cv2.inpaint(source, holes_u8[i], float(radius), method)
        filled[i] = result.reshape(images.shape[1:])
    return np.where(hole, filled.astype(np.float32) / 255.0, images).astype(np.float32)


def _check_inputs(images, masks):
    """Validated float images (N, H, W, C) and boolean holes (N, H, W, 1)."""
    images = np.asarray(images)
    if images.ndim != 4 or not np.issubdtype(images.dtype, np.floating):
        raise ValueError(
            "`images` must be float images (N, H, W, C) in [0, 1]. "
            f"Received: dtype={images.dtype}, shape={images.shape}"
        )
    if images.size and (images.min() < 0.0 or images.max() > 1.0):
        raise ValueError(
            "`images` must lie in [0, 1]. "
            f"Received: min={images.min()}, max={images.max()}"
        )
    hole = _broadcast_masks(masks, images.shape) > 0.5
    return images, hole


def _broadcast_masks(masks, image_shape):
    """Masks (N, H, W, 1) for images of `image_shape`, from (H, W, 1) or (N, H, W, 1)."""
    masks = np.asarray(masks, np.float32)
    n, height, width = image_shape[:3]
    if masks.shape == (height, width, 1):
        masks = np.broadcast_to(masks, (n, height, width, 1))
    if masks.shape != (n, height, width, 1):
        raise ValueError(
            f"`masks` must have shape ({n}, {height}, {width}, 1) or "
            f"({height}, {width}, 1) to match the images. "
            f"Received: masks.shape={masks.shape}"
        )
    return masks
