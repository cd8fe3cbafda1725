"""Tests for cram_keras.data.cluttered (RNN-SPN cluttered MNIST sequences).

The invariants are checked from the images themselves where possible: the
`traceable_mnist` digits carry their own index, so a test finds each digit
on the canvas and knows which source digit it is without trusting the
returned boxes or indices.
"""

import os
import time

import numpy as np
import pytest

from cram_keras.data import cache, cluttered
from cram_keras.data.cluttered import load_cluttered_sequences, make_cluttered_sequences

CANVAS = 100


def _make(mnist, n, **kwargs):
    kwargs.setdefault("seed", 0)
    return make_cluttered_sequences(mnist.x_train, mnist.y_train, n, **kwargs)


def _outside_boxes(images, boxes):
    """Pixel values of each canvas outside all its digit frames (flat)."""
    keep = np.ones(images.shape[:3], dtype=bool)
    for i, sample_boxes in enumerate(boxes):
        for y0, x0, y1, x1 in sample_boxes:
            keep[i, y0:y1, x0:x1] = False
    return images[..., 0][keep]


def test_shapes_dtypes_and_range(traceable_mnist):
    data = _make(traceable_mnist.mnist, 20)
    assert (
        data.images.shape == (20, CANVAS, CANVAS, 1) and data.images.dtype == np.float32
    )
    assert data.labels.shape == (20, 3) and data.labels.dtype == np.int64
    assert data.boxes.shape == (20, 3, 4) and data.digit_indices.shape == (20, 3)
    assert len(data) == 20
    assert data["labels"] is data.labels
    with pytest.raises(KeyError):
        data["image"]
    assert 0.0 <= data.images.min() and data.images.max() <= 1.0
    as_uint8 = _make(traceable_mnist.mnist, 20, dtype="uint8")
    assert as_uint8.images.dtype == np.uint8
    np.testing.assert_array_equal(data.images, as_uint8.images.astype(np.float32) / 255)


def test_digits_found_on_canvas_left_to_right(traceable_mnist):
    """Without clutter, each digit appears whole, in the order of the labels."""
    fake = traceable_mnist
    data = _make(fake.mnist, 64, num_clutter=0, dtype="uint8", seed=1)
    for image, labels, boxes in zip(
        data.images[..., 0], data.labels, data.boxes, strict=True
    ):
        found = fake.locate(image)
        assert len(found) == 3
        codes = [code for _, _, code in found]
        # Labels are those of the digits as they appear from left to right.
        assert labels.tolist() == fake.label(codes).tolist()
        for (y, x, code), box in zip(found, boxes, strict=True):
            # The whole 28x28 digit is on the canvas: clamping kept it inside.
            np.testing.assert_array_equal(
                image[y : y + 28, x : x + 28], fake.mnist.x_train[code]
            )
            assert box.tolist() == [y, x, y + 28, x + 28]
        # Placed 28 px apart, starting at 8 + jitter in [-8, 7].
        xs = [x for _, x, _ in found]
        assert xs[1] - xs[0] == xs[2] - xs[1] == 28 and 0 <= xs[0] <= 15
    np.testing.assert_array_equal(
        data.labels, fake.mnist.y_train[data.digit_indices]
    )  # The bookkeeping agrees with what was found.


def test_placement_follows_released_rules(traceable_mnist):
    boxes = _make(traceable_mnist.mnist, 3000, num_clutter=0, dtype="uint8").boxes
    y0, x0, y1, x1 = np.moveaxis(boxes, -1, 0)
    # Boxes disjoint in x (they touch), each fully inside the canvas.
    assert np.all(x1[:, :-1] <= x0[:, 1:])
    assert np.all((y0 >= 0) & (x0 >= 0) & (y1 <= CANVAS) & (x1 <= CANVAS))
    # The horizontal start covers all of [0, 15].
    assert set(x0[:, 0].tolist()) == set(range(16))
    # Unclamped sequences follow one integer slope in [-14, 13].
    steps = np.diff(y0, axis=1)
    free = np.all((y0 > 0) & (y0 < CANVAS - 28), axis=1)
    assert np.all(steps[free, 0] == steps[free, 1])
    assert steps[free, 0].min() == -14 and steps[free, 0].max() == 13
    # y0 is uniform over the whole canvas before clamping: about 28 of 100
    # first digits sit clamped at the bottom.
    assert 0.22 < np.mean(y0[:, 0] == CANVAS - 28) < 0.34


def test_clutter_is_assigned_then_digits_added_and_clipped():
    digits = np.full((4, 28, 28), 200, dtype=np.uint8)
    clutter = np.stack([np.full((28, 28), v, dtype=np.uint8) for v in (100, 101, 102)])
    data = make_cluttered_sequences(
        digits, np.arange(4), 200, clutter_source=clutter, dtype="uint8", seed=0
    )
    values = set(np.unique(data.images).tolist())
    # Pieces overwrite each other (no 201..204 sums); digit + clutter saturates.
    assert values <= {0, 100, 101, 102, 200, 255}
    assert {100, 101, 102, 255} <= values
    outside = _outside_boxes(data.images, data.boxes)
    assert set(np.unique(outside).tolist()) <= {0, 100, 101, 102}


