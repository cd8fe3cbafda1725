"""Use of the `SaliencyNetwork` that makes CRAM's classification clue (Chung &
Cho 2018, Section V-A): clues thresholded from its probabilities, and their
IoU against the masks it learned. Its training (Adam on binary
cross-entropy, best epoch by validation loss) is a resumable stage of the
classification run: `cram_keras.experiments.cram_cls.SaliencyStage`.
"""

import keras
import numpy as np

from cram_keras.data.pipelines import as_float


def saliency_clues(net, images, threshold=0.5, batch_size=256):
    """Binary clues `net(images) > threshold`, uint8 (N, H, W, 1)."""
    out = np.empty(images.shape[:3] + (1,), np.uint8)
    for start in range(0, len(images), batch_size):
        x = as_float(images[start : start + batch_size])
        probs = keras.ops.convert_to_numpy(net(x, training=False))
        out[start : start + batch_size] = probs > threshold
    return out


def mask_iou(predicted, target):
    """Mean over images of |P & T| / |P | T| (1 where both masks are empty)."""
    p = np.asarray(predicted).reshape(len(predicted), -1) > 0
    t = np.asarray(target).reshape(len(target), -1) > 0
    inter = np.logical_and(p, t).sum(1)
    union = np.logical_or(p, t).sum(1)
    iou = np.where(union > 0, inter / np.maximum(union, 1), 1.0)
    return float(iou.mean()) if len(iou) else float("nan")
