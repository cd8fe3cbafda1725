"""Figures of the three experiments: attended boxes over the inputs, the
crops a transformer produced (RNN-SPN, Fig. 3), CRAM's glimpses over the
input and the clue (PNG and animated GIF), and CRAM's inpainting (Fig. 7)."""

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

    One image of tiles on a single axes (`tile_mosaic`); the crops are shown
    at the input's size (nearest neighbour), each row's label and prediction
    on its left.

    Args:
        images: (N, H, W, C) in [0, 1].
        thetas: (N, T, 2, 3) affine matrices, or None for a model without
            a transformer.
        crops: (N, T, h, w, C) or None.
        labels, predictions: (N, T) integers.
        path: PNG file to write.
    """
    images = np.clip(np.asarray(images, np.float32), 0.0, 1.0)
    height, width = images.shape[1:3]
    steps = 0 if crops is None else crops.shape[1]
    columns = [("input", "black", images), ("windows", "black", images)]
    columns += [
        (
            f"crop {t + 1}",
            _COLORS[t % len(_COLORS)],
            _resize_nearest(np.clip(crops[:, t], 0.0, 1.0), height, width),
        )
        for t in range(steps)
    ]
    rows = [
        f"label {''.join(map(str, label))}\npred {''.join(map(str, pred))}"
        for label, pred in zip(labels, predictions, strict=True)
    ]
    fig, ax, (step_y, step_x) = _mosaic_figure(columns, rows, tile_inches=1.6)
    if thetas is not None:
        for i in range(len(images)):
            for t in range(thetas.shape[1]):
                outline = transform_outline(thetas[i, t], height, width, align_corners)
                _draw_outline(
                    ax,
                    outline,
                    (i * step_y, step_x),
                    (height, width),
                    color=_COLORS[t % len(_COLORS)],
                    lw=1.2,
                )
    if title:
        ax.set_title(title, fontsize=9)
    _save(fig, path, dpi=110)
    return path


def _save(fig, path, dpi):
    """Lays `fig` out, writes it to `path` and closes it."""
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    plt.close(fig)


def _resize_nearest(tiles, height, width):
    """(N, h, w, C) -> (N, height, width, C), nearest neighbour: each output
    pixel shows the input pixel its centre falls in (what `imshow` does when
    it stretches a small image over a larger axes)."""
    tiles = np.asarray(tiles)
    rows = np.floor((np.arange(height) + 0.5) * tiles.shape[1] / height).astype(int)
    cols = np.floor((np.arange(width) + 0.5) * tiles.shape[2] / width).astype(int)
    return tiles[:, rows][:, :, cols]


def _mosaic_figure(columns, row_labels=None, tile_inches=1.5, gap=2):
    """One axes showing `columns` as a `tile_mosaic`: each column is
    `(title, colour, tiles (N, H, W, C))`; the titles become coloured top
    tick labels and `row_labels` (one string per row) left tick labels.

    Returns:
        `(fig, ax, step)`, `step` the offset (rows, columns) between tiles.
    """
    tiles = [np.asarray(tiles, np.float32) for _, _, tiles in columns]
    channels = max(t.shape[-1] for t in tiles)  # Grey tiles beside RGB: repeated.
    tiles = [t if t.shape[-1] == channels else t.repeat(channels, -1) for t in tiles]
    mosaic, step = tile_mosaic(tiles, gap=gap)
    n, (height, width) = tiles[0].shape[0], tiles[0].shape[1:3]
    label_inches = 0.0 if row_labels is None else 0.9
    fig, ax = plt.subplots(
        figsize=(tile_inches * len(columns) + label_inches, tile_inches * n + 0.3)
    )
    ax.imshow(
        mosaic[..., 0] if channels == 1 else mosaic,
        cmap="gray",
        vmin=0,
        vmax=1,
        interpolation="nearest",
    )
    # Column titles as top tick labels, row labels as left ones, no ticks.
    ax.xaxis.tick_top()
    ax.set_xticks([j * step[1] + (width - 1) / 2 for j in range(len(columns))])
    ax.set_xticklabels([name for name, _, _ in columns], fontsize=8)
    for label, (_, color, _) in zip(ax.get_xticklabels(), columns, strict=True):
        label.set_color(color)
    if row_labels is None:
        ax.set_yticks([])
    else:
        ax.set_yticks([i * step[0] + (height - 1) / 2 for i in range(n)])
        ax.set_yticklabels(row_labels, fontsize=7)
    ax.tick_params(length=0)
    for spine in ax.spines.values():
        spine.set_visible(False)
    ax.set_xlim(-0.5, mosaic.shape[1] - 0.5)
    ax.set_ylim(mosaic.shape[0] - 0.5, -0.5)
    return fig, ax, step


def _draw_outline(ax, outline, offset, size, **style):
    """`outline` (K, 2) drawn on the tile at `offset` (row, column pixels) of
    a mosaic, clipped to that tile of `size` (height, width)."""
    from matplotlib.patches import Rectangle

    oy, ox = offset
    tile = Rectangle((ox - 0.5, oy - 0.5), size[1], size[0], transform=ax.transData)
    (line,) = ax.plot(outline[:, 0] + ox, outline[:, 1] + oy, **style)
    line.set_clip_path(tile)
    return line


def attention_figure(model, images, labels, path, align_corners=False):
    """Fig. 3 of the RNN-SPN paper for `model` (an RNN-SPN, FFN-SPN or any
    model; one without `transforms` gets no boxes and crops) on a few images
    (uint8 or float in [0, 1]) and their (N, T) labels."""
    import keras

    from cram_keras.data.pipelines import as_float

    x = as_float(images)
    if hasattr(model, "transforms"):
        logits, thetas = model(x, training=False, return_transforms=True)
        crops = keras.ops.convert_to_numpy(model.crops(x))
        thetas = keras.ops.convert_to_numpy(thetas)
    else:
        logits, thetas, crops = model(x, training=False), None, None
    predictions = np.argmax(keras.ops.convert_to_numpy(logits), axis=-1)
    return plot_attention(
        x, thetas, crops, labels, predictions, path, align_corners=align_corners
    )


# === CRAM classification: glimpses ===


def _theta(tau):
    """CRAM's glimpse `(s, tx, ty)` as the affine matrix (2, 3) it samples with."""
    s, tx, ty = tau
    return np.array([[s, 0.0, tx], [0.0, s, ty]])


