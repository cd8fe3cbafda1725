"""Cluttered MNIST sequences: the RNN-SPN benchmark (Sønderby et al., 2015).

Each image is a 100x100 canvas holding 3 MNIST digits in a row and 8 pieces
of 9x9 clutter; the target is the 3 digit classes, left to right. The paper
(Sec. 4) describes it in words; the details below come from the generator
released with it, `MNIST_SEQUENCE/create_mnist_sequence.py` in
github.com/skaae/recurrent-spatial-transformer-code (commit 193517b), which
is Python 2 and fails on modern NumPy. We reimplement it vectorised and
follow it step for step:

- **Digits.** `num_digits` source digits are drawn uniformly with
  replacement from the split (`sample_digits`).
- **Horizontal placement.** Digit `i` starts at column `x0 + 28 i`, so the
  digits touch but never overlap. `x0 = c + j` with
  `c = (canvas - num_digits * 28) // 2` (8 on 100 px) and a jitter
  `j = np.random.choice(range(-c, c))`, i.e. uniform in [-8, 7], so `x0` is
  in [0, 15] (`create_sample`).
- **Vertical placement.** `y0 = np.random.choice(range(canvas))`, uniform
  over the whole canvas [0, 99]; a slope `s` uniform in
  `range(int(-28 * 0.5), int(28 * 0.5))` = [-14, 13] px per digit (the
  paper's "slope sampled from ±45°"); digit `i` starts at row `y0 + i s`,
  clamped into [0, canvas - 28] so every digit lies fully inside. Because
  `y0` reaches to the bottom edge, about 28% of first digits sit clamped at
  the bottom.
- **Clutter.** The released script cuts a bank of 100,000 pieces of 9x9,
  each from a uniformly random digit at an offset uniform in
  `randint(28 - 9)` = [0, 18] per axis, and pastes `num_clutter` random
  pieces of the bank at `randint(100 - 9)` = [0, 90] per axis. Pieces are
  *assigned* (a later piece overwrites an earlier one), then the digits are
  *added* on top and the sum is clipped to [0, 1] (`add_distortions`).
- **Which digits the clutter comes from.** The bank is cut from
  `concatenate([X_train, X_valid, X_train])` of `mnist.pkl.gz` for every
  split, the test set included: clutter always comes from MNIST training
  digits 0..59,999, with 0..49,999 drawn twice as often as 50,000..59,999
  (the second `X_train` is probably meant as `X_test`, but we follow the
  code as released). `clutter_from="split"` in `load_cluttered_sequences`
  cuts each split's clutter from its own digits instead.
- **Splits.** 60,000 training sequences from MNIST training digits
  0..49,999, 10,000 validation from 50,000..59,999, 10,000 test from the
  MNIST test set (the `mnist.pkl.gz` split).

Our deviations, none of which changes the distribution of an image:
clutter pieces are cut fresh for every paste instead of drawn from a fixed
bank of 100,000 (the bank's limit of infinite size); the random stream is
NumPy's PCG64 (`np.random.default_rng`), not the legacy seed 1234 stream,
so images are not byte-identical to the released `.npz`; intensities are
`uint8 / 255` where `mnist.pkl.gz` stored `uint8 / 256`.

The whole computation runs on uint8 canvases (adding two `k / 255` values
and clipping at 1 is exactly a saturating uint8 add), so the `uint8` output
is exact and the float32 output is that divided by 255.
"""

from __future__ import annotations

import dataclasses
import functools
import os

import numpy as np

from cram_keras.data.cache import (
    cache_path,
    cached_arrays,
    default_cache_dir,
    fingerprint,
)
from cram_keras.data.mnist import FieldsByKey, MnistData
from cram_keras.data.sources import (
    DEFAULT_NETWORK_TIMEOUT,
    DataSource,
    resolve_mnist,
    split_digit_pools,
)
from cram_keras.utils import check_int as _check_int

# Bump when the generated arrays change for the same parameters.
FORMAT_VERSION = 1
# MNIST training digits [0, VALID_START) make the training split, the rest
# of the MNIST training set the validation split (the `mnist.pkl.gz` split).
VALID_START = 50_000
SPLITS = ("train", "valid", "test")
CLUTTER_FROM = ("mnist_train", "split")
_CHUNK = 4096  # Samples rendered at a time; bounds the scratch memory.


