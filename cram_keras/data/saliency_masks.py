"""The masks CRAM's saliency network learns (the classification clue):
the generator's ground-truth digit masks or, for SVHN, which has none,
contrast pseudo-masks (the "background prior" of classical saliency
detection)."""

import numpy as np


def contrast_pseudo_masks(images, chunk=8192):
    """Rough saliency masks for SVHN crops, without labels (background prior).

    Grey level `g` (channel mean, [0, 1]); background `b` = the median of the
    image's 1-pixel border; contrast `d = |g - b|`; a pixel is salient where
    `d > 0.5 * percentile_99(d)` and the image has some contrast
    (`percentile_99(d) > 0.05`). SVHN crops are centred on a digit whose
    colour differs from its surroundings, so this marks the digit strokes
    (and parts of neighbouring digits): a rough clue, as the paper's.

    Args:
        images: uint8 (N, H, W, C).

    Returns:
        uint8 (N, H, W, 1) in {0, 1}.
    """
    out = np.empty(images.shape[:3] + (1,), np.uint8)
    for start in range(0, len(images), chunk):
        grey = images[start : start + chunk].astype(np.float32).mean(-1) / 255.0
        border = np.concatenate(
            [grey[:, 0, :], grey[:, -1, :], grey[:, 1:-1, 0], grey[:, 1:-1, -1]], axis=1
        )
        contrast = np.abs(grey - np.median(border, axis=1)[:, None, None])
        peak = np.percentile(contrast.reshape(len(grey), -1), 99, axis=1)[:, None, None]
        mask = (contrast > 0.5 * peak) & (peak > 0.05)
        out[start : start + chunk, ..., 0] = mask
    return out


def saliency_targets(splits, pseudo_masks=False):
    """`{split: masks}` the saliency network learns: each split's ground-truth
    `"saliency"` masks, or (`pseudo_masks=True`, for SVHN) the
    `contrast_pseudo_masks` of its `"images"`."""
    if pseudo_masks:
        return {s: contrast_pseudo_masks(splits[s]["images"]) for s in splits}
    return {s: splits[s]["saliency"] for s in splits}
