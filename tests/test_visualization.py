"""The inpainting figure's tile mosaic, and the figure itself: one axes with
every tile where it belongs and the glimpse outlines clipped to the input
tile of their row."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from cram_keras import visualization  # noqa: E402


def test_tile_mosaic_places_every_tile_and_fills_the_gaps():
    rng = np.random.default_rng(0)
    columns = [rng.random((3, 5, 4, 2)).astype(np.float32) for _ in range(4)]
    mosaic, step = visualization.tile_mosaic(columns, gap=2, background=-1.0)
    assert step == (7, 6)
    assert mosaic.shape == (3 * 7 - 2, 4 * 6 - 2, 2)
    covered = np.zeros(mosaic.shape[:2], bool)
    for j, column in enumerate(columns):
        for i in range(3):
            rows, cols = slice(7 * i, 7 * i + 5), slice(6 * j, 6 * j + 4)
            np.testing.assert_array_equal(mosaic[rows, cols], column[i])
            covered[rows, cols] = True
    np.testing.assert_array_equal(mosaic[~covered], -1.0)


def test_tile_mosaic_refuses_columns_of_another_shape():
    with pytest.raises(ValueError, match=r"column 1 of shape \(2, 5, 5, 1\)"):
        visualization.tile_mosaic([np.zeros((2, 4, 4, 1)), np.zeros((2, 5, 5, 1))])


class StubInpainter:
    """`generate` as CRAMInpainter's: (generated images, glimpse params)."""

    def __init__(self, tau):
        self.tau = tau

    def generate(self, images, masks, training=False):
        return 1.0 - images, np.repeat(self.tau[None], len(images), axis=0)


def test_inpainting_figure_is_one_axes_with_clipped_outlines(tmp_path, monkeypatch):
    rng = np.random.default_rng(1)
    images = rng.random((3, 8, 8, 1)).astype(np.float32)
    masks = np.zeros_like(images)
    masks[:, 2:5, 3:6] = 1.0
    # One glimpse inside the image, one reaching past its right edge.
    tau = np.array([[0.5, 0.0, 0.0], [0.5, 0.9, 0.0]], np.float32)
    drawn = {}
    real_close = plt.close

    def keep(fig):
        drawn["fig"] = fig
        real_close(fig)

    monkeypatch.setattr(visualization.plt, "close", keep)
    path, strips = visualization.inpainting_figure(
        StubInpainter(tau), images, masks, tmp_path / "f.png", extra={"other": images}
    )
    assert (tmp_path / "f.png").stat().st_size > 0
    np.testing.assert_allclose(strips[:, :, 16:24], 1.0 - images)
    (ax,) = drawn["fig"].axes
    assert [t.get_text() for t in ax.get_xticklabels()] == [
        "ground truth",
        "input",
        "generated",
        "completed",
        "other",
    ]
    mosaic = ax.get_images()[0].get_array()
    assert mosaic.shape == (3 * 10 - 2, 5 * 10 - 2)
    # Row 1, "generated" column: 1 - image.
    np.testing.assert_allclose(mosaic[10:18, 20:28], 1.0 - images[1, ..., 0])
    lines = ax.get_lines()
    assert len(lines) == 3 * 2
    for k, line in enumerate(lines):
        row = k // 2
        # The outline sits on the input tile of its row (x offset 10) ...
        x, y = line.get_xdata(), line.get_ydata()
        assert 10 - 0.5 <= x.min() and y.min() >= 10 * row - 0.5
        # ... and is clipped to that tile.
        # (Matplotlib keeps a rectangular clip path as a clip box.)
        clip = np.sort(line.get_clip_box().get_points(), axis=0)
        tile = ax.transData.transform([[9.5, 10 * row - 0.5], [17.5, 10 * row + 7.5]])
        np.testing.assert_allclose(clip, np.sort(tile, axis=0), atol=1e-6)
