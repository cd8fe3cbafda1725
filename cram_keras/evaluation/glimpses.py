"""Where CRAM's glimpses go: statistics of their parameters (NumPy), and of
a classifier's glimpses on a split (`glimpse_statistics`).

A glimpse `tau = (s, tx, ty)` (the `attention` transform, normalised
coordinates, x first, `align_corners=False`) samples the window
`[tx - s, tx + s] x [ty - s, ty + s]` of the image. In pixels of an image of
width W, the normalised coordinate u lies at `(u + 1) * W / 2` (pixel
edges at integers, pixel j's centre at j + 0.5), so the window spans
columns `(tx - s + 1) * W / 2` to `(tx + s + 1) * W / 2`.
"""

import keras
import numpy as np

from cram_keras.data.pipelines import as_float, clue_batch
from cram_keras.losses import clue_loss


def window_boxes(taus, height, width):
    """Pixel boxes `(x0, y0, x1, y1)` (edges) of glimpses (..., 3) -> (..., 4)."""
    taus = np.asarray(taus, np.float64)
    s, tx, ty = taus[..., 0], taus[..., 1], taus[..., 2]
    return np.stack(
        [
            (tx - s + 1.0) * width / 2.0,
            (ty - s + 1.0) * height / 2.0,
            (tx + s + 1.0) * width / 2.0,
            (ty + s + 1.0) * height / 2.0,
        ],
        axis=-1,
    )


def ring(masks, width=2):
    """The `width`-pixel ring around each hole (8-connected dilation of the
    mask minus the mask): bool (N, H, W) from masks (N, H, W[, 1]), 1 = hole."""
    hole = np.asarray(masks) > 0.5
    if hole.ndim == 4:
        hole = hole[..., 0]
    grown = hole.copy()
    for _ in range(width):
        padded = np.pad(grown, ((0, 0), (1, 1), (1, 1)))
        neighbours = [
            padded[
                :, 1 + dy : padded.shape[1] - 1 + dy, 1 + dx : padded.shape[2] - 1 + dx
            ]
            for dy in (-1, 0, 1)
            for dx in (-1, 0, 1)
        ]
        grown = np.logical_or.reduce(neighbours)
    return grown & ~hole


def union_covers(boxes, height, width):
    """bool (N, H, W): pixel centres inside at least one of the (N, G, 4) boxes."""
    ys = np.arange(height) + 0.5
    xs = np.arange(width) + 0.5
    x0, y0, x1, y1 = (boxes[..., i][..., None, None] for i in range(4))
    inside = (
        (xs[None, None, None, :] >= x0)
        & (xs[None, None, None, :] <= x1)
        & (ys[None, None, :, None] >= y0)
        & (ys[None, None, :, None] <= y1)
    )
    return inside.any(axis=1)


def window_statistics(taus, masks, ring_width=2):
    """Statistics of the glimpse windows `taus` (N, G, 3) over holes `masks`
    (N, H, W[, 1]):

    - `mean_scale`: mean s (half the window side over the image side);
    - `mean_pairwise_distance_px`: mean distance between the window centres
      of two glimpses of the same image, over all pairs, in pixels (0 when
      every glimpse looks at the same place; None for one glimpse);
    - `ring_coverage`: the fraction of the hole's `ring_width`-pixel ring whose
      pixel centres the union of the windows covers, averaged over images;
    - `hole_coverage`: the same for the hole itself.
    """
    taus = np.asarray(taus, np.float64)
    masks = np.asarray(masks)
    height, width = masks.shape[1:3]
    boxes = window_boxes(taus, height, width)
    centres = np.stack(
        [(boxes[..., 0] + boxes[..., 2]) / 2, (boxes[..., 1] + boxes[..., 3]) / 2], -1
    )
    glimpses = taus.shape[1]
    if glimpses > 1:
        i, j = np.triu_indices(glimpses, k=1)
        distances = np.linalg.norm(centres[:, i] - centres[:, j], axis=-1)
        pairwise = float(distances.mean())
    else:
        pairwise = None
    covered = union_covers(boxes, height, width)
    rings = ring(masks, ring_width)
    hole = (masks[..., 0] if masks.ndim == 4 else masks) > 0.5

    def fraction(region):
        counts = region.sum(axis=(1, 2))
        hits = (covered & region).sum(axis=(1, 2))
        valid = counts > 0
        return float((hits[valid] / counts[valid]).mean()) if valid.any() else None

    return {
        "mean_scale": float(taus[..., 0].mean()),
        "mean_pairwise_distance_px": pairwise,
        "ring_coverage": fraction(rings),
        "hole_coverage": fraction(hole),
        "ring_width_px": ring_width,
    }


def affine_window_area(thetas):
    """Area of the region an affine transform samples, as a fraction of the
    image: (..., 2, 3) or (..., 6) matrices (normalised coordinates) -> (...).

    The output grid spans the square [-1, 1]^2; the transform maps it to the
    parallelogram `A [-1, 1]^2 + t` of the input, whose area over the input's
    (also 4 in normalised units) is `|det A|`. A value below 1 is a zoom in
    (a crop smaller than the image), above 1 a zoom out; the parts of the
    window that fall outside the image are counted.
    """
    thetas = np.asarray(thetas, np.float64)
    if thetas.shape[-2:] != (2, 3):
        thetas = thetas.reshape(thetas.shape[:-1] + (2, 3))
    return np.abs(
        thetas[..., 0, 0] * thetas[..., 1, 1] - thetas[..., 0, 1] * thetas[..., 1, 0]
    )


def predict_glimpses(model, images, clues, batch_size=256):
    """`(logits, tau, patches)` of a `CRAMClassifier` for uint8 images and
    clues (None: zeros), in batches."""
    outputs = []
    for start in range(0, len(images), batch_size):
        index = slice(start, start + batch_size)
        x = as_float(images[index])
        c = clue_batch(clues, images, index)
        outputs.append(
            [
                keras.ops.convert_to_numpy(t)
                for t in model([x, c], training=False, return_glimpses=True)
            ]
        )
    return tuple(np.concatenate(parts) for parts in zip(*outputs, strict=True))


def box_masks(boxes, height, width):
    """(N, H, W, 1) float32 masks, 1 inside each (y0, x0, y1, x1) box."""
    ys = np.arange(height)[None, :, None]
    xs = np.arange(width)[None, None, :]
    b = np.asarray(boxes)[:, :, None, None]
    inside = (ys >= b[:, 0]) & (ys < b[:, 2]) & (xs >= b[:, 1]) & (xs < b[:, 3])
    return inside[..., None].astype("float32")


def glimpse_statistics(model, split, clues, limit=2000):
    """Where a `CRAMClassifier`'s glimpses went on the first `limit` images
    of a split (`{"images", "boxes"}`, boxes None where unknown).

    `glimpse_in_digit_box`: mean fraction of the glimpse area inside the
    digit's 28x28 frame (ground truth; cluttered MNIST only);
    `glimpse_scale`: mean half-size `s` of the glimpse window (1 = the image).
    """
    images = split["images"][:limit]
    clue = None if clues is None else clues[:limit]
    _, tau, _ = predict_glimpses(model, images, clue)
    stats = {"glimpse_scale": float(tau[..., 0].mean())}
    if split["boxes"] is not None:
        masks = box_masks(split["boxes"][:limit], *images.shape[1:3])
        outside = clue_loss(masks, tau, model.encoder.glimpse_size)
        stats["glimpse_in_digit_box"] = 1.0 - float(keras.ops.convert_to_numpy(outside))
    return stats