def test_clutter_pieces_are_9x9_inside_canvas():
    digits = np.zeros((2, 28, 28), dtype=np.uint8)
    clutter = np.full((1, 28, 28), 50, dtype=np.uint8)
    one = make_cluttered_sequences(
        digits,
        [0, 1],
        300,
        num_clutter=1,
        clutter_source=clutter,
        dtype="uint8",
        seed=0,
    ).images[..., 0]
    assert np.all(np.count_nonzero(one, axis=(1, 2)) == 81)
    many = make_cluttered_sequences(
        digits, [0, 1], 300, clutter_source=clutter, dtype="uint8", seed=0
    ).images[..., 0]
    counts = np.count_nonzero(many, axis=(1, 2))
    assert np.all((counts >= 81) & (counts <= 8 * 81)) and counts.max() > 6 * 81
    # As released, positions are randint(100 - 9): the last row and column
    # are never reached.
    assert not many[:, -1, :].any() and not many[:, :, -1].any()
    assert many[:, -2, :].any() and many[:, 0, :].any()


def test_deterministic_per_seed_and_different_across_seeds(traceable_mnist):
    a = _make(traceable_mnist.mnist, 16, seed=5)
    b = _make(traceable_mnist.mnist, 16, seed=5)
    c = _make(traceable_mnist.mnist, 16, seed=6)
    for name in ("images", "labels", "boxes", "digit_indices"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert not np.array_equal(a.images, c.images)
    assert not np.array_equal(a.digit_indices, c.digit_indices)


def test_other_canvas_and_digit_counts(traceable_mnist):
    data = _make(traceable_mnist.mnist, 8, canvas_size=64, num_digits=2, clutter_size=5)
    assert data.images.shape == (8, 64, 64, 1) and data.labels.shape == (8, 2)
    assert np.all(data.boxes[..., 2:] <= 64)
    # Float input in [0, 1] is accepted and gives the same images.
    floats = traceable_mnist.mnist.x_train[:100] / 255
    a = make_cluttered_sequences(floats, np.arange(100) % 10, 4, seed=0)
    b = make_cluttered_sequences(
        traceable_mnist.mnist.x_train[:100], np.arange(100) % 10, 4, seed=0
    )
    np.testing.assert_array_equal(a.images, b.images)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"canvas_size": 80}, "at least 84 px.*canvas_size=80, num_digits=3"),
        ({"num_digits": 0}, "num_digits"),
        ({"clutter_size": 29}, "clutter_size=29"),
        ({"num_clutter": -1}, "num_clutter"),
        ({"dtype": "float16"}, "dtype"),
        ({"n": 2.5}, "integer"),
    ],
)
def test_invalid_arguments(traceable_mnist, kwargs, match):
    kwargs = {"n": 2, **kwargs}
    with pytest.raises(ValueError, match=match):
        _make(traceable_mnist.mnist, **kwargs)


def test_invalid_digits():
    with pytest.raises(ValueError, match="digits.shape"):
        make_cluttered_sequences(np.zeros((2, 28)), [0, 1], 1, seed=0)
    with pytest.raises(ValueError, match=r"labels.shape=\(3,\)"):
        make_cluttered_sequences(np.zeros((2, 28, 28)), [0, 1, 2], 1, seed=0)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        make_cluttered_sequences(np.full((2, 28, 28), 3.0), [0, 1], 1, seed=0)


# === load_cluttered_sequences ===


SMALL = {"n_train": 40, "n_valid": 30, "n_test": 30}


def test_splits_come_from_disjoint_digit_ranges(traceable_mnist, tmp_path):
    fake = traceable_mnist
    mnist = fake.mnist
    splits = load_cluttered_sequences(
        mnist=mnist, cache_dir=tmp_path, num_clutter=0, dtype="uint8", seed=3, **SMALL
    )
    ranges = {
        "train": (0, 50_000),
        "valid": (50_000, 60_000),
        "test": (100_000, 101_000),
    }
    for split, (low, high) in ranges.items():
        data = splits[split]
        assert len(data) == SMALL[f"n_{split}"]
        codes = np.array(
            [[code for _, _, code in fake.locate(im)] for im in data.images[..., 0]]
        )
        assert np.all((codes >= low) & (codes < high)), split
        np.testing.assert_array_equal(data.labels, fake.label(codes))
        offset = 100_000 if split == "test" else 0
        np.testing.assert_array_equal(data.digit_indices + offset, codes)