def _draw_glimpses(images, clues, labels, predictions, taus, patches, upto, title=None):
    """The glimpse figure up to step `upto` (later glimpses' tiles grey), as
    one mosaic on a single axes (`_mosaic_figure`)."""
    images = np.clip(np.asarray(images, np.float32), 0.0, 1.0)
    n, steps = taus.shape[0], taus.shape[1]
    colors = plt.get_cmap("tab10")
    height, width = images.shape[1:3]
    columns = [("input", "black", images), ("clue", "black", clues)]
    for t in range(steps):
        tiles = _resize_nearest(np.clip(patches[:, t], 0.0, 1.0), height, width)
        if t > upto:
            tiles = np.full_like(tiles, 0.92)
        columns.append((f"glimpse {t + 1}", colors(t % 10), tiles))
    rows = [
        f"label {label}\npred {pred}"
        for label, pred in zip(labels, predictions, strict=True)
    ]
    fig, ax, (step_y, step_x) = _mosaic_figure(columns, rows, tile_inches=1.5)
    for i in range(n):
        for column in (0, 1):  # Boxes over the input and over the clue.
            for t in range(upto + 1):
                _draw_outline(
                    ax,
                    transform_outline(_theta(taus[i, t]), height, width),
                    (i * step_y, column * step_x),
                    (height, width),
                    color=colors(t % 10),
                    lw=2.0 if t == upto else 1.0,
                )
    if title:
        ax.set_title(title, fontsize=8)
    fig.tight_layout()
    return fig


def plot_glimpses(
    images,
    clues,
    labels,
    predictions,
    taus,
    patches,
    png_path=None,
    gif_path=None,
    title=None,
):
    """Where CRAM looked: boxes over the input and the clue, one crop per step.

    Writes a PNG (every glimpse; box colour = step) and an animated GIF (one
    frame per glimpse, the current box bold).

    Args:
        images: float (N, H, W, C) in [0, 1].
        clues: float (N, H, W, 1).
        labels, predictions: (N,) integers.
        taus: (N, T, 3) glimpses `(s, tx, ty)`; patches: (N, T, h, w, C).
    """
    labels = np.asarray(labels)
    steps = taus.shape[1]
    args = (images, clues, labels, predictions, taus, patches)
    if png_path:
        fig = _draw_glimpses(*args, steps - 1, title)
        fig.savefig(png_path, dpi=110)
        plt.close(fig)
    if gif_path:
        from PIL import Image

        frames = []
        for t in range(steps):
            fig = _draw_glimpses(*args, t, title)
            fig.set_dpi(80)
            fig.canvas.draw()
            frames.append(
                Image.fromarray(np.asarray(fig.canvas.buffer_rgba())[..., :3])
            )
            plt.close(fig)
        durations = [700] * (steps - 1) + [1800]
        frames[0].save(
            gif_path,
            save_all=True,
            append_images=frames[1:],
            duration=durations,
            loop=0,
        )
    return png_path, gif_path


def glimpses_figure(
    model, images, clues, labels, png_path=None, gif_path=None, title=None
):
    """`plot_glimpses` of a `CRAMClassifier` run on `images` (uint8 or
    float) with `clues` (uint8 or float; `None`: zeros)."""
    from cram_keras.data.pipelines import as_float
    from cram_keras.evaluation.glimpses import predict_glimpses

    logits, taus, patches = predict_glimpses(model, images, clues)
    x = as_float(images)
    c = (
        np.zeros(x.shape[:3] + (1,), "float32")
        if clues is None
        else np.asarray(clues, "float32")
    )
    return plot_glimpses(
        x,
        c,
        labels,
        np.argmax(logits, axis=-1),
        taus,
        patches,
        png_path,
        gif_path,
        title,
    )


