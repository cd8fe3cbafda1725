"""The core that the MNIST canvas generators share: the cluttered
sequences of RNN-SPN (`cram_keras.data.cluttered`) and the cluttered
translated digits of RAM and CRAM (`cram_keras.data.translated`).

Each generator places digits and clutter pieces by its own rules; this
module does the rest, the same way for both:

- **Inputs.** `check_inputs` checks the source digits, labels, clutter
  source, sizes and output dtype, and turns images into uint8.
- **Clutter.** `Clutter` draws every piece of every sample (source image,
  crop offset, canvas position) and pastes them.
- **Painting.** Canvases are uint8 and painted `CHUNK` samples at a time
  (`chunks`); `paste` overwrites, or adds with saturation at 255, which is
  `clip(a + b, 0, 1)` on intensities `k / 255`, so the uint8 output is
  exact and the float32 output is that divided by 255 (`store`).
- **Splits.** `load_splits` draws the train, valid and test splits
  from MNIST digit pools and caches them as uint8 in an `.npz` keyed by
  every parameter (`cram_keras.data.cache`).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from cram_keras.data.cache import cache_path, cached_arrays, fingerprint
from cram_keras.data.mnist import FieldsByKey
from cram_keras.data.sources import resolve_mnist, split_digit_pools
from cram_keras.utils import cache_folder, check_int

SPLITS = ("train", "valid", "test")
CHUNK = 4096  # Samples rendered at a time; bounds the scratch memory.
# The smallest value of each size setting of the generators.
SIZE_MINIMUM = {"canvas_size": 1, "num_digits": 1, "num_clutter": 0, "clutter_size": 1}


class Samples(FieldsByKey):
    """A generated set (a dataclass of arrays); its length is the number of
    samples."""

    def __len__(self) -> int:
        return len(self.labels)


# === Inputs ===


def check_inputs(digits, labels, clutter_source, n, dtype, **sizes):
    """The arguments every generator takes, checked in this order.

    Args:
        digits: (M, H, W) or (M, H, W, 1) source digits, uint8 in [0, 255]
            or float in [0, 1].
        labels: (M,) integer classes of `digits`.
        clutter_source: images to cut clutter from (same rules as
            `digits`), or `None` for `digits`.
        n: number of samples.
        dtype: `"float32"` or `"uint8"`, the output dtype.
        **sizes: size settings named in `SIZE_MINIMUM`.

    Returns:
        `(digits, labels, clutter, n, sizes, dtype)`: uint8 (M, H, W)
        digits, int64 labels, the uint8 clutter source, `n`, the sizes as
        ints (in the order given) and the output `np.dtype`.
    """
    digits = _as_uint8_images(digits, "digits")
    clutter = (
        digits
        if clutter_source is None
        else _as_uint8_images(clutter_source, "clutter_source")
    )
    labels = _check_labels(labels, digits)
    n = check_int("n", n, 0)
    sizes = check_sizes(**sizes)
    return digits, labels, clutter, n, sizes, check_dtype(dtype)


def check_sizes(**sizes) -> dict[str, int]:
    """The size settings (names of `SIZE_MINIMUM`) as ints, in the order given."""
    return {
        name: check_int(name, value, SIZE_MINIMUM[name])
        for name, value in sizes.items()
    }


def check_dtype(dtype) -> np.dtype:
    try:
        resolved = np.dtype(dtype)
    except TypeError:
        resolved = None
    if resolved not in (np.dtype(np.float32), np.dtype(np.uint8)):
        raise ValueError(
            f'`dtype` must be "float32" or "uint8". Received: dtype={dtype!r}'
        )
    return resolved


def _as_uint8_images(images, name: str) -> np.ndarray:
    images = np.asarray(images)
    if images.ndim == 4 and images.shape[-1] == 1:
        images = images[..., 0]
    if images.ndim != 3:
        raise ValueError(
            f"`{name}` must be grayscale images of shape (N, H, W) or "
            f"(N, H, W, 1). Received: {name}.shape={images.shape}"
        )
    if images.dtype == np.uint8:
        return images
    if np.issubdtype(images.dtype, np.floating):
        if images.size and (images.min() < 0 or images.max() > 1):
            raise ValueError(
                f"Float `{name}` must lie in [0, 1] (or pass uint8 in "
                f"[0, 255]). Received: min={images.min()}, max={images.max()}"
            )
        return np.rint(images * 255).astype(np.uint8)
    raise ValueError(
        f"`{name}` must be uint8 in [0, 255] or float in [0, 1]. Received: {name}.dtype={images.dtype}"
    )


def _check_labels(labels, digits: np.ndarray) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.shape != (len(digits),) or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(
            f"`labels` must be integers of shape ({len(digits)},), one per "
            f"digit. Received: labels.shape={labels.shape}, "
            f"labels.dtype={labels.dtype}"
        )
    return labels.astype(np.int64)


def check_nonempty(digits: np.ndarray, n: int) -> None:
    if n > 0 and len(digits) == 0:
        raise ValueError("`digits` is empty; there is nothing to place.")


def check_clutter(clutter: np.ndarray, clutter_size: int, canvas_size: int) -> None:
    if len(clutter) == 0:
        raise ValueError(
            "`clutter_source` is empty; there is nothing to cut clutter from."
        )
    if clutter_size > min(clutter.shape[1:]) or clutter_size > canvas_size:
        raise ValueError(
            f"Clutter pieces of {clutter_size}x{clutter_size} px cannot be "
            f"cut from {clutter.shape[1]}x{clutter.shape[2]} px source images "
            f"or laid on a {canvas_size} px canvas. Received: "
            f"clutter_size={clutter_size}. Use a smaller clutter_size."
        )


# === Clutter ===


class Clutter:
    """The clutter pieces of `n` samples, `num_clutter` each, drawn at once.

    `index` is each piece's source image in [0, num_sources), `crop_y` and
    `crop_x` its crop offset in the source, `at_y` and `at_x` its position
    on the canvas: (num_clutter, n) integer arrays, drawn in this order.
    The released RNN-SPN code draws offsets with `randint(size - piece)`
    (upper end excluded); the DeepMind RAM generator includes the upper end
    (`inclusive=True`).
    """

    def __init__(
        self,
        rng,
        source,
        num_sources,
        num_clutter,
        n,
        size,
        canvas_size,
        *,
        inclusive,
    ):
        extra = 1 if inclusive else 0
        shape = (num_clutter, n)

        def offsets(room):
            return rng.integers(0, max(room + extra, 1), size=shape)

        self.index = rng.integers(0, max(num_sources, 1), size=shape)
        self.crop_y = offsets(source.shape[1] - size)
        self.crop_x = offsets(source.shape[2] - size)
        self.at_y = offsets(canvas_size - size)
        self.at_x = offsets(canvas_size - size)
        self._crops = _windows(source, size, size, writeable=False)

    def paste(self, canvas: np.ndarray, chunk: slice, *, add: bool) -> None:
        """Pastes the pieces of the samples `chunk` onto `canvas`, one piece
        of every sample after the other (`paste`)."""
        for k in range(len(self.index)):
            pieces = self._crops[
                self.index[k, chunk], self.crop_y[k, chunk], self.crop_x[k, chunk]
            ]
            paste(canvas, pieces, self.at_y[k, chunk], self.at_x[k, chunk], add=add)


# === Painting ===


def chunks(n: int, canvas_size: int, layers: int = 1):
    """Yields `(chunk, canvases)` for the samples [0, n), `CHUNK` at a time:
    the slice of samples and `layers` uint8 canvases of zeros,
    (layers, len(chunk), S, S), to paint them on."""
    scratch = np.empty(
        (layers, min(n, CHUNK), canvas_size, canvas_size), dtype=np.uint8
    )
    for start in range(0, n, CHUNK):
        stop = min(start + CHUNK, n)
        canvases = scratch[:, : stop - start]
        canvases.fill(0)
        yield slice(start, stop), canvases


def _windows(
    array: np.ndarray, height: int, width: int, *, writeable: bool
) -> np.ndarray:
    """(N, Y, X, height, width) view of every window of an (N, H, W) stack."""
    return np.lib.stride_tricks.sliding_window_view(
        array, (height, width), axis=(1, 2), writeable=writeable
    )


def paste(canvas: np.ndarray, patches: np.ndarray, ys, xs, *, add: bool) -> None:
    """Pastes patches[i] into canvas[i] with its top-left corner at (ys[i], xs[i]).

    `add=False` overwrites; `add=True` adds with saturation at 255, which is
    `clip(a + b, 0, 1)` on intensities `k / 255`.
    """
    rows = np.arange(len(canvas))
    views = _windows(canvas, *patches.shape[1:], writeable=True)
    if add:
        region = views[rows, ys, xs]
        region += np.minimum(patches, 255 - region)
        patches = region
    views[rows, ys, xs] = patches


def store(images: np.ndarray, chunk: slice, canvas: np.ndarray) -> None:
    """Writes uint8 canvases into images[chunk] (uint8, or float32 / 255)."""
    if images.dtype == np.uint8:
        images[chunk, ..., 0] = canvas
    else:
        np.divide(canvas, 255, out=images[chunk, ..., 0], dtype=np.float32)


def frames(ys, xs, height: int, width: int) -> np.ndarray:
    """int64 (..., 4) frames (y0, x0, y1, x1), ends exclusive, of the
    height x width digits whose top-left corners are (ys, xs)."""
    return np.stack([ys, xs, ys + height, xs + width], axis=-1).astype(np.int64)


def _convert(images: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """uint8 (N, S, S) or (N, S, S, 1) images to (N, S, S, 1) in `dtype`
    (uint8, or float32 / 255)."""
    if images.ndim == 3:
        images = images[..., None]
    if dtype == np.uint8:
        return images
    return np.divide(images, 255, dtype=np.float32)


# === Splits ===


def split_sizes(n_train, n_valid, n_test) -> dict[str, int]:
    """`{split: number of samples}`, checked."""
    return {
        "train": check_int("n_train", n_train, 0),
        "valid": check_int("n_valid", n_valid, 0),
        "test": check_int("n_test", n_test, 0),
    }


def load_splits(
    kind,
    make_generator,
    result_type,
    *,
    format_version,
    valid_start,
    sizes,
    seed,
    params,
    dtype,
    masks=(),
    data_dir,
    bundled,
    mnist,
    network_timeout,
    cache_dir,
    use_cache,
    return_source,
):
    """The train, valid and test splits of a set generated from MNIST
    digits, read from the cache or made (and cached): `{split:
    result_type}`, or `(splits, DataSource)` with `return_source`.

    The training split is drawn from MNIST training digits
    `[0, valid_start)`, the validation split from the rest of the training
    set (`split_digit_pools`: the same proportion of the bundled sample),
    the test split from the test set; split k draws from the stream
    `(seed, k)`. `make_generator(mnist, valid_start)` returns the generator,
    called as `generate(digits, labels, n, seed=...)`, whose result holds
    the fields of the dataclass `result_type`; every field is cached (uint8
    for images and masks) and `digit_indices` as indices into the MNIST set
    the split was drawn from. The cache key (and file name prefix) is `kind`
    with `format_version`, the digits' origin and fingerprint, `valid_start`,
    `seed`, the sizes and the generator's `params`. `images` are returned in
    `dtype` (`_convert`), the fields named in `masks` (values 0 and 1) cast
    to it.

    The other arguments are those of the loaders: the digits
    (`resolve_mnist`) and the cache folder (`None`:
    `cram_keras.utils.cache_folder`).
    """
    mnist, source = resolve_mnist(
        data_dir, bundled=bundled, mnist=mnist, network_timeout=network_timeout
    )
    valid_start, source = split_digit_pools(mnist, source, valid_start)
    pools = {
        "train": (mnist.x_train[:valid_start], mnist.y_train[:valid_start], 0),
        "valid": (
            mnist.x_train[valid_start:],
            mnist.y_train[valid_start:],
            valid_start,
        ),
        "test": (mnist.x_test, mnist.y_test, 0),
    }
    names = [field.name for field in dataclasses.fields(result_type)]
    stored = [name for name in names if name != "digit_indices"]

    def create() -> dict[str, np.ndarray]:
        generate = make_generator(mnist, valid_start)
        arrays = {}
        for number, split in enumerate(SPLITS):
            digits, labels, offset = pools[split]
            data = generate(digits, labels, sizes[split], seed=(seed, number))
            for name in stored:
                arrays[f"{split}_{name}"] = data[name]
            arrays[f"{split}_digit_indices"] = data.digit_indices + offset
        return arrays

    if use_cache:
        key = dict(
            kind=kind,
            format=format_version,
            mnist_origin=source.origin,
            mnist=fingerprint(mnist.x_train, mnist.y_train, mnist.x_test, mnist.y_test),
            valid_start=valid_start,
            seed=seed,
            n_train=sizes["train"],
            n_valid=sizes["valid"],
            n_test=sizes["test"],
            **params,
        )
        cache_dir = cache_folder() if cache_dir is None else cache_dir
        arrays = cached_arrays(cache_path(cache_dir, kind, key), key, create)
    else:
        arrays = create()
    out_dtype = check_dtype(dtype)

    def result(split):
        fields = {name: arrays[f"{split}_{name}"] for name in names}
        fields["images"] = _convert(fields["images"], out_dtype)
        for name in masks:
            fields[name] = fields[name].astype(out_dtype, copy=False)
        return result_type(**fields)

    splits = {split: result(split) for split in SPLITS}
    return (splits, source) if return_source else splits
