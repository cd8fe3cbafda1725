"""Glimpse-window statistics against hand-computed cases."""

import numpy as np
import pytest

from cram_keras.evaluation.glimpses import (
    affine_window_area,
    ring,
    window_boxes,
    window_statistics,
)


def test_window_boxes_in_pixels():
    # s = 0.5 centred: the middle half of a 32-px image, edges 8..24.
    np.testing.assert_allclose(window_boxes([0.5, 0.0, 0.0], 32, 32), [8, 8, 24, 24])
    # Full image; a quarter-size window in the top-left corner.
    np.testing.assert_allclose(window_boxes([1.0, 0.0, 0.0], 32, 16), [0, 0, 16, 32])
    np.testing.assert_allclose(window_boxes([0.25, -0.75, -0.75], 32, 32), [0, 0, 8, 8])


def test_ring_is_the_dilated_hole_minus_the_hole():
    mask = np.zeros((1, 10, 10, 1))
    mask[0, 4:6, 4:6] = 1
    r = ring(mask, 2)
    expected = np.zeros((10, 10), bool)
    expected[2:8, 2:8] = True
    expected[4:6, 4:6] = False
    np.testing.assert_array_equal(r[0], expected)
    assert ring(mask, 1)[0].sum() == 16 - 4


def test_statistics_of_stacked_and_spread_windows():
    mask = np.zeros((2, 32, 32, 1))
    mask[:, 12:20, 12:20] = 1  # the centred 8x8 hole; its 2-px ring: 12x12 - 8x8
    stacked = np.array([[0.5, 0.0, 0.0]] * 3)  # 3 windows 8..24: cover all
    # Left half of the ring only: windows over columns 0..16 (s = 0.5, tx = -0.5).
    left = np.array([[0.5, -0.5, 0.0], [0.5, -0.5, 0.0], [0.25, 0.75, 0.75]])
    stats = window_statistics(np.stack([stacked, left]), mask)
    assert stats["mean_scale"] == pytest.approx((1.5 + 1.25) / 6)
    # Image 0: distance 0; image 1: pairs (A, A) 0, (A, B) twice: centre A =
    # (8, 16), B = (28, 28): sqrt(20^2 + 12^2).
    d = np.hypot(20, 12)
    assert stats["mean_pairwise_distance_px"] == pytest.approx(
        (0 + (0 + 2 * d) / 3) / 2
    )
    # Ring of image 1: columns 10..15 of rows 10..21 are inside x <= 16
    # (pixel centres 10.5..15.5): 6 columns x 12 rows minus the hole's
    # 4 columns x 8 rows = 72 - 32 = 40 of 80 ring pixels; B covers none.
    assert stats["ring_coverage"] == pytest.approx((1.0 + 40 / 80) / 2)
    assert stats["hole_coverage"] == pytest.approx((1.0 + 0.5) / 2)
    assert (
        window_statistics(stacked[None, :1], mask[:1])["mean_pairwise_distance_px"]
        is None
    )


def _polygon_area(points):
    """Shoelace area of a polygon given by its (K, 2) vertices in order."""
    x, y = points[:, 0], points[:, 1]
    return 0.5 * abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1)))


def test_affine_window_area_is_the_sampled_parallelogram_over_the_image():
    rng = np.random.default_rng(3)
    thetas = rng.normal(size=(5, 4, 2, 3))
    corners = np.array([[-1, -1, 1], [1, -1, 1], [1, 1, 1], [-1, 1, 1]], float)
    expected = np.array(
        [[_polygon_area(corners @ t.T) / 4.0 for t in row] for row in thetas]
    )
    np.testing.assert_allclose(affine_window_area(thetas), expected, rtol=1e-12)
    # The flat (..., 6) form of the same matrices.
    flat = affine_window_area(thetas.reshape(5, 4, 6))
    np.testing.assert_allclose(flat, expected, rtol=1e-12)
    # Identity: the whole image; a scale of 1/3 per axis: a ninth of it.
    assert affine_window_area([[1, 0, 0.3], [0, 1, -0.2]]) == 1.0
    assert affine_window_area([1 / 3, 0, 0, 0, 1 / 3, 0]) == pytest.approx(1 / 9)