# === CRAM inpainting ===


def tile_mosaic(columns, gap=2, background=1.0):
    """Images laid out as one array: `columns` is a list of (N, H, W, C)
    arrays, column j of row i at rows `i * (H + gap)` and columns
    `j * (W + gap)`, `background` between the tiles.

    Returns:
        `(mosaic, step)`: the (N (H + gap) - gap, J (W + gap) - gap, C) array
        and `step = (H + gap, W + gap)`, the offset from one tile to the next.
    """
    first = np.asarray(columns[0])
    n, height, width, channels = first.shape
    step = (height + gap, width + gap)
    mosaic = np.full(
        (n * step[0] - gap, len(columns) * step[1] - gap, channels),
        background,
        np.float32,
    )
    for j, column in enumerate(columns):
        column = np.asarray(column)
        if column.shape != first.shape:
            raise ValueError(
                "every column must have the shape of the first. Received: "
                f"column {j} of shape {column.shape}, the first {first.shape}"
            )
        for i in range(n):
            y, x = i * step[0], j * step[1]
            mosaic[y : y + height, x : x + width] = column[i]
    return mosaic, step


def inpainting_figure(model, images, masks, path, extra=None, title=None):
    """Fig. 7 of the CRAM paper: ground truth | input | generated | completed.

    The input column shows the hole in grey (the encoder sees zeros there)
    and, for CRAM, the glimpse windows (one colour per glimpse). `extra`
    maps column titles to more completed images (other methods). `model` is
    a `CRAMInpainter` (its `infer` is called). Drawn as one image of
    tiles (`tile_mosaic`) on a single axes: a grid of axes costs seconds per
    figure, and the training runs draw one every epoch.

    Returns:
        `(path, strips)`: the strips (N, H, 4 W, C) are the four columns side
        by side (for TensorBoard).
    """
    images = np.asarray(images, np.float32)
    masks = np.asarray(masks, np.float32)
    generated, tau = model.infer(images, masks)
    completed = images * (1.0 - masks) + generated * masks
    columns = [
        ("ground truth", images),
        ("input", images * (1.0 - masks) + 0.5 * masks),
        ("generated", generated),
        ("completed", completed),
    ]
    columns += list((extra or {}).items())
    n = len(images)
    height, width = images.shape[1:3]
    fig, ax, (step_y, step_x) = _mosaic_figure(
        [(name, "black", np.clip(column, 0.0, 1.0)) for name, column in columns]
    )
    if tau is not None:
        for i in range(n):
            # On the input tile of row i, clipped to it.
            for t, glimpse in enumerate(tau[i]):
                _draw_outline(
                    ax,
                    transform_outline(_theta(glimpse), height, width),
                    (i * step_y, step_x),
                    (height, width),
                    lw=0.8,
                    color=_COLORS[t % len(_COLORS)],
                )
    if title:  # Placed above the column titles (the top tick labels).
        ax.set_title(title, fontsize=9)
    _save(fig, path, dpi=100)
    return path, np.concatenate([images, columns[1][1], generated, completed], axis=2)


# === CRAM inpainting: glimpse windows ===


def glimpse_windows_figure(images, masks, taus, path, title=None):
    """The glimpse windows (one colour per glimpse, numbered) over test images
    with the hole outlined in white: where the inpainter's encoder looked."""
    from matplotlib.patches import Rectangle

    from cram_keras.evaluation.glimpses import window_boxes

    images = np.asarray(images, np.float32)
    n = len(images)
    height, width = images.shape[1:3]
    boxes = window_boxes(taus, height, width)
    colors = plt.get_cmap("tab10")
    fig, axes = plt.subplots(1, n, figsize=(2.0 * n, 2.4), squeeze=False)
    for i, ax in enumerate(axes[0]):
        image = images[i, ..., 0] if images.shape[-1] == 1 else images[i]
        ax.imshow(np.clip(image, 0, 1), cmap="gray", vmin=0, vmax=1)
        ax.contour(np.asarray(masks[i])[..., 0], levels=[0.5], colors="white",
                   linewidths=0.8)  # fmt: skip
        # Pixel edges sit at -0.5 in imshow's coordinates.
        for g, (x0, y0, x1, y1) in enumerate(boxes[i]):
            ax.add_patch(
                Rectangle(
                    (x0 - 0.5, y0 - 0.5),
                    x1 - x0,
                    y1 - y0,
                    fill=False,
                    edgecolor=colors(g % 10),
                    linewidth=1.2,
                )  # fmt: skip
            )
            # Numbers side by side, so that stacked windows stay readable.
            ax.text(
                x0 + 0.2 + 2.2 * g,
                y0 + 1.8,
                str(g + 1),
                color=colors(g % 10),
                fontsize=7,
            )
        ax.set_xlim(-0.5, width - 0.5)
        ax.set_ylim(height - 0.5, -0.5)
        ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=8)
    _save(fig, path, dpi=100)
    return path
