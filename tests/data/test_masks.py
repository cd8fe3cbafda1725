"""Tests of the occlusion masks and their bounding boxes."""

import numpy as np
import pytest

from cram_keras.data.masks import center_mask, hole_box, random_rectangle_masks


def box_by_argwhere(mask):
    """Reference box of one (H, W, 1) mask: min/max of the hole's indices."""
    rows, cols = np.argwhere(mask[..., 0] > 0.5).T
    return rows.min(), cols.min(), rows.max() + 1, cols.max() + 1


def test_center_mask_is_the_papers_centred_8x8():
    mask = center_mask()
    assert mask.shape == (32, 32, 1)
    assert mask.dtype == np.float32
    assert set(np.unique(mask)) == {0.0, 1.0}
    assert mask.mean() == 0.0625  # 6.25% of the pixels.
    assert np.all(mask[12:20, 12:20] == 1.0)
    assert box_by_argwhere(mask) == (12, 12, 20, 20)


def test_center_mask_odd_sizes_start_at_floor_of_half_the_margin():
    mask = center_mask(image_size=7, hole_size=2)
    assert box_by_argwhere(mask) == (2, 2, 4, 4)


@pytest.mark.parametrize(
    "kwargs, received",
    [
        ({"hole_size": 40}, "hole_size=40"),
        ({"hole_size": 32}, "hole_size=32"),
        ({"hole_size": 0}, "hole_size=0"),
        ({"hole_size": 8.0}, "hole_size=8.0"),
        ({"image_size": True}, "image_size=True"),
    ],
)
def test_center_mask_rejects_bad_sizes(kwargs, received):
    with pytest.raises(ValueError, match=f"Received: {received}"):
        center_mask(**kwargs)


def test_random_masks_are_single_rectangles_within_bounds():
    masks = random_rectangle_masks(300, image_size=32, min_size=4, max_size=16, seed=0)
    assert masks.shape == (300, 32, 32, 1)
    assert masks.dtype == np.float32
    assert set(np.unique(masks)) == {0.0, 1.0}
    boxes = np.array([box_by_argwhere(m) for m in masks])
    heights = boxes[:, 2] - boxes[:, 0]
    widths = boxes[:, 3] - boxes[:, 1]
    assert heights.min() >= 4 and heights.max() <= 16
    assert widths.min() >= 4 and widths.max() <= 16
    # A filled rectangle: every pixel of its box is in the hole.
    np.testing.assert_array_equal(masks.sum(axis=(1, 2, 3)), heights * widths)
    # Holes reach both image edges somewhere (the placement range is complete).
    assert boxes[:, 0].min() == 0 and boxes[:, 2].max() == 32
    assert boxes[:, 1].min() == 0 and boxes[:, 3].max() == 32


def test_random_masks_are_deterministic_per_seed():
    first = random_rectangle_masks(8, seed=42)
    np.testing.assert_array_equal(first, random_rectangle_masks(8, seed=42))
    assert not np.array_equal(first, random_rectangle_masks(8, seed=43))


@pytest.mark.parametrize(
    "kwargs, received",
    [
        ({"n": 0}, "n=0"),
        ({"min_size": 0}, "min_size=0"),
        ({"min_size": 8, "max_size": 4}, "max_size=4"),
        ({"max_size": 32}, "max_size=32"),
    ],
)
def test_random_masks_reject_bad_arguments(kwargs, received):
    arguments = {"n": 2, "image_size": 32, "min_size": 4, "max_size": 16, **kwargs}
    with pytest.raises(ValueError, match=f"Received: {received}"):
        random_rectangle_masks(**arguments)


def test_hole_box_matches_the_reference_for_each_shape():
    masks = random_rectangle_masks(20, seed=3)
    expected = np.array([box_by_argwhere(m) for m in masks])
    np.testing.assert_array_equal(hole_box(masks), expected)
    np.testing.assert_array_equal(hole_box(masks[5]), expected[5])
    np.testing.assert_array_equal(hole_box(masks[5, :, :, 0]), expected[5])
    np.testing.assert_array_equal(hole_box(center_mask()), [12, 12, 20, 20])


def test_hole_box_rejects_empty_masks_and_odd_shapes():
    masks = random_rectangle_masks(3, seed=0)
    masks[1] = 0.0
    with pytest.raises(ValueError, match=r"empty masks at indices \[1\]"):
        hole_box(masks)
    with pytest.raises(ValueError, match=r"mask.shape=\(2, 32, 32, 3\)"):
        hole_box(np.ones((2, 32, 32, 3)))
