"""Tests for cram_keras.data.translated (cluttered translated MNIST + saliency)."""

import numpy as np
import pytest

from cram_keras.data import translated
from cram_keras.data.translated import (
    PRESETS,
    load_cluttered_translated,
    make_cluttered_translated,
)


def _make(mnist, n, **kwargs):
    kwargs.setdefault("seed", 0)
    return make_cluttered_translated(mnist.x_train, mnist.y_train, n, **kwargs)


def _outside_box(images, boxes):
    keep = np.ones(images.shape[:3], dtype=bool)
    for i, (y0, x0, y1, x1) in enumerate(boxes):
        keep[i, y0:y1, x0:x1] = False
    return images[..., 0][keep]


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_shapes_dtypes_and_range(traceable_mnist, preset):
    size = PRESETS[preset]["canvas_size"]
    data = _make(traceable_mnist.mnist, 12, **PRESETS[preset])
    assert data.images.shape == data.saliency.shape == (12, size, size, 1)
    assert data.images.dtype == data.saliency.dtype == np.float32
    assert data.labels.shape == (12,) and data.labels.dtype == np.int64
    assert data.boxes.shape == (12, 4) and data.digit_indices.shape == (12,)
    assert 0 <= data.images.min() and data.images.max() <= 1
    assert set(np.unique(data.saliency).tolist()) == {0.0, 1.0}
    as_uint8 = _make(traceable_mnist.mnist, 12, dtype="uint8", **PRESETS[preset])
    np.testing.assert_array_equal(data.images, as_uint8.images / np.float32(255))
    np.testing.assert_array_equal(data.saliency, as_uint8.saliency.astype(np.float32))


def test_digit_whole_inside_canvas_and_traceable(traceable_mnist):
    fake = traceable_mnist
    data = _make(fake.mnist, 50, num_clutter=0, dtype="uint8")
    for image, label, box in zip(
        data.images[..., 0], data.labels, data.boxes, strict=True
    ):
        ((y, x, code),) = fake.locate(image)
        np.testing.assert_array_equal(
            image[y : y + 28, x : x + 28], fake.mnist.x_train[code]
        )
        assert box.tolist() == [y, x, y + 28, x + 28]
        assert label == fake.label(code)


def test_positions_cover_every_placement(traceable_mnist):
    boxes = _make(traceable_mnist.mnist, 400, canvas_size=32, num_clutter=0).boxes
    assert set(boxes[:, 0].tolist()) == set(boxes[:, 1].tolist()) == set(range(5))


def test_saliency_is_the_digit_silhouette(traceable_mnist):
    """1 exactly on the digit's pixels brighter than 0.1, 0 elsewhere."""
    digits = traceable_mnist.mnist.x_train[:50].copy()
    digits[:, 20, 3] = 25  # 25 / 255 < 0.1: not salient.
    digits[:, 20, 4] = 26  # 26 / 255 > 0.1: salient.
    data = make_cluttered_translated(
        digits, np.arange(50) % 10, 30, seed=2, dtype="uint8"
    )
    for mask, box, index in zip(
        data.saliency[..., 0], data.boxes, data.digit_indices, strict=True
    ):
        y0, x0, y1, x1 = box
        expected = np.zeros_like(mask)
        expected[y0:y1, x0:x1] = digits[index] / 255 > 0.1
        np.testing.assert_array_equal(mask, expected)
        assert mask[y0 + 20, x0 + 3] == 0 and mask[y0 + 20, x0 + 4] == 1


def test_saliency_is_independent_of_clutter(traceable_mnist):
    clean = _make(traceable_mnist.mnist, 40, num_clutter=0)
    # Without clutter the mask is the thresholded image itself.
    np.testing.assert_array_equal(
        clean.saliency, (clean.images > 0.1).astype(np.float32)
    )
    for kwargs in ({"num_clutter": 4}, {"num_clutter": 12, "clutter_size": 5}):
        cluttered = _make(traceable_mnist.mnist, 40, **kwargs)
        assert not np.array_equal(cluttered.images, clean.images)
        np.testing.assert_array_equal(cluttered.saliency, clean.saliency)
        np.testing.assert_array_equal(cluttered.labels, clean.labels)
        np.testing.assert_array_equal(cluttered.boxes, clean.boxes)


def test_digits_walk_random_permutations():
    data = make_cluttered_translated(
        np.zeros((10, 28, 28), np.uint8), np.arange(10), 25, num_clutter=0, seed=0
    )
    order = data.digit_indices
    assert sorted(order[:10]) == sorted(order[10:20]) == list(range(10))
    assert not np.array_equal(order[:10], order[10:20])


