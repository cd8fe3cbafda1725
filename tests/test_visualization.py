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

    def infer(self, images, masks):
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


def _capture_figures(monkeypatch):
    drawn = []
    real_close = plt.close

    def keep(fig):
        drawn.append(fig)
        real_close(fig)

    monkeypatch.setattr(visualization.plt, "close", keep)
    return drawn


def test_resize_nearest_repeats_pixels_for_integer_ratios_and_keeps_the_centres():
    tiles = np.arange(2 * 3 * 4 * 2, dtype=np.float32).reshape(2, 3, 4, 2)
    doubled = visualization._resize_nearest(tiles, 6, 8)
    np.testing.assert_array_equal(doubled, tiles.repeat(2, axis=1).repeat(2, axis=2))
    # 3 -> 5 rows: output row r shows input row floor((r + 0.5) * 3 / 5).
    odd = visualization._resize_nearest(tiles, 5, 4)
    np.testing.assert_array_equal(odd, tiles[:, [0, 0, 1, 2, 2]])


def test_plot_attention_is_one_axes_with_crops_rows_and_clipped_boxes(
    tmp_path, monkeypatch
):
    rng = np.random.default_rng(2)
    images = rng.random((2, 8, 8, 1)).astype(np.float32)
    crops = rng.random((2, 3, 4, 4, 1)).astype(np.float32)
    thetas = np.zeros((2, 3, 2, 3), np.float32)
    thetas[..., 0, 0] = thetas[..., 1, 1] = 0.5
    thetas[:, 2, 0, 2] = 0.9  # The third window reaches past the right edge.
    labels = np.array([[1, 2, 3], [4, 5, 6]])
    drawn = _capture_figures(monkeypatch)
    visualization.plot_attention(
        images, thetas, crops, labels, labels[:, ::-1], tmp_path / "a.png"
    )
    assert (tmp_path / "a.png").stat().st_size > 0
    (ax,) = drawn[0].axes
    titles = [t.get_text() for t in ax.get_xticklabels()]
    assert titles == ["input", "windows", "crop 1", "crop 2", "crop 3"]
    assert [t.get_text() for t in ax.get_yticklabels()] == [
        "label 123\npred 321",
        "label 456\npred 654",
    ]
    mosaic = ax.get_images()[0].get_array()
    assert mosaic.shape == (2 * 10 - 2, 5 * 10 - 2)
    # Row 1, crop 2 (column 3): the 4x4 crop shown at 8x8, each pixel twice.
    np.testing.assert_allclose(
        mosaic[10:18, 30:38], crops[1, 1, ..., 0].repeat(2, 0).repeat(2, 1)
    )
    lines = ax.get_lines()
    assert len(lines) == 2 * 3
    for k, line in enumerate(lines):
        row = k // 3
        clip = np.sort(line.get_clip_box().get_points(), axis=0)
        tile = ax.transData.transform([[9.5, 10 * row - 0.5], [17.5, 10 * row + 7.5]])
        np.testing.assert_allclose(clip, np.sort(tile, axis=0), atol=1e-6)
    # A half-size centred window of an 8x8 image spans pixels 1.5 .. 5.5.
    x = lines[0].get_xdata() - 10
    np.testing.assert_allclose([x.min(), x.max()], [1.5, 5.5], atol=1e-6)


def test_plot_glimpses_frames_grey_out_later_glimpses(tmp_path, monkeypatch):
    rng = np.random.default_rng(3)
    images = rng.random((2, 8, 8, 3)).astype(np.float32)
    clues = (rng.random((2, 8, 8, 1)) > 0.5).astype(np.float32)
    taus = np.tile(np.array([[0.5, 0.0, 0.0], [0.25, 0.5, 0.5]], np.float32), (2, 1, 1))
    patches = rng.random((2, 2, 4, 4, 3)).astype(np.float32)
    drawn = _capture_figures(monkeypatch)
    png, gif = visualization.plot_glimpses(
        images, clues, [7, 8], [7, 1], taus, patches,
        png_path=tmp_path / "g.png", gif_path=tmp_path / "g.gif",
    )  # fmt: skip
    assert png.stat().st_size > 0 and gif.stat().st_size > 0
    from PIL import Image

    with Image.open(gif) as frames:
        assert frames.n_frames == 2
    final, first_frame = drawn[0], drawn[1]
    (ax,) = final.axes
    assert [t.get_text() for t in ax.get_xticklabels()] == [
        "input", "clue", "glimpse 1", "glimpse 2",
    ]  # fmt: skip
    mosaic = ax.get_images()[0].get_array()
    # The clue (one channel) is shown grey in the RGB mosaic.
    np.testing.assert_allclose(mosaic[10:18, 10:18], np.repeat(clues[1], 3, -1))
    np.testing.assert_allclose(
        mosaic[0:8, 30:38], patches[0, 1].repeat(2, 0).repeat(2, 1)
    )
    # Boxes over the input and the clue, every glimpse: 2 rows x 2 x 2.
    assert len(ax.get_lines()) == 8
    (ax,) = first_frame.axes
    mosaic = ax.get_images()[0].get_array()
    np.testing.assert_allclose(mosaic[0:8, 30:38], 0.92)
    assert len(ax.get_lines()) == 4
    widths = sorted({line.get_linewidth() for line in ax.get_lines()})
    assert widths == [2.0]  # Only the current glimpse, drawn bold.
