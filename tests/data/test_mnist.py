"""Tests for cram_keras.data.mnist: IDX reading, validation, TFDS path."""

import os
import sys
import types

import numpy as np
import pytest

from cram_keras.data.errors import DatasetError
from cram_keras.data.mnist import MNIST_OFFICIAL_GZ, load_mnist


def test_reads_official_gzipped_files(mnist_dir):
    folder, arrays, _ = mnist_dir
    mnist = load_mnist(folder)
    for key, expected in arrays.items():
        loaded = getattr(mnist, key)
        np.testing.assert_array_equal(loaded, expected)
    assert mnist.x_train.dtype == np.uint8 and mnist.x_train.shape == (7, 28, 28)
    assert mnist.y_train.dtype == np.int64 and mnist.y_test.dtype == np.int64


def test_reads_uncompressed_files(mnist_dir, write_idx):
    folder, arrays, names = mnist_dir
    (folder / names["x_test"]).unlink()
    write_idx(folder / names["x_test"].removesuffix(".gz"), arrays["x_test"])
    np.testing.assert_array_equal(load_mnist(folder).x_test, arrays["x_test"])


def test_missing_file_names_path_and_expected_files(mnist_dir):
    folder, _, names = mnist_dir
    (folder / names["y_test"]).unlink()
    with pytest.raises(DatasetError) as info:
        load_mnist(folder)
    message = str(info.value)
    assert str(folder / names["y_test"]) in message
    assert all(name in message for name in names.values())
    assert "--data-dir" in message


@pytest.mark.parametrize("name", ["nowhere", "", "a_file"])
def test_missing_directory(tmp_path, monkeypatch, name):
    """Named as received (an empty --data-dir too), with what to pass."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a_file").write_text("")
    with pytest.raises(DatasetError) as info:
        load_mnist(name)
    message = str(info.value)
    assert f"does not exist or is not a folder. Received: {name!r}." in message
    assert "Pass --data-dir DIR" in message


def test_truncated_gzip_says_redownload(mnist_dir):
    folder, _, names = mnist_dir
    path = folder / names["x_train"]
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DatasetError) as info:
        load_mnist(folder)
    message = str(info.value)
    assert names["x_train"] in message
    assert "truncated" in message and "re-download" in message


def test_not_a_gzip_file(mnist_dir):
    folder, _, names = mnist_dir
    (folder / names["y_train"]).write_bytes(b"<html>404 Not Found</html>")
    with pytest.raises(DatasetError, match="not a valid gzip file"):
        load_mnist(folder)


def test_bad_magic_number_swapped_files(mnist_dir, write_idx):
    folder, arrays, names = mnist_dir
    # A labels file under the images name (magic 2049 instead of 2051).
    write_idx(folder / names["x_train"], arrays["y_train"])
    with pytest.raises(DatasetError) as info:
        load_mnist(folder)
    message = str(info.value)
    assert "magic number" in message and "2051" in message and "2049" in message
    assert "swapped" in message


def test_bad_magic_number_garbage(mnist_dir, write_idx):
    folder, arrays, names = mnist_dir
    write_idx(folder / names["x_test"], arrays["x_test"], magic=0x12345678)
    with pytest.raises(DatasetError, match="magic number"):
        load_mnist(folder)


def test_header_disagrees_with_byte_count(mnist_dir, write_idx):
    folder, arrays, names = mnist_dir
    # The header claims 8 images but 7 are stored.
    write_idx(folder / names["x_train"], arrays["x_train"], shape=(8, 28, 28))
    with pytest.raises(DatasetError, match=r"does not match its header.*\(8, 28, 28\)"):
        load_mnist(folder)


def test_images_not_28x28(mnist_dir, write_idx):
    folder, _, names = mnist_dir
    write_idx(folder / names["x_train"], np.zeros((7, 32, 32)))
    with pytest.raises(DatasetError, match="28x28"):
        load_mnist(folder)


def test_image_and_label_counts_differ(mnist_dir, write_idx):
    folder, arrays, names = mnist_dir
    write_idx(folder / names["y_train"], arrays["y_train"][:5])
    with pytest.raises(DatasetError, match="7 images but .* 5 labels"):
        load_mnist(folder)


def test_labels_outside_0_to_9(mnist_dir, write_idx):
    folder, arrays, names = mnist_dir
    labels = arrays["y_test"].copy()
    labels[1] = 10
    write_idx(folder / names["y_test"], labels)
    with pytest.raises(DatasetError, match="outside 0..9.*index 1 with value 10"):
        load_mnist(folder)


def test_official_size_with_wrong_md5(mnist_dir):
    folder, _, names = mnist_dir
    size, md5 = MNIST_OFFICIAL_GZ[names["y_train"]]
    (folder / names["y_train"]).write_bytes(b"\0" * size)
    with pytest.raises(DatasetError, match=f"official md5: expected {md5}"):
        load_mnist(folder)


def _fake_tfds(load):
    module = types.ModuleType("tensorflow_datasets")
    module.load = load
    module.as_numpy = lambda tree: tree
    return module


def test_tfds_default_path_under_mock_data():
    # The real TFDS code path, with TFDS's own mock data: no network.
    import tensorflow_datasets as tfds

    with tfds.testing.mock_data(num_examples=7):
        mnist = load_mnist()
    assert mnist.x_train.shape == (7, 28, 28) and mnist.x_train.dtype == np.uint8
    assert mnist.x_test.shape == (7, 28, 28)
    assert mnist.y_train.dtype == np.int64
    assert mnist.y_train.min() >= 0 and mnist.y_train.max() <= 9


def test_tfds_failure_suggests_the_data_dir_flag(monkeypatch):
    def load(name, **kwargs):
        raise ConnectionError("no route to host")

    monkeypatch.setitem(sys.modules, "tensorflow_datasets", _fake_tfds(load))
    with pytest.raises(DatasetError, match="no route to host.*--data-dir DIR"):
        load_mnist()


@pytest.mark.slow
@pytest.mark.skipif(
    not os.environ.get("CRAM_KERAS_MNIST_DIR"),
    reason="set CRAM_KERAS_MNIST_DIR to a folder of the official MNIST files",
)
def test_real_mnist_files():
    mnist = load_mnist(os.environ["CRAM_KERAS_MNIST_DIR"])
    assert mnist.x_train.shape == (60_000, 28, 28) and mnist.x_test.shape == (
        10_000,
        28,
        28,
    )
    assert mnist.y_train[:5].tolist() == [5, 0, 4, 1, 9]
    assert np.bincount(mnist.y_test).tolist()[:2] == [980, 1135]