def test_clutter_is_cut_from_other_digits_and_added():
    # Two flat digits: every piece on a canvas comes from the other one.
    digits = np.stack(
        [np.full((28, 28), 11, np.uint8), np.full((28, 28), 13, np.uint8)]
    )
    data = make_cluttered_translated(
        digits, [0, 1], 200, canvas_size=40, num_clutter=10, dtype="uint8", seed=0
    )
    for image, box, index in zip(
        data.images, data.boxes, data.digit_indices, strict=True
    ):
        other = 13 if index == 0 else 11
        values = _outside_box(image[None], box[None])
        assert np.all(values % other == 0)
    # Overlapping pieces add up (22 or 26 appear), never a max.
    assert {22, 26} & set(np.unique(data.images).tolist())


def test_sums_clip_at_one():
    digits = np.full((2, 28, 28), 200, np.uint8)
    data = make_cluttered_translated(
        digits, [0, 1], 50, num_clutter=8, dtype="uint8", seed=0
    )
    assert set(np.unique(data.images).tolist()) == {0, 200, 255}


def test_deterministic_per_seed_and_different_across_seeds(traceable_mnist):
    a, b = (
        _make(traceable_mnist.mnist, 10, seed=4),
        _make(traceable_mnist.mnist, 10, seed=4),
    )
    for name in ("images", "labels", "saliency", "boxes", "digit_indices"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    c = _make(traceable_mnist.mnist, 10, seed=5)
    assert not np.array_equal(a.images, c.images)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"canvas_size": 20}, "canvas_size=20"),
        ({"clutter_size": 40}, "clutter_size=40"),
        ({"saliency_threshold": 1.0}, "saliency_threshold"),
        ({"dtype": "int32"}, "dtype"),
    ],
)
def test_invalid_arguments(traceable_mnist, kwargs, match):
    with pytest.raises(ValueError, match=match):
        _make(traceable_mnist.mnist, 2, **kwargs)


def test_one_digit_cannot_clutter_itself():
    with pytest.raises(ValueError, match="other digits"):
        make_cluttered_translated(np.zeros((1, 28, 28), np.uint8), [3], 2, seed=0)


# === load_cluttered_translated ===


SMALL = {"n_train": 30, "n_valid": 20, "n_test": 20}


def test_splits_come_from_disjoint_digit_ranges(traceable_mnist, tmp_path):
    fake = traceable_mnist
    mnist = fake.mnist
    splits = load_cluttered_translated(
        mnist=mnist,
        cache_dir=tmp_path,
        preset="cluttered100",
        num_clutter=0,
        dtype="uint8",
        **SMALL,
    )
    ranges = {
        "train": (0, 55_000),
        "valid": (55_000, 60_000),
        "test": (100_000, 101_000),
    }
    for split, (low, high) in ranges.items():
        data = splits[split]
        assert data.images.shape == (SMALL[f"n_{split}"], 100, 100, 1)
        codes = np.array(
            [code for im in data.images[..., 0] for _, _, code in fake.locate(im)]
        )
        assert len(codes) == len(data) and np.all((codes >= low) & (codes < high)), (
            split
        )
        np.testing.assert_array_equal(data.labels, fake.label(codes))
        offset = 100_000 if split == "test" else 0
        np.testing.assert_array_equal(data.digit_indices + offset, codes)


def test_each_split_clutters_with_its_own_digits(range_valued_mnist, tmp_path):
    mnist = range_valued_mnist({(0, 55_000): 11, (55_000, 60_000): 13}, test=17)
    splits = load_cluttered_translated(
        mnist=mnist, cache_dir=tmp_path, dtype="uint8", **SMALL
    )
    for split, value in (("train", 11), ("valid", 13), ("test", 17)):
        data = splits[split]
        outside = _outside_box(data.images, data.boxes)
        assert np.all(outside % value == 0) and outside.max() > 0, split


def test_cache_rerun_is_byte_identical_and_not_regenerated(
    traceable_mnist, tmp_path, monkeypatch
):
    mnist = traceable_mnist.mnist
    first = load_cluttered_translated(mnist=mnist, cache_dir=tmp_path, **SMALL)
    (path,) = tmp_path.glob("cluttered_translated-*.npz")
    written = path.read_bytes()

    def fail(*args, **kwargs):
        raise AssertionError("regenerated although cached")

    monkeypatch.setattr(translated, "make_cluttered_translated", fail)
    second = load_cluttered_translated(mnist=mnist, cache_dir=tmp_path, **SMALL)
    assert path.read_bytes() == written
    for split in ("train", "valid", "test"):
        for name in ("images", "labels", "saliency", "boxes", "digit_indices"):
            a, b = getattr(first[split], name), getattr(second[split], name)
            assert a.dtype == b.dtype and a.tobytes() == b.tobytes()


def test_unknown_preset():
    with pytest.raises(ValueError, match="cluttered60.*preset='cluttered28'"):
        load_cluttered_translated(preset="cluttered28")
