"""Use of the `SaliencyNetwork` that makes CRAM's classification clue (Chung &
Cho 2018, Section V-A): clues thresholded from its probabilities, their IoU
against the masks it learned, and the file that keeps them (`save_clues`,
`load_clues`: one bit per pixel). Its training (Adam on binary
cross-entropy, best epoch by validation loss) is a resumable stage of the
classification run: `cram_keras.experiments.saliency.SaliencyStage`.
"""

import keras
import numpy as np

from cram_keras.data.pipelines import as_float
from cram_keras.utils import atomic_path


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


def save_clues(path, clues):
    """Writes `{split: uint8 {0, 1} clues}` to the `.npz` file `path`
    atomically, packed to one bit per pixel."""
    packed = {f"{s}_bits": np.packbits(c.reshape(-1)) for s, c in clues.items()}
    shapes = {f"{s}_shape": np.array(c.shape) for s, c in clues.items()}
    with atomic_path(path) as tmp:
        np.savez(tmp, **packed, **shapes)


def load_clues(path, splits):
    """`{split: uint8 clues}` of the `splits` stored by `save_clues`."""
    with np.load(path) as f:
        return {
            s: np.unpackbits(f[f"{s}_bits"], count=int(np.prod(f[f"{s}_shape"])))
            .reshape(tuple(f[f"{s}_shape"]))
            .astype(np.uint8)
            for s in splits
        }
