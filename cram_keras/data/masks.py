"""Occlusion masks for inpainting: the CRAM clue (1 = hole, 0 = visible).

The CRAM paper (section VI-B) occludes the centred 8x8 square of each 32x32
SVHN image (6.25% of the pixels): `center_mask()`. Random rectangles are an
option (`random_rectangle_masks`). Masks are float32 (H, W, 1) or
(N, H, W, 1) arrays of 0s and 1s, so they broadcast over image channels.
"""

import numpy as np

from cram_keras.utils import check_int as _check_int


def center_mask(image_size=32, hole_size=8):
    """The centred square hole of the CRAM inpainting experiment.

    The hole starts at `(image_size - hole_size) // 2` on both axes, so the
    default is rows and columns 12..19 of 32: 64 of 1024 pixels (6.25%).

    Args:
        image_size: side of the square image, in pixels.
        hole_size: side of the square hole, in `1 .. image_size - 1`.

    Returns:
        float32 array (image_size, image_size, 1); 1 inside the hole.
    """
    _check_int("image_size", image_size, low=2)
    _check_int("hole_size", hole_size, low=1, high=image_size - 1)
    mask = np.zeros((image_size, image_size, 1), np.float32)
    start = (image_size - hole_size) // 2
    mask[start : start + hole_size, start : start + hole_size] = 1.0
    return mask


def random_rectangle_masks(n, image_size=32, min_size=4, max_size=16, seed=None):
    """Axis-aligned rectangular holes of random size and position.

    Each mask's height and width are drawn independently and uniformly from
    `min_size .. max_size`, then its top-left corner uniformly among the
    positions that keep the whole rectangle inside the image. The same
    `seed` gives the same masks.

    Args:
        n: number of masks, at least 1.
        image_size: side of the square image, in pixels.
        min_size: smallest hole side, at least 1.
        max_size: largest hole side, in `min_size .. image_size - 1`.
        seed: `None`, an int or a `numpy.random.Generator`.

    Returns:
        float32 array (n, image_size, image_size, 1); 1 inside each hole.
    """
    _check_int("n", n, low=1)
    _check_int("image_size", image_size, low=2)
    _check_int("min_size", min_size, low=1, high=image_size - 1)
    _check_int("max_size", max_size, low=min_size, high=image_size - 1)
    rng = np.random.default_rng(seed)
    heights = rng.integers(min_size, max_size + 1, size=n)
    widths = rng.integers(min_size, max_size + 1, size=n)
    tops = rng.integers(0, image_size - heights + 1)
    lefts = rng.integers(0, image_size - widths + 1)
    masks = np.zeros((n, image_size, image_size, 1), np.float32)
    for i in range(n):
        masks[i, tops[i] : tops[i] + heights[i], lefts[i] : lefts[i] + widths[i]] = 1.0
    return masks


def hole_box(mask):
    """Bounding box of the hole of each mask, for cropping around it.

    Pixels with mask value above 0.5 belong to the hole. Ends are exclusive,
    as in slicing: `image[y0:y1, x0:x1]` is the box.

    Args:
        mask: one mask (H, W) or (H, W, 1), or a batch (N, H, W, 1).

    Returns:
        int64 array `(y0, x0, y1, x1)`: shape (4,) for one mask, (N, 4) for
        a batch.

    Raises:
        ValueError: a mask has no hole, or the shape is not one of the above.
    """
    mask = np.asarray(mask)
    if mask.ndim == 2:
        return hole_box(mask[None, :, :, None])[0]
    if mask.ndim == 3 and mask.shape[-1] == 1:
        return hole_box(mask[None])[0]
    if mask.ndim != 4 or mask.shape[-1] != 1:
        raise ValueError(
            "`mask` must have shape (H, W), (H, W, 1) or (N, H, W, 1). "
            f"Received: mask.shape={mask.shape}"
        )
    hole = mask[..., 0] > 0.5
    rows = hole.any(axis=2)  # (N, H)
    cols = hole.any(axis=1)  # (N, W)
    empty = ~rows.any(axis=1)
    if empty.any():
        raise ValueError(
            "Every mask needs a hole (a value above 0.5) to have a box. "
            f"Received: empty masks at indices {np.flatnonzero(empty).tolist()}"
        )
    height, width = hole.shape[1:]
    y0 = rows.argmax(axis=1)
    y1 = height - rows[:, ::-1].argmax(axis=1)
    x0 = cols.argmax(axis=1)
    x1 = width - cols[:, ::-1].argmax(axis=1)
    return np.stack([y0, x0, y1, x1], axis=1).astype(np.int64)