@dataclasses.dataclass(frozen=True, eq=False)
class ClutteredSequences(FieldsByKey):
    """A set of cluttered MNIST sequences.

    Fields are attributes (`data.images`) and keys (`data["images"]`).

    Attributes:
        images: (N, S, S, 1), float32 in [0, 1] or uint8 in [0, 255] (the
            `dtype` that was asked for).
        labels: (N, num_digits) int64, the digit classes left to right.
        boxes: (N, num_digits, 4) int64, each digit's 28x28 frame as
            (y0, x0, y1, x1), ends exclusive, left to right.
        digit_indices: (N, num_digits) int64, the index of each source digit
            in the array it was drawn from (for the splits of
            `load_cluttered_sequences`: the MNIST training set for train
            and valid, the MNIST test set for test).
    """

    images: np.ndarray
    labels: np.ndarray
    boxes: np.ndarray
    digit_indices: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)


def make_cluttered_sequences(
    digits: np.ndarray,
    labels: np.ndarray,
    n: int,
    *,
    canvas_size: int = 100,
    num_digits: int = 3,
    num_clutter: int = 8,
    clutter_size: int = 9,
    clutter_source: np.ndarray | None = None,
    dtype: str = "float32",
    seed: int | tuple[int, ...],
) -> ClutteredSequences:
    """Makes `n` cluttered digit sequences as the RNN-SPN released generator.

    See the module docstring for the placement rules and their source.

    Args:
        digits: (M, H, W) or (M, H, W, 1) source digits, uint8 in [0, 255]
            or float in [0, 1] (converted to uint8 by rounding x * 255).
        labels: (M,) integer classes of `digits`.
        n: number of sequences.
        canvas_size: side S of the square canvas. Must hold `num_digits`
            digits side by side: `num_digits * W <= canvas_size`.
        num_digits: digits per sequence.
        num_clutter: clutter pieces per image (0 for none).
        clutter_size: side of each square clutter piece.
        clutter_source: (K, H', W') images that clutter is cut from (same
            dtype rules as `digits`); `None` cuts it from `digits`.
        dtype: `"float32"` (values in [0, 1]) or `"uint8"` (0..255, 4x less
            memory: 80,000 images take 0.8 GB instead of 3.2 GB).
        seed: an int (or tuple of ints) for `np.random.default_rng`. The
            output is a function of the inputs and the seed alone.

    Returns:
        A `ClutteredSequences` with `images` (n, S, S, 1), `labels`
        (n, num_digits), `boxes` (n, num_digits, 4), `digit_indices`
        (n, num_digits).

    Example:

    >>> mnist = load_mnist("/data/mnist")  # doctest: +SKIP
    >>> data = make_cluttered_sequences(
    ...     mnist.x_train, mnist.y_train, 1000, seed=0)  # doctest: +SKIP
    >>> data.images.shape, data.labels.shape  # doctest: +SKIP
    ((1000, 100, 100, 1), (1000, 3))
    """
    digits = _as_uint8_images(digits, "digits")
    clutter = (
        digits
        if clutter_source is None
        else _as_uint8_images(clutter_source, "clutter_source")
    )
    labels = _check_labels(labels, digits)
    n = _check_int("n", n, 0)
    canvas_size = _check_int("canvas_size", canvas_size, 1)
    num_digits = _check_int("num_digits", num_digits, 1)
    num_clutter = _check_int("num_clutter", num_clutter, 0)
    clutter_size = _check_int("clutter_size", clutter_size, 1)
    out_dtype = _check_dtype(dtype)
    num_sources, height, width = digits.shape
    if num_digits * width > canvas_size or height > canvas_size:
        raise ValueError(
            f"{num_digits} digits of {height}x{width} px placed side by side "
            f"need a canvas of at least {max(num_digits * width, height)} px. "
            f"Received: canvas_size={canvas_size}, num_digits={num_digits}. "
            f"Use a larger canvas_size or fewer digits."
        )
    if n > 0 and num_sources == 0:
        raise ValueError("`digits` is empty; there is nothing to place.")
    if num_clutter > 0:
        _check_clutter(clutter, clutter_size, canvas_size)

    rng = np.random.default_rng(seed)
    # === Digits (create_sample) ===
    digit_indices = rng.integers(0, num_sources, size=(n, num_digits))
    x_center = (canvas_size - num_digits * width) // 2
    x_start = x_center + _uniform(rng, -x_center, x_center, n)
    y_start = rng.integers(0, canvas_size, size=n)
    max_slope = int(width * 0.5)
    slope = _uniform(rng, -max_slope, max_slope, n)
    steps = np.arange(num_digits)
    ys = np.clip(y_start[:, None] + steps * slope[:, None], 0, canvas_size - height)
    xs = x_start[:, None] + steps * width
    # === Clutter (add_distortions) ===
    clutter_index, crop_y, crop_x, clutter_y, clutter_x = _clutter_draws(
        rng,
        num_clutter,
        n,
        len(clutter),
        clutter.shape[1:],
        clutter_size,
        canvas_size,
        inclusive=False,
    )

    images = np.empty((n, canvas_size, canvas_size, 1), dtype=out_dtype)
    scratch = np.empty((min(n, _CHUNK), canvas_size, canvas_size), dtype=np.uint8)
    clutter_windows = _windows(clutter, clutter_size, clutter_size, writeable=False)
    for start in range(0, n, _CHUNK):
        stop = min(start + _CHUNK, n)
        chunk = slice(start, stop)
        canvas = scratch[: stop - start]
        canvas.fill(0)
        for k in range(num_clutter):  # Assigned: later pieces overwrite.
            pieces = clutter_windows[
                clutter_index[k, chunk], crop_y[k, chunk], crop_x[k, chunk]
            ]
            _paste(canvas, pieces, clutter_y[k, chunk], clutter_x[k, chunk], add=False)
        for i in range(num_digits):  # Added, clipped at 255.
            _paste(
                canvas,
                digits[digit_indices[chunk, i]],
                ys[chunk, i],
                xs[chunk, i],
                add=True,
            )
        _store(images, chunk, canvas)

    boxes = np.stack([ys, xs, ys + height, xs + width], axis=-1)
    return ClutteredSequences(
        images=images,
        labels=labels[digit_indices],
        boxes=boxes.astype(np.int64),
        digit_indices=digit_indices.astype(np.int64),
    )


