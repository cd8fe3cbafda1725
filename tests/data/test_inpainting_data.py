"""Tests of the inpainting dataset dispatcher and the (image, mask) pipeline."""

import struct

import numpy as np
import pytest
import scipy.io

from cram_keras.data import svhn
from cram_keras.data.errors import DatasetError
from cram_keras.data.inpainting import (
    inpainting_dataset,
    inpainting_masks,
    load_inpainting_dataset,
    npz_test_size,
)
from cram_keras.data.masks import center_mask


def write_idx(path, array):
    """An uncompressed IDX file of unsigned bytes (LeCun's MNIST format)."""
    magic = 0x0800 | array.ndim
    header = struct.pack(f">I{array.ndim}I", magic, *array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def write_random_mnist(folder, seed, n_train, n_test):
    """Random uint8 digits as the four MNIST IDX files in ``folder``;
    returns ``{"train": (n_train, 28, 28), "t10k": (n_test, 28, 28)}``."""
    rng = np.random.default_rng(seed)
    digits = {
        split: rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        for split, n in (("train", n_train), ("t10k", n_test))
    }
    for split, images in digits.items():
        write_idx(folder / f"{split}-images-idx3-ubyte", images)
        write_idx(folder / f"{split}-labels-idx1-ubyte", np.arange(len(images)) % 10)
    return digits


def numbered_images(n):
    """uint8 (n, 32, 32, 3) whose pixel (0, 0, 0) holds the index mod 256."""
    images = np.zeros((n, 32, 32, 3), np.uint8)
    images[:, 0, 0, 0] = np.arange(n) % 256
    images[:, 5, 6, 2] = 255
    return images


def test_npz_real_subset_size_splits_883_200(tmp_path):
    images = numbered_images(1083)
    np.savez(tmp_path / "subset.npz", X=images)
    x_train, x_test = load_inpainting_dataset(f"npz:{tmp_path / 'subset.npz'}")
    assert x_train.shape == (883, 32, 32, 3)
    assert x_test.shape == (200, 32, 32, 3)
    assert x_train.dtype == np.float32 and x_test.dtype == np.float32
    np.testing.assert_array_equal(x_train, images[:883] / np.float32(255))
    np.testing.assert_array_equal(x_test, images[883:] / np.float32(255))
    assert x_test[0, 5, 6, 2] == 1.0


def test_npz_small_files_hold_out_the_last_fifth(tmp_path):
    np.savez(tmp_path / "small.npz", X=numbered_images(10))
    # A relative PATH is resolved against data_dir.
    x_train, x_test = load_inpainting_dataset("npz:small.npz", data_dir=tmp_path)
    assert (len(x_train), len(x_test)) == (8, 2)
    np.testing.assert_allclose(x_test[:, 0, 0, 0] * 255, [8, 9])
    assert [npz_test_size(n) for n in (2, 10, 999, 1000, 1083, 5000)] == [
        1,
        2,
        200,
        200,
        200,
        200,
    ]


def test_npz_images_must_be_32x32(tmp_path):
    np.savez(tmp_path / "big.npz", X=np.zeros((4, 64, 64, 3), np.uint8))
    with pytest.raises(DatasetError, match="32x32"):
        load_inpainting_dataset(f"npz:{tmp_path / 'big.npz'}")


def test_svhn_from_official_mat_files(tmp_path, monkeypatch):
    for split, (name, _, count) in list(svhn.SVHN_FILES.items()):
        monkeypatch.setitem(svhn.SVHN_FILES, split, (name, 0, count))
    images = np.zeros((32, 32, 3, 4), np.uint8)
    images[3, 7, 1, 2] = 255
    labels = np.array([[10], [1], [2], [3]], np.uint8)
    scipy.io.savemat(tmp_path / "train_32x32.mat", {"X": images, "y": labels})
    scipy.io.savemat(
        tmp_path / "test_32x32.mat", {"X": images[..., :2], "y": labels[:2]}
    )
    x_train, x_test = load_inpainting_dataset("svhn", data_dir=tmp_path)
    assert x_train.shape == (4, 32, 32, 3) and x_test.shape == (2, 32, 32, 3)
    assert x_train[2, 3, 7, 1] == 1.0
    assert x_train.sum() == 1.0


def test_mnist32_pads_two_pixels_each_side(tmp_path):
    digits = write_random_mnist(tmp_path, seed=0, n_train=5, n_test=3)
    x_train, x_test = load_inpainting_dataset("mnist32", data_dir=tmp_path)
    assert x_train.shape == (5, 32, 32, 1) and x_test.shape == (3, 32, 32, 1)
    assert x_train.dtype == np.float32
    np.testing.assert_array_equal(
        x_train[:, 2:30, 2:30, 0], digits["train"] / np.float32(255)
    )
    np.testing.assert_array_equal(
        x_test[:, 2:30, 2:30, 0], digits["t10k"] / np.float32(255)
    )
    border = np.ones((32, 32), bool)
    border[2:30, 2:30] = False
    assert np.all(x_train[:, border] == 0.0)


def test_the_first_n_images_are_those_of_the_whole_set(tmp_path):
    """n_train / n_test keep the first images (taken before the padding and
    conversion): against the digits themselves, for mnist32 and an npz."""
    digits = write_random_mnist(tmp_path, seed=1, n_train=7, n_test=5)
    x_train, x_test = load_inpainting_dataset(
        "mnist32", data_dir=tmp_path, n_train=3, n_test=2
    )
    assert x_train.shape == (3, 32, 32, 1) and x_test.shape == (2, 32, 32, 1)
    np.testing.assert_array_equal(
        x_train[:, 2:30, 2:30, 0], digits["train"][:3] / np.float32(255)
    )
    np.testing.assert_array_equal(
        x_test[:, 2:30, 2:30, 0], digits["t10k"][:2] / np.float32(255)
    )
    images = numbered_images(10)  # 8 train, the last 2 test
    np.savez(tmp_path / "ten.npz", X=images)
    x_train, x_test = load_inpainting_dataset(
        f"npz:{tmp_path / 'ten.npz'}", n_train=4, n_test=1
    )
    np.testing.assert_array_equal(x_train[:, 0, 0, 0] * 255, [0, 1, 2, 3])
    np.testing.assert_array_equal(x_test[:, 0, 0, 0] * 255, [8])
    # More than there are: all of them.
    x_train, x_test = load_inpainting_dataset(
        f"npz:{tmp_path / 'ten.npz'}", n_train=100, n_test=100
    )
    assert len(x_train) == 8 and len(x_test) == 2


@pytest.mark.parametrize("name", ["cifar10", "npz:", "SVHN", 3])
def test_unknown_names_list_the_valid_ones(name):
    with pytest.raises(ValueError, match="svhn.*mnist32.*npz:PATH"):
        load_inpainting_dataset(name)


def test_inpainting_masks_center_and_random():
    centre = inpainting_masks(3)
    assert centre.shape == (3, 32, 32, 1)
    assert np.all(centre == center_mask()[None])
    random = inpainting_masks(4, mask="random", seed=1)
    np.testing.assert_array_equal(random, inpainting_masks(4, mask="random", seed=1))
    with pytest.raises(ValueError, match="Received: mask='corner'"):
        inpainting_masks(2, mask="corner")


def test_dataset_center_mask_and_uint8_conversion():
    images = numbered_images(5)
    batches = list(inpainting_dataset(images, batch_size=2))
    assert [len(image) for image, _ in batches] == [2, 2, 1]
    image, mask = batches[0]
    assert image.dtype.name == "float32" and mask.dtype.name == "float32"
    np.testing.assert_array_equal(image.numpy(), images[:2] / np.float32(255))
    np.testing.assert_array_equal(
        mask.numpy(), np.repeat(center_mask()[None], 2, axis=0)
    )


def test_dataset_random_masks_are_seeded_and_repaired_when_shuffled():
    images = numbered_images(16).astype(np.float32) / 255
    expected_pool = inpainting_masks(16, mask="random", seed=7)

    def masks_of(**kwargs):
        return np.concatenate(
            [
                m.numpy()
                for _, m in inpainting_dataset(images, mask="random", seed=7, **kwargs)
            ]
        )

    np.testing.assert_array_equal(
        masks_of(), expected_pool
    )  # In order when not shuffled.
    shuffled = masks_of(shuffle=True)
    # The same pool, in another order.
    assert sorted(m.tobytes() for m in shuffled) == sorted(
        m.tobytes() for m in expected_pool
    )
    assert not np.array_equal(shuffled, expected_pool)
    np.testing.assert_array_equal(shuffled, masks_of(shuffle=True))


def test_dataset_per_image_masks_stay_paired_when_shuffled():
    images = numbered_images(12)
    masks = np.zeros((12, 32, 32, 1), np.float32)
    masks[np.arange(12), np.arange(12) + 10, 3] = 1.0  # Row 10 + i for image i.
    for image, mask in inpainting_dataset(
        images, mask=masks, batch_size=None, shuffle=True, seed=0
    ):
        index = round(float(image[0, 0, 0]) * 255)
        assert mask.numpy()[10 + index, 3, 0] == 1.0


def test_dataset_rejects_bad_inputs():
    images = numbered_images(3)
    with pytest.raises(ValueError, match=r"mask.shape=\(16, 16, 1\)"):
        inpainting_dataset(images, mask=np.zeros((16, 16, 1)))
    with pytest.raises(ValueError, match="Received: mask='centre'"):
        inpainting_dataset(images, mask="centre")
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        inpainting_dataset(images.astype(np.float32))
