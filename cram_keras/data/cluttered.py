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
is exact and the float32 output is that divided by 255. The machinery it
shares with `cram_keras.data.translated` (input checks, clutter pieces,
painting, the cached splits) is `cram_keras.data.generated`.
"""

from __future__ import annotations

import dataclasses
import functools
import os

import numpy as np

from cram_keras.data import generated
from cram_keras.data.mnist import MnistData
from cram_keras.data.sources import DEFAULT_NETWORK_TIMEOUT, DataSource
from cram_keras.utils import check_int

# Bump when the generated arrays change for the same parameters.
FORMAT_VERSION = 1
# MNIST training digits [0, VALID_START) make the training split, the rest
# of the MNIST training set the validation split (the `mnist.pkl.gz` split).
VALID_START = 50_000
CLUTTER_FROM = ("mnist_train", "split")


@dataclasses.dataclass(frozen=True, eq=False)
class ClutteredSequences(generated.Samples):
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
    digits, labels, clutter, n, sizes, out_dtype = generated.check_inputs(
        digits,
        labels,
        clutter_source,
        n,
        dtype,
        canvas_size=canvas_size,
        num_digits=num_digits,
        num_clutter=num_clutter,
        clutter_size=clutter_size,
    )
    canvas_size, num_digits, num_clutter, clutter_size = sizes.values()
    num_sources, height, width = digits.shape
    if num_digits * width > canvas_size or height > canvas_size:
        raise ValueError(
            f"{num_digits} digits of {height}x{width} px placed side by side "
            f"need a canvas of at least {max(num_digits * width, height)} px. "
            f"Received: canvas_size={canvas_size}, num_digits={num_digits}. "
            f"Use a larger canvas_size or fewer digits."
        )
    generated.check_nonempty(digits, n)
    if num_clutter > 0:
        generated.check_clutter(clutter, clutter_size, canvas_size)

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
    pieces = generated.Clutter(
        rng,
        clutter,
        len(clutter),
        num_clutter,
        n,
        clutter_size,
        canvas_size,
        inclusive=False,
    )

    images = np.empty((n, canvas_size, canvas_size, 1), dtype=out_dtype)
    for chunk, (canvas,) in generated.chunks(n, canvas_size):
        pieces.paste(canvas, chunk, add=False)  # Assigned: later pieces overwrite.
        for i in range(num_digits):  # Added, clipped at 255.
            generated.paste(
                canvas,
                digits[digit_indices[chunk, i]],
                ys[chunk, i],
                xs[chunk, i],
                add=True,
            )
        generated.store(images, chunk, canvas)

    return ClutteredSequences(
        images=images,
        labels=labels[digit_indices],
        boxes=generated.frames(ys, xs, height, width),
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
    sizes = generated.split_sizes(n_train, n_valid, n_test)
    if clutter_from not in CLUTTER_FROM:
        raise ValueError(
            f"`clutter_from` must be one of {CLUTTER_FROM}. Received: clutter_from={clutter_from!r}"
        )
    generated.check_dtype(dtype)
    generator_args = generated.check_sizes(  # Checked here: they key the cache as JSON.
        canvas_size=canvas_size,
        num_digits=num_digits,
        num_clutter=num_clutter,
        clutter_size=clutter_size,
    )
    seed = check_int("seed", seed, 0)

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

    return generated.load_splits(
        "cluttered_sequences",
        generator,
        ClutteredSequences,
        format_version=FORMAT_VERSION,
        valid_start=VALID_START,
        sizes=sizes,
        seed=seed,
        params=dict(clutter_from=clutter_from, **generator_args),
        dtype=dtype,
        data_dir=data_dir,
        bundled=bundled,
        mnist=mnist,
        network_timeout=network_timeout,
        cache_dir=cache_dir,
        use_cache=use_cache,
        return_source=return_source,
    )


def _uniform(rng: np.random.Generator, low: int, high: int, n: int) -> np.ndarray:
    """Integers uniform in [low, high), or all `low` when the range is empty."""
    if high <= low:
        return np.full(n, low, dtype=np.int64)
    return rng.integers(low, high, size=n)
