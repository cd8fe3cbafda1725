"""Figures: attended boxes over inputs and the crops a transformer produced."""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

_COLORS = ("tab:red", "tab:green", "tab:blue", "tab:orange", "tab:purple", "tab:cyan")


def transform_outline(theta, height, width, align_corners=False):
    """Outline of a sampling window in input pixel coordinates.

    Maps the output grid's corners through the affine ``theta`` (2, 3)
    (normalised coordinates, x first, PyTorch convention) and returns the
    closed polygon (5, 2) as (x, y) in ``imshow`` coordinates, where pixel
    ``i`` is centred on ``i``.
    """
    corners = np.array([[-1, -1, 1], [1, -1, 1], [1, 1, 1], [-1, 1, 1], [-1, -1, 1]])
    points = corners @ np.asarray(theta, dtype=np.float64).T  # (5, 2) normalised
    size = np.array([width, height], dtype=np.float64)
    if align_corners:
        # -1 and +1 are the centres of the first and last pixels.
        pixels = (points + 1) / 2 * (size - 1)
    else:
        # -1 and +1 are the outer edges of the first and last pixels.
        pixels = (points + 1) / 2 * size - 0.5
    return pixels


def plot_attention(
    images,
    thetas,
    crops,
    labels,
    predictions,
    path,
    align_corners=False,
    title=None,
):
    """Draws the paper's Fig. 3: input, input with the attended windows, crops.

    Args:
        images: (N, H, W, C) in [0, 1].
        thetas: (N, T, 2, 3) affine matrices, or None for a model without
            a transformer.
        crops: (N, T, h, w, C) or None.
        labels, predictions: (N, T) integers.
        path: PNG file to write.
    """
    images = np.asarray(images)
    n = images.shape[0]
    steps = 0 if crops is None else crops.shape[1]
    cols = 2 + steps
    fig, axes = plt.subplots(n, cols, figsize=(1.9 * cols, 1.9 * n), squeeze=False)
    for i in range(n):
        image = images[i, ..., 0] if images.shape[-1] == 1 else images[i]
        axes[i, 0].imshow(image, cmap="gray", vmin=0, vmax=1)
        axes[i, 0].set_title(f"label {''.join(map(str, labels[i]))}", fontsize=8)
        axes[i, 1].imshow(image, cmap="gray", vmin=0, vmax=1)
        axes[i, 1].set_title(f"pred {''.join(map(str, predictions[i]))}", fontsize=8)
        if thetas is not None:
            for t in range(thetas.shape[1]):
                outline = transform_outline(
                    thetas[i, t], images.shape[1], images.shape[2], align_corners
                )
                axes[i, 1].plot(
                    outline[:, 0],
                    outline[:, 1],
                    color=_COLORS[t % len(_COLORS)],
                    lw=1.2,
                )
            axes[i, 1].set_xlim(-0.5, images.shape[2] - 0.5)
            axes[i, 1].set_ylim(images.shape[1] - 0.5, -0.5)
        for t in range(steps):
            crop = crops[i, t, ..., 0] if crops.shape[-1] == 1 else crops[i, t]
            ax = axes[i, 2 + t]
            ax.imshow(np.clip(crop, 0, 1), cmap="gray", vmin=0, vmax=1)
            ax.set_title(f"crop {t + 1}", fontsize=8, color=_COLORS[t % len(_COLORS)])
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