def load_cluttered_sequences(
    data_dir: str | os.PathLike | None = None,
    *,
    cache_dir: str | os.PathLike | None = None,
    use_cache: bool = True,
    seed: int = 1234,
    n_train: int = 60_000,
    n_valid: int = 10_000,
    n_test: int = 10_000,
    canvas_size: int = 100,
    num_digits: int = 3,
    num_clutter: int = 8,
    clutter_size: int = 9,
    clutter_from: str = "mnist_train",
    dtype: str = "float32",
    bundled: bool = False,
    mnist: MnistData | tuple[MnistData, DataSource] | None = None,
    network_timeout: float = DEFAULT_NETWORK_TIMEOUT,
    return_source: bool = False,
) -> dict[str, ClutteredSequences]:
    """Loads (generating and caching on first use) the RNN-SPN splits.

    Training sequences are made from MNIST training digits 0..49,999,
    validation sequences from 50,000..59,999 and test sequences from the
    MNIST test set, as the released generator (module docstring). The
    digits come from `cram_keras.data.sources.load_mnist_data`: the
    official files in `data_dir`, else TFDS (prepared or reachable), else
    the bundled sample (with a note on stderr). TFDS stores MNIST in
    another order, so the train/valid partition of the digits differs from
    the released one (still disjoint); pass `data_dir` for the official
    order. The bundled sample's 5,000 training digits are split in the
    same proportion: 4,167 train / 833 valid (its 1,000 test digits make
    the test split); the sequences are drawn from these pools, so any
    `n_train` works.

    The arrays are cached in `cache_dir` as uint8 in an `.npz` named by a
    hash of every argument that affects them, of the digits' origin and a
    fingerprint of the MNIST arrays and of `FORMAT_VERSION`; a rerun reads
    back the same bytes, and sets made from the bundled sample never share
    a file with full-MNIST ones.

    Args:
        data_dir: folder of the four official MNIST files; `None` chooses
            TFDS or the bundled sample (see above).
        cache_dir: cache folder; `None` is `$CRAM_KERAS_CACHE` or
            `~/.cache/cram_keras`.
        use_cache: `False` generates without reading or writing the cache.
        seed: the dataset seed; each split draws from its own stream
            `(seed, 0)`, `(seed, 1)`, `(seed, 2)`.
        n_train: number of training sequences.
        n_valid: number of validation sequences.
        n_test: number of test sequences.
        canvas_size: see `make_cluttered_sequences`.
        num_digits: see `make_cluttered_sequences`.
        num_clutter: see `make_cluttered_sequences`.
        clutter_size: see `make_cluttered_sequences`.
        clutter_from: `"mnist_train"` (as released: every split, test
            included, cuts clutter from MNIST training digits 0..59,999,
            0..49,999 twice as often) or `"split"` (each split from its own
            digits).
        dtype: `"float32"` in [0, 1] or `"uint8"`. Full size in float32
            takes 3.2 GB; `"uint8"` takes 0.8 GB (divide by 255 in the input
            pipeline).
        bundled: draw from the bundled MNIST sample when no `data_dir` is
            given (5,000 train / 1,000 test digits).
        mnist: digits already loaded instead: an `MnistData` or the
            `(MnistData, DataSource)` pair of `load_mnist_data`.
        network_timeout: seconds the TFDS network check may take at most.
        return_source: also return the `DataSource` of the digits (with
            the pool sizes in `pools` and in its description).

    Returns:
        `{"train": ClutteredSequences, "valid": ..., "test": ...}`, or
        `(splits, source)` with `return_source=True`. `digit_indices` of
        train and valid index the MNIST training set (of the source used),
        those of test the MNIST test set.

    Raises:
        DatasetError: MNIST could not be loaded, or a training set other
            than the bundled sample has no digits beyond index 49,999 to
            make the validation split.
    """
    sizes = {
        "train": _check_int("n_train", n_train, 0),
        "valid": _check_int("n_valid", n_valid, 0),
        "test": _check_int("n_test", n_test, 0),
    }
    if clutter_from not in CLUTTER_FROM:
        raise ValueError(
            f"`clutter_from` must be one of {CLUTTER_FROM}. Received: clutter_from={clutter_from!r}"
        )
    _check_dtype(dtype)
    generator_args = dict(  # Checked here: they key the cache as JSON.
        canvas_size=_check_int("canvas_size", canvas_size, 1),
        num_digits=_check_int("num_digits", num_digits, 1),
        num_clutter=_check_int("num_clutter", num_clutter, 0),
        clutter_size=_check_int("clutter_size", clutter_size, 1),
    )
    seed = _check_int("seed", seed, 0)

    def generator(mnist, valid_start):
        bank = None  # "split": each split cuts clutter from its own digits.
        if clutter_from == "mnist_train":
            train, valid = mnist.x_train[:valid_start], mnist.x_train[valid_start:]
            bank = np.concatenate([train, valid, train])  # As released.
        return functools.partial(
            make_cluttered_sequences,
            clutter_source=bank,
            dtype="uint8",
            **generator_args,
        )

    arrays, source = generated_splits(
        "cluttered_sequences",
        generator,
        ("images", "labels", "boxes"),
        format_version=FORMAT_VERSION,
        valid_start=VALID_START,
        sizes=sizes,
        seed=seed,
        params=dict(clutter_from=clutter_from, **generator_args),
        data_dir=data_dir,
        bundled=bundled,
        mnist=mnist,
        network_timeout=network_timeout,
        cache_dir=cache_dir,
        use_cache=use_cache,
    )
    splits = {
        split: ClutteredSequences(
            **dict(fields, images=_convert(fields["images"], dtype))
        )
        for split, fields in arrays.items()
    }
    return (splits, source) if return_source else splits


