"""Cluttered translated MNIST with a ground-truth saliency clue (RAM protocol).

The benchmark of the Recurrent Attention Model (Mnih et al., 2014, Sec.
4.1): one MNIST digit at a random position on a larger canvas, cluttered
with "random 8x8 subpatches from other random MNIST digits" at random
locations; 60x60 with 4 pieces and 100x100 with 8 pieces (`PRESETS`). CRAM
classifies it with a binary saliency clue; here the clue is the ground
truth: the digit's own silhouette (pixels brighter than
`saliency_threshold` = 0.1 before any clutter), so it does not depend on
the clutter at all.

We follow the generator DeepMind released for RAM and DRAW,
`mnist_cluttered.lua` in github.com/google-deepmind/mnist-cluttered (commit
c3c30fc):

- **Digit.** Digits are taken in the order of a fresh random permutation of
  the split, pass after pass (`nextExample`), so every source digit is used
  once before any is used twice. Its top-left corner is uniform over every
  position that keeps it fully inside the canvas, [0, S - 28] inclusive
  (`placeSpriteRandomly` with `border = 0`).
- **Clutter.** Each piece is cut from a random digit of the same split
  (drawn with replacement) at a crop offset uniform in [0, 28 - 8] and laid
  at a position uniform in [0, S - 8], both inclusive (`placeDistractors`).
- **Combining: add, then clip to [0, 1].** The released code adds each
  piece, clips at 1, then adds the digit and clips again; we do the same
  (a saturating uint8 add, exact on `k / 255` intensities). We chose
  add+clip over max because it is what the benchmark's authors ran; the two
  differ only where clutter overlaps ink, where add+clip is brighter.

Deviation: the Lua code may cut a clutter piece from the very digit it
places (probability 1 / N); we draw clutter from the *other* digits of the
split, as the paper's wording says, when `clutter_source` is not given.
The random stream is NumPy's PCG64, so images are not those of the Lua
code.

Splits of `load_cluttered_translated`: training from MNIST training digits
0..54,999, validation from 55,000..59,999 (the usual 55k/5k split), test
from the MNIST test set; each split's clutter comes from its own digits.
The machinery shared with `cram_keras.data.cluttered` is
`cram_keras.data.generated`.
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
PRESETS = {
    "cluttered60": {"canvas_size": 60, "num_clutter": 4, "clutter_size": 8},
    "cluttered100": {"canvas_size": 100, "num_clutter": 8, "clutter_size": 8},
}
# MNIST training digits [0, VALID_START) make the training split, the rest
# the validation split.
VALID_START = 55_000


@dataclasses.dataclass(frozen=True, eq=False)
class ClutteredTranslated(generated.Samples):
    """A set of cluttered translated MNIST images with saliency clues.

    Fields are attributes (`data.images`) and keys (`data["images"]`).

    Attributes:
        images: (N, S, S, 1), float32 in [0, 1] or uint8 in [0, 255].
        labels: (N,) int64 digit classes.
        saliency: (N, S, S, 1), float32 or uint8, in {0, 1}: 1 on the
            digit's own pixels (intensity > threshold before clutter).
        boxes: (N, 4) int64, the digit's frame (y0, x0, y1, x1), ends
            exclusive.
        digit_indices: (N,) int64 index of the source digit (for the splits
            of `load_cluttered_translated`: in the MNIST training set for
            train and valid, the MNIST test set for test).
    """

    images: np.ndarray
    labels: np.ndarray
    saliency: np.ndarray
    boxes: np.ndarray
    digit_indices: np.ndarray


def make_cluttered_translated(
    digits: np.ndarray,
    labels: np.ndarray,
    n: int,
    *,
    canvas_size: int = 60,
    num_clutter: int = 4,
    clutter_size: int = 8,
    clutter_source: np.ndarray | None = None,
    saliency_threshold: float = 0.1,
    dtype: str = "float32",
    seed: int | tuple[int, ...],
) -> ClutteredTranslated:
    """Makes `n` cluttered translated digits with their saliency masks.

    See the module docstring for the rules and their source. The digits and
    their positions are drawn before the clutter, so for a given seed the
    labels, boxes and saliency do not depend on `num_clutter`,
    `clutter_size` or `clutter_source`.

    Args:
        digits: (M, H, W) or (M, H, W, 1) source digits, uint8 in [0, 255]
            or float in [0, 1].
        labels: (M,) integer classes of `digits`.
        n: number of images.
        canvas_size: side S of the square canvas, at least the digit size.
        num_clutter: clutter pieces per image (0 for none).
        clutter_size: side of each square clutter piece.
        clutter_source: (K, H', W') images to cut clutter from; `None` cuts
            it from the other digits of `digits` (needs M >= 2).
        saliency_threshold: a digit pixel is salient where its intensity
            (in [0, 1]) exceeds this.
        dtype: `"float32"` or `"uint8"` for `images` and `saliency`.
        seed: an int (or tuple of ints) for `np.random.default_rng`.

    Returns:
        A `ClutteredTranslated` with `images` and `saliency` (n, S, S, 1),
        `labels` (n,), `boxes` (n, 4), `digit_indices` (n,).

    Example:

    >>> data = make_cluttered_translated(
    ...     x_train, y_train, 1000, seed=0, **PRESETS["cluttered60"]
    ... )  # doctest: +SKIP
    >>> data.images.shape, data.saliency.shape  # doctest: +SKIP
    ((1000, 60, 60, 1), (1000, 60, 60, 1))
    """
    exclude_self = clutter_source is None
    digits, labels, clutter, n, sizes, out_dtype = generated.check_inputs(
        digits,
        labels,
        clutter_source,
        n,
        dtype,
        canvas_size=canvas_size,
        num_clutter=num_clutter,
        clutter_size=clutter_size,
    )
    canvas_size, num_clutter, clutter_size = sizes.values()
    if not 0 <= saliency_threshold < 1:
        raise ValueError(
            f"`saliency_threshold` must be in [0, 1). "
            f"Received: saliency_threshold={saliency_threshold}"
        )
    num_sources, height, width = digits.shape
    if max(height, width) > canvas_size:
        raise ValueError(
            f"A {height}x{width} px digit does not fit a canvas of "
            f"{canvas_size} px. Received: canvas_size={canvas_size}. Use a "
            f"canvas of at least {max(height, width)} px."
        )
    generated.check_nonempty(digits, n)
    num_clutter_sources = len(clutter) - 1 if exclude_self else len(clutter)
    if n > 0 and num_clutter > 0:
        if num_clutter_sources < 1:
            raise ValueError(
                f"Clutter is cut from the other digits, but `digits` holds "
                f"only {num_sources}. Pass at least 2 digits, a "
                f"`clutter_source`, or num_clutter=0."
            )
        generated.check_clutter(clutter, clutter_size, canvas_size)

    rng = np.random.default_rng(seed)
    # === Digit (nextExample, placeSpriteRandomly) ===
    passes = -(-n // max(num_sources, 1))
    digit_indices = np.concatenate(
        [rng.permutation(num_sources) for _ in range(passes)] or [np.zeros(0, np.int64)]
    )[:n]
    ys = rng.integers(0, canvas_size - height + 1, size=n)
    xs = rng.integers(0, canvas_size - width + 1, size=n)
    # === Clutter (placeDistractors) ===
    pieces = generated.Clutter(
        rng,
        clutter,
        num_clutter_sources,
        num_clutter,
        n,
        clutter_size,
        canvas_size,
        inclusive=True,
    )
    if exclude_self:  # Skip the digit itself: [0, M - 1) -> [0, M) \ {own}.
        pieces.index += pieces.index >= digit_indices[None, :]

    # Salient where the float32 intensity k / 255 exceeds the threshold.
    intensities = np.arange(256, dtype=np.float32) / np.float32(255)
    salient = (intensities > saliency_threshold).astype(np.uint8)

    images = np.empty((n, canvas_size, canvas_size, 1), dtype=out_dtype)
    saliency = np.empty((n, canvas_size, canvas_size, 1), dtype=out_dtype)
    for chunk, (canvas, mask) in generated.chunks(n, canvas_size, layers=2):
        pieces.paste(canvas, chunk, add=True)
        sprites = digits[digit_indices[chunk]]
        generated.paste(canvas, sprites, ys[chunk], xs[chunk], add=True)
        generated.paste(mask, salient[sprites], ys[chunk], xs[chunk], add=False)
        generated.store(images, chunk, canvas)
        saliency[chunk, ..., 0] = mask

    return ClutteredTranslated(
        images=images,
        labels=labels[digit_indices],
        saliency=saliency,
        boxes=generated.frames(ys, xs, height, width),
        digit_indices=digit_indices.astype(np.int64),
    )


def load_cluttered_translated(
    data_dir: str | os.PathLike | None = None,
    *,
    preset: str = "cluttered60",
    cache_dir: str | os.PathLike | None = None,
    use_cache: bool = True,
    seed: int = 1234,
    n_train: int = 55_000,
    n_valid: int = 5_000,
    n_test: int = 10_000,
    canvas_size: int | None = None,
    num_clutter: int | None = None,
    clutter_size: int | None = None,
    saliency_threshold: float = 0.1,
    dtype: str = "float32",
    bundled: bool = False,
    mnist: MnistData | tuple[MnistData, DataSource] | None = None,
    network_timeout: float = DEFAULT_NETWORK_TIMEOUT,
    return_source: bool = False,
) -> dict[str, ClutteredTranslated]:
    """Loads (generating and caching on first use) cluttered translated MNIST.

    Training images come from MNIST training digits 0..54,999, validation
    images from 55,000..59,999, test images from the MNIST test set; each
    split's clutter is cut from its own digits. The default sizes use every
    source digit exactly once. The digits come from
    `cram_keras.data.sources.load_mnist_data` (the official files in
    `data_dir`, else TFDS, else the bundled sample with a note on stderr);
    the bundled sample's 5,000 training digits are split in the same
    proportion, 4,583 train / 417 valid, and each split walks its pool
    pass after pass, so any size works. Cached like
    `load_cluttered_sequences` (uint8 `.npz` named by a hash of every
    parameter, the digits' origin and a fingerprint of the digits).

    Args:
        data_dir: folder of the four official MNIST files; `None` chooses
            TFDS (stored shuffled: a different, still disjoint, train/valid
            partition of the digits) or the bundled sample.
        preset: `"cluttered60"` (60x60, 4 pieces of 8x8) or
            `"cluttered100"` (100x100, 8 pieces of 8x8).
        seed: the dataset seed; split k draws from the stream `(seed, k)`.
        n_train: number of training images.
        n_valid: number of validation images.
        n_test: number of test images.
        canvas_size: overrides the preset's canvas size.
        num_clutter: overrides the preset's number of clutter pieces.
        clutter_size: overrides the preset's clutter piece size.
        saliency_threshold: see `make_cluttered_translated`.
        dtype: `"float32"` or `"uint8"` for images and saliency. The
            100x100 preset at full size takes 5.6 GB in float32 (images and
            saliency), 1.4 GB in uint8.
        cache_dir, use_cache, bundled, mnist, network_timeout,
            return_source: as in `load_cluttered_sequences`.

    Returns:
        `{"train": ClutteredTranslated, "valid": ..., "test": ...}`, or
        `(splits, source)` with `return_source=True`.

    Raises:
        DatasetError: MNIST could not be loaded, or a training set other
            than the bundled sample has no digits beyond index 54,999 for
            the validation split.
    """
    if preset not in PRESETS:
        raise ValueError(
            f"`preset` must be one of {sorted(PRESETS)}. Received: preset={preset!r}"
        )
    overrides = {
        "canvas_size": canvas_size,
        "num_clutter": num_clutter,
        "clutter_size": clutter_size,
    }
    generator_args = generated.check_sizes(
        **{
            name: PRESETS[preset][name] if value is None else value
            for name, value in overrides.items()
        }
    )
    sizes = generated.split_sizes(n_train, n_valid, n_test)
    seed = check_int("seed", seed, 0)
    generated.check_dtype(dtype)
    saliency_threshold = float(saliency_threshold)

    def generator(mnist, valid_start):
        return functools.partial(
            make_cluttered_translated,
            saliency_threshold=saliency_threshold,
            dtype="uint8",
            **generator_args,
        )

    return generated.load_splits(
        "cluttered_translated",
        generator,
        ClutteredTranslated,
        format_version=FORMAT_VERSION,
        valid_start=VALID_START,
        sizes=sizes,
        seed=seed,
        params=dict(saliency_threshold=saliency_threshold, **generator_args),
        dtype=dtype,
        masks=("saliency",),
        data_dir=data_dir,
        bundled=bundled,
        mnist=mnist,
        network_timeout=network_timeout,
        cache_dir=cache_dir,
        use_cache=use_cache,
        return_source=return_source,
    )
