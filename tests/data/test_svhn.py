"""Tests of the SVHN `.mat` / TFDS loader and the images-only `.npz` reader."""

import os

import numpy as np
import pytest
import scipy.io

from cram_keras.data import svhn
from cram_keras.data.errors import DatasetError
from cram_keras.data.svhn import load_images_npz, load_svhn, load_svhn_mat

# Official labels: 10 means digit 0.
TINY_LABELS = np.array([[10], [1], [5], [10], [9]], np.uint8)


def write_tiny_mat(path, num_images=5):
    """A small file in the official layout; pixel (row 3, col 7, green) of
    image 2 is 200, everything else 0."""
    images = np.zeros((32, 32, 3, num_images), np.uint8)
    images[3, 7, 1, 2] = 200
    scipy.io.savemat(path, {"X": images, "y": TINY_LABELS[:num_images]})
    return path


@pytest.fixture
def small_official_sizes(monkeypatch):
    """Lets tiny files carry the official names (no truncation check)."""
    for split, (name, _, count) in list(svhn.SVHN_FILES.items()):
        monkeypatch.setitem(svhn.SVHN_FILES, split, (name, 0, count))


def test_mat_layout_is_transposed_to_nhwc_and_label_10_is_0(tmp_path):
    images, labels = load_svhn_mat(write_tiny_mat(tmp_path / "tiny.mat"))
    assert images.shape == (5, 32, 32, 3)
    assert images.dtype == np.uint8
    assert images[2, 3, 7, 1] == 200
    assert images.sum() == 200
    np.testing.assert_array_equal(labels, [0, 1, 5, 0, 9])
    assert labels.dtype == np.int64


def test_load_svhn_reads_official_names_from_data_dir(tmp_path, small_official_sizes):
    write_tiny_mat(tmp_path / "train_32x32.mat")
    write_tiny_mat(tmp_path / "test_32x32.mat", num_images=3)
    data = load_svhn(tmp_path)
    assert set(data) == {"train", "test"}
    assert data["train"][0].shape == (5, 32, 32, 3)
    assert data["test"][0].shape == (3, 32, 32, 3)
    assert data["train"][0][2, 3, 7, 1] == 200
    np.testing.assert_array_equal(data["test"][1], [0, 1, 5])
    only_test = load_svhn(tmp_path, splits="test")
    assert set(only_test) == {"test"}


def test_official_name_below_official_size_is_truncated(tmp_path):
    path = write_tiny_mat(tmp_path / "train_32x32.mat")
    with pytest.raises(DatasetError, match="truncated") as info:
        load_svhn(tmp_path, splits=("train",))
    message = str(info.value)
    assert str(path) in message
    assert f"got {os.path.getsize(path)} bytes, expected 182040794" in message
    assert "re-download" in message


def test_truncated_file_with_any_name_fails_with_a_dataset_error(tmp_path):
    path = write_tiny_mat(tmp_path / "my_svhn.mat")
    content = path.read_bytes()
    path.write_bytes(content[: len(content) // 2])
    with pytest.raises(DatasetError, match="Could not read SVHN file") as info:
        load_svhn_mat(path)
    assert str(path) in str(info.value)
    assert info.value.__cause__ is not None  # SciPy's error, chained.


def test_missing_file_names_path_expected_files_and_tfds(tmp_path):
    with pytest.raises(DatasetError) as info:
        load_svhn(tmp_path)
    message = str(info.value)
    assert str(tmp_path / "train_32x32.mat") in message
    assert "test_32x32.mat" in message
    assert "TFDS" in message
    assert f"the folder given as --data-dir ({str(tmp_path)!r})" in message
    # An empty --data-dir is shown as received, not as nothing.
    with pytest.raises(DatasetError, match=r"given as --data-dir \(''\)"):
        load_svhn("")


def test_every_file_is_checked_before_reading(tmp_path, monkeypatch):
    write_tiny_mat(tmp_path / "train_32x32.mat")  # Truncated for its name.
    monkeypatch.setitem(svhn.SVHN_FILES, "train", ("train_32x32.mat", 0, 5))
    with pytest.raises(DatasetError, match="test_32x32.mat"):
        load_svhn(tmp_path)


@pytest.mark.parametrize(
    "contents, match",
    [
        (
            {"images": np.zeros((32, 32, 3, 2), np.uint8)},
            r"lacks the variable\(s\) \['X', 'y'\]",
        ),
        (
            {"X": np.zeros((32, 32, 3, 2), np.float32), "y": np.ones((2, 1))},
            "dtype=float32",
        ),
        (
            {"X": np.zeros((28, 28, 1, 2), np.uint8), "y": np.ones((2, 1))},
            r"shape=\(28, 28, 1, 2\)",
        ),
        (
            {"X": np.zeros((32, 32, 3, 2), np.uint8), "y": np.ones((3, 1))},
            r"y must have shape \(2, 1\)",
        ),
        ({"X": np.zeros((32, 32, 3, 2), np.uint8), "y": np.full((2, 1), 11)}, "max=11"),
    ],
)
def test_wrong_contents_are_named(tmp_path, contents, match):
    path = tmp_path / "odd.mat"
    scipy.io.savemat(path, contents)
    with pytest.raises(DatasetError, match=match) as info:
        load_svhn_mat(path)
    assert str(path) in str(info.value)


def test_unknown_split_is_rejected():
    with pytest.raises(ValueError, match="Received: splits=\\('extra',\\)"):
        load_svhn("/nonexistent", splits=("extra",))


def test_default_source_is_tfds_svhn_cropped():
    tfds = pytest.importorskip("tensorflow_datasets")
    with tfds.testing.mock_data(num_examples=6):  # No network.
        data = load_svhn()
    for split in ("train", "test"):
        images, labels = data[split]
        assert images.shape == (6, 32, 32, 3)
        assert images.dtype == np.uint8
        assert labels.shape == (6,)
        assert labels.dtype == np.int64
        assert labels.min() >= 0 and labels.max() <= 9


def test_npz_reader_returns_x(tmp_path):
    images = np.arange(2 * 4 * 4 * 3, dtype=np.uint8).reshape(2, 4, 4, 3)
    np.savez(tmp_path / "images.npz", X=images)
    np.testing.assert_array_equal(load_images_npz(tmp_path / "images.npz"), images)


@pytest.mark.parametrize(
    "arrays, match",
    [
        ({"images": np.zeros((2, 4, 4, 3), np.uint8)}, "no key 'X'.*images"),
        ({"X": np.zeros((2, 4, 4, 3), np.float32)}, "dtype=float32"),
        ({"X": np.zeros((2, 4, 4), np.uint8)}, r"rank 4.*shape=\(2, 4, 4\)"),
    ],
)
def test_npz_reader_errors(tmp_path, arrays, match):
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(DatasetError, match=match):
        load_images_npz(path)


def test_npz_reader_missing_and_damaged_files(tmp_path):
    with pytest.raises(DatasetError, match="not found"):
        load_images_npz(tmp_path / "absent.npz")
    path = tmp_path / "damaged.npz"
    np.savez(path, X=np.zeros((2, 4, 4, 3), np.uint8))
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(DatasetError, match="Could not read") as info:
        load_images_npz(path)
    assert str(path) in str(info.value)