# === Helpers shared with translated.py ===


def generated_splits(
    kind,
    make_generator,
    fields,
    *,
    format_version,
    valid_start,
    sizes,
    seed,
    params,
    data_dir,
    bundled,
    mnist,
    network_timeout,
    cache_dir,
    use_cache,
):
    """The train, valid and test splits of a set generated from MNIST digits,
    read from the cache or made (and cached): `({split: {field: array}},
    DataSource)`, images uint8.

    The training split is drawn from MNIST training digits
    `[0, valid_start)`, the validation split from the rest of the training
    set (`split_digit_pools`: the same proportion of the bundled sample),
    the test split from the test set; split k draws from the stream
    `(seed, k)`. `make_generator(mnist, valid_start)` returns the generator,
    called as `generate(digits, labels, n, seed=...)`, whose result holds
    `fields` and `digit_indices` (stored as indices into the MNIST set the
    split was drawn from). The cache key (and file name prefix) is `kind`
    with `format_version`, the digits' origin and fingerprint, `valid_start`,
    `seed`, the sizes and the generator's `params`.
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

    def create() -> dict[str, np.ndarray]:
        generate = make_generator(mnist, valid_start)
        arrays = {}
        for number, split in enumerate(SPLITS):
            digits, labels, offset = pools[split]
            data = generate(digits, labels, sizes[split], seed=(seed, number))
            for field in fields:
                arrays[f"{split}_{field}"] = data[field]
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
        cache_dir = default_cache_dir() if cache_dir is None else cache_dir
        arrays = cached_arrays(cache_path(cache_dir, kind, key), key, create)
    else:
        arrays = create()
    names = (*fields, "digit_indices")
    splits = {
        split: {name: arrays[f"{split}_{name}"] for name in names} for split in SPLITS
    }
    return splits, source


def _check_dtype(dtype) -> np.dtype:
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


def _check_clutter(clutter: np.ndarray, clutter_size: int, canvas_size: int) -> None:
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


def _uniform(rng: np.random.Generator, low: int, high: int, n: int) -> np.ndarray:
    """Integers uniform in [low, high), or all `low` when the range is empty."""
    if high <= low:
        return np.full(n, low, dtype=np.int64)
    return rng.integers(low, high, size=n)


def _clutter_draws(
    rng,
    num_clutter,
    n,
    num_sources,
    source_shape,
    clutter_size,
    canvas_size,
    *,
    inclusive,
):
    """Random source, crop offset and canvas position of every clutter piece.

    Returns five (num_clutter, n) integer arrays: source index in
    [0, num_sources), crop row and column, canvas row and column. The
    released RNN-SPN code draws offsets with `randint(size - piece)` (upper
    end excluded); the DeepMind RAM generator includes the upper end
    (`inclusive=True`).
    """
    extra = 1 if inclusive else 0
    shape = (num_clutter, n)

    def offsets(room):
        return rng.integers(0, max(room + extra, 1), size=shape)

    clutter_index = rng.integers(0, max(num_sources, 1), size=shape)
    crop_y = offsets(source_shape[0] - clutter_size)
    crop_x = offsets(source_shape[1] - clutter_size)
    clutter_y = offsets(canvas_size - clutter_size)
    clutter_x = offsets(canvas_size - clutter_size)
    return clutter_index, crop_y, crop_x, clutter_y, clutter_x


def _windows(
    array: np.ndarray, height: int, width: int, *, writeable: bool
) -> np.ndarray:
    """(N, Y, X, height, width) view of every window of an (N, H, W) stack."""
    return np.lib.stride_tricks.sliding_window_view(
        array, (height, width), axis=(1, 2), writeable=writeable
    )


def _paste(canvas: np.ndarray, patches: np.ndarray, ys, xs, *, add: bool) -> None:
    """Pastes patches[i] into canvas[i] with its top-left corner at (ys[i], xs[i]).

    `add=False` overwrites; `add=True` adds with saturation at 255, which is
    `clip(a + b, 0, 1)` on intensities `k / 255`.
    """
    rows = np.arange(len(canvas))
    windows = _windows(canvas, *patches.shape[1:], writeable=True)
    if add:
        region = windows[rows, ys, xs]
        region += np.minimum(patches, 255 - region)
        patches = region
    windows[rows, ys, xs] = patches


def _store(images: np.ndarray, chunk: slice, canvas: np.ndarray) -> None:
    """Writes uint8 canvases into images[chunk] (uint8, or float32 / 255)."""
    if images.dtype == np.uint8:
        images[chunk, ..., 0] = canvas
    else:
        np.divide(canvas, 255, out=images[chunk, ..., 0], dtype=np.float32)


def _convert(images: np.ndarray, dtype) -> np.ndarray:
    """uint8 (N, S, S) or (N, S, S, 1) images to (N, S, S, 1) in `dtype`."""
    if images.ndim == 3:
        images = images[..., None]
    if _check_dtype(dtype) == np.uint8:
        return images
    return np.divide(images, 255, dtype=np.float32)