@pytest.mark.parametrize(
    ("clutter_from", "expected"),
    [
        # As released: every split's clutter comes from MNIST train digits.
        ("mnist_train", {"train": {11, 13}, "valid": {11, 13}, "test": {11, 13}}),
        ("split", {"train": {11}, "valid": {13}, "test": {17}}),
    ],
)
def test_clutter_sources(range_valued_mnist, tmp_path, clutter_from, expected):
    mnist = range_valued_mnist({(0, 50_000): 11, (50_000, 60_000): 13}, test=17)
    splits = load_cluttered_sequences(
        mnist=mnist,
        cache_dir=tmp_path,
        clutter_from=clutter_from,
        dtype="uint8",
        **SMALL,
    )
    for split, values in expected.items():
        data = splits[split]
        outside, counts = np.unique(
            _outside_boxes(data.images, data.boxes), return_counts=True
        )
        assert set(outside.tolist()) == {0} | values, split


def test_released_clutter_bank_weights(range_valued_mnist, tmp_path):
    """The released bank is [train, valid, train]: 100,000 : 10,000 entries."""
    mnist = range_valued_mnist({(0, 50_000): 11, (50_000, 60_000): 13}, test=17)
    test = load_cluttered_sequences(
        mnist=mnist, cache_dir=tmp_path, n_train=0, n_valid=0, n_test=400, dtype="uint8"
    )["test"]
    values, counts = np.unique(
        _outside_boxes(test.images, test.boxes), return_counts=True
    )
    share = dict(zip(values.tolist(), counts.tolist(), strict=True))
    assert 7.5 < share[11] / share[13] < 13.5  # [train, valid] alone would give 5.


def test_cache_rerun_is_byte_identical_and_not_regenerated(
    traceable_mnist, tmp_path, monkeypatch
):
    mnist = traceable_mnist.mnist
    first = load_cluttered_sequences(mnist=mnist, cache_dir=tmp_path, **SMALL)
    (path,) = tmp_path.glob("cluttered_sequences-*.npz")
    written = path.read_bytes()

    def fail(*args, **kwargs):
        raise AssertionError("regenerated although cached")

    monkeypatch.setattr(cluttered, "make_cluttered_sequences", fail)
    second = load_cluttered_sequences(mnist=mnist, cache_dir=tmp_path, **SMALL)
    assert path.read_bytes() == written
    for split in ("train", "valid", "test"):
        for name in ("images", "labels", "boxes", "digit_indices"):
            a, b = getattr(first[split], name), getattr(second[split], name)
            assert a.dtype == b.dtype and a.tobytes() == b.tobytes()
    assert second["train"].images.dtype == np.float32
    # Another parameter is another file.
    monkeypatch.undo()
    load_cluttered_sequences(mnist=mnist, cache_dir=tmp_path, **{**SMALL, "n_test": 31})
    assert len(list(tmp_path.glob("cluttered_sequences-*.npz"))) == 2


def test_corrupt_cache_is_regenerated_with_warning(traceable_mnist, tmp_path):
    mnist = traceable_mnist.mnist
    first = load_cluttered_sequences(mnist=mnist, cache_dir=tmp_path, **SMALL)
    (path,) = tmp_path.glob("*.npz")
    good = path.read_bytes()
    path.write_bytes(good[: len(good) // 2])
    with pytest.warns(UserWarning, match="could not be used.*regenerating"):
        second = load_cluttered_sequences(mnist=mnist, cache_dir=tmp_path, **SMALL)
    np.testing.assert_array_equal(first["valid"].images, second["valid"].images)
    assert path.read_bytes() == good


def test_interrupted_write_leaves_no_cache(traceable_mnist, tmp_path, monkeypatch):
    mnist = traceable_mnist.mnist

    def interrupted(file, **arrays):
        file.write(b"PK\x03\x04 half a zip")
        raise KeyboardInterrupt

    monkeypatch.setattr(cache.np, "savez_compressed", interrupted)
    with pytest.raises(KeyboardInterrupt):
        load_cluttered_sequences(mnist=mnist, cache_dir=tmp_path, **SMALL)
    assert os.listdir(tmp_path) == []


def test_without_cache_writes_nothing(traceable_mnist, tmp_path):
    mnist = traceable_mnist.mnist
    data = load_cluttered_sequences(
        mnist=mnist, cache_dir=tmp_path, use_cache=False, **SMALL
    )
    assert len(data["train"]) == 40 and os.listdir(tmp_path) == []


@pytest.mark.slow
def test_generates_sequences_at_80k_a_minute():
    """A run's three sets (60,000 / 10,000 / 10,000 sequences) at a tenth of
    their size: the same rate, 80,000 sequences a minute, without spending
    the minute in the suite."""
    rng = np.random.default_rng(0)
    digits = rng.integers(0, 256, size=(60_000, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, size=60_000)
    start = time.perf_counter()
    for n, part in ((6_000, slice(0, 50_000)), (1_000, slice(50_000, None))):
        data = make_cluttered_sequences(digits[part], labels[part], n, seed=n)
        assert data.images.shape == (n, 100, 100, 1)
        del data
    make_cluttered_sequences(digits[:10_000], labels[:10_000], 1_000, seed=1)
    elapsed = time.perf_counter() - start
    assert elapsed < 6, f"8,000 sequences took {elapsed:.1f} s (bar: 6 s)"
