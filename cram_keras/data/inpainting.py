"""Inpainting data: 32x32 images in [0, 1] and their occlusion masks.

`load_inpainting_dataset(name)` returns NumPy train and test images for the
CRAM inpainting experiment (docs/design.md, E3); `inpainting_masks` makes the
masks in NumPy and `inpainting_dataset` pairs images with masks in a
`tf.data.Dataset` for TensorFlow training. `load_images` and
`evaluation_masks` do the same for the settings of an inpainting Config
(`cram_keras.experiments.inpaint_config`).

Datasets (`name`):

- `svhn`: SVHN cropped digits, 32x32x3, as in the paper: the official
  `.mat` files in `data_dir`, else TFDS `svhn_cropped` (prepared, or its
  train and test files downloaded), else the bundled 1,083 real SVHN
  training images (883 train / 200 test), from
  `cram_keras.data.sources.load_svhn_images`.
- `mnist32`: MNIST zero-padded by 2 pixels on each side to 32x32x1 (an
  offline stand-in), from `cram_keras.data.sources.load_mnist_data`: the
  official files in `data_dir`, else TFDS, else the bundled 5,000 train /
  1,000 test digits.
- `npz:PATH`: an images-only `.npz` file (key `X`, uint8 NHWC, 32x32), for
  example the real 1,083-image SVHN subset. A relative PATH is taken
  relative to `data_dir` when one is given. Split: the last 200 images are
  the test set when the file holds at least 1,000 images (1,083 -> 883
  train / 200 test); smaller files hold out their last 20% (at least one).
"""

import dataclasses
import os

import numpy as np

from cram_keras.data import sources
from cram_keras.data.errors import DatasetError
from cram_keras.data.masks import center_mask, random_rectangle_masks
from cram_keras.data.svhn import load_images_npz

DATASET_NAMES = ("svhn", "mnist32", "npz:PATH")
IMAGE_SIZE = 32
MASK_KINDS = ("center", "random")
# npz split: files with at least _NPZ_MIN_FOR_FIXED_TEST images keep the last
# _NPZ_TEST_SIZE as test; smaller ones the last _NPZ_TEST_FRACTION.
_NPZ_TEST_SIZE = 200
_NPZ_MIN_FOR_FIXED_TEST = 1000
_NPZ_TEST_FRACTION = 0.2


def load_inpainting_dataset(
    name,
    data_dir=None,
    *,
    bundled=False,
    mnist=None,
    network_timeout=sources.DEFAULT_NETWORK_TIMEOUT,
    return_source=False,
    n_train=None,
    n_test=None,
):
    """Loads train and test images for inpainting.

    Args:
        name: `"svhn"`, `"mnist32"` or `"npz:PATH"` (see the module
            docstring for sources and the npz split).
        data_dir: directory of the official files (`svhn`: the `.mat`
            files, `mnist32`: the MNIST files); `None` uses TFDS when it is
            prepared or reachable, else the bundled sample (with a note on
            stderr). For `npz:PATH`, the base of a relative PATH.
        bundled: for `svhn` and `mnist32`, use the bundled sample when no
            `data_dir` is given.
        mnist: for `mnist32`, digits already loaded: an `MnistData` or the
            `(MnistData, DataSource)` pair of `load_mnist_data`.
        network_timeout: seconds the TFDS network check may take at most.
        return_source: also return the `DataSource` of the images.
        n_train, n_test: keep only the first ``n_train`` training and
            ``n_test`` test images (None: all), taken before the images are
            padded and converted, so a small run does not convert the rest.

    Returns:
        `(x_train, x_test)`: float32 arrays (N, 32, 32, C) in [0, 1], C = 3
        for SVHN, 1 for MNIST; `(x_train, x_test, source)` with
        `return_source=True`.

    Raises:
        ValueError: an unknown name, or `bundled` / `mnist` with a dataset
            they do not apply to.
        DatasetError: a missing or malformed data file.
    """
    if not isinstance(name, str):
        raise ValueError(
            f"`name` must be a string, one of {DATASET_NAMES}. Received: name={name!r}"
        )
    if mnist is not None and name != "mnist32":
        raise ValueError(
            f"`mnist` applies to the mnist32 dataset only. Received: name={name!r}"
        )
    if name == "svhn":
        x_train, x_test, source = sources.load_svhn_images(
            data_dir, bundled=bundled, network_timeout=network_timeout
        )
    elif name == "mnist32":
        data, source = sources.resolve_mnist(
            data_dir, bundled=bundled, mnist=mnist, network_timeout=network_timeout
        )
        x_train = _pad_to_32(data.x_train[slice(n_train)])
        x_test = _pad_to_32(data.x_test[slice(n_test)])
        source = dataclasses.replace(
            source,
            name="mnist32",
            description=f"{source.description}, zero-padded to 32x32",
        )
    elif name.startswith("npz:") and len(name) > len("npz:"):
        if bundled:
            raise ValueError(
                "`bundled` applies to the svhn and mnist32 datasets, not to "
                f"npz:PATH. Received: name={name!r}"
            )
        x_train, x_test, source = _load_npz_split(name[len("npz:") :], data_dir)
    else:
        raise ValueError(
            f"Unknown inpainting dataset. Valid names: {', '.join(DATASET_NAMES)} "
            f"(PATH: a .npz file with key X). Received: --dataset {name!r}"
        )
    x_train = _to_unit_float(x_train[slice(n_train)])
    x_test = _to_unit_float(x_test[slice(n_test)])
    return (x_train, x_test, source) if return_source else (x_train, x_test)


def check_inpainting_images(name, images):
    """Refuses, before training, images that would fail later
    (`DatasetError`): the classical baselines and the figures need 1 or 3
    channels, the networks 32x32 pixels. ``name``: the dataset, for the
    message."""
    channels = images.shape[-1]
    if channels not in (1, 3):
        raise DatasetError(
            f"{name}: images must have 1 or 3 channels (grey or RGB; the "
            f"classical baselines and the figures need one of them). Received: "
            f"{channels} channels, shape {tuple(images.shape[1:])}. Convert the "
            "images to grey or RGB."
        )
    if images.shape[1:3] != (IMAGE_SIZE, IMAGE_SIZE):
        raise DatasetError(
            f"{name}: images must be {IMAGE_SIZE}x{IMAGE_SIZE}. Received: "
            f"{tuple(images.shape[1:3])}. Resize them to {IMAGE_SIZE}x{IMAGE_SIZE}."
        )


def npz_test_size(num_images):
    """Number of test images (taken from the end) of an `npz:` dataset."""
    if num_images >= _NPZ_MIN_FOR_FIXED_TEST:
        return _NPZ_TEST_SIZE
    return max(1, int(round(_NPZ_TEST_FRACTION * num_images)))


def inpainting_masks(
    num_images,
    image_size=IMAGE_SIZE,
    mask="center",
    hole_size=8,
    min_size=4,
    max_size=16,
    seed=None,
):
    """Masks for `num_images` images, in NumPy.

    Args:
        num_images: number of masks.
        image_size: side of the square images.
        mask: `"center"` (the paper's centred `hole_size` square, the same
            for every image) or `"random"` (rectangles with sides in
            `min_size .. max_size`, see `random_rectangle_masks`).
        hole_size: side of the centred hole.
        min_size, max_size: side range of random holes.
        seed: seed of the random holes.

    Returns:
        float32 array (num_images, image_size, image_size, 1), 1 = hole.
    """
    if mask == "center":
        one = center_mask(image_size, hole_size)
        return np.repeat(one[None], num_images, axis=0)
    if mask == "random":
        return random_rectangle_masks(num_images, image_size, min_size, max_size, seed)
    raise ValueError(f"`mask` must be one of {MASK_KINDS}. Received: mask={mask!r}")


def inpainting_dataset(
    images,
    mask="center",
    batch_size=64,
    shuffle=False,
    seed=None,
    hole_size=8,
    min_size=4,
    max_size=16,
    drop_remainder=False,
):
    """A `tf.data.Dataset` of `(image, mask)` pairs for training or scoring.

    Masks are made in NumPy (`inpainting_masks`); TensorFlow only batches,
    shuffles and converts uint8 images to [0, 1].

    - `mask="center"` or one (H, W, 1) array: every image gets that mask.
    - `mask="random"`: one random rectangle per image, drawn once from
      `seed`. With `shuffle=True` images and masks are shuffled
      independently, so each epoch pairs each image with another hole.
    - `mask` an (N, H, W, 1) array: mask i belongs to image i; shuffling
      keeps the pairs.

    Args:
        images: (N, H, W, C) uint8 (0..255) or float in [0, 1], H == W.
        mask: see above.
        batch_size: batch size, or `None` for single examples.
        shuffle: reshuffle every epoch.
        seed: seed of the shuffles and of the random masks.
        hole_size, min_size, max_size: as in `inpainting_masks`.
        drop_remainder: drop a last, smaller batch.

    Returns:
        A dataset of `(image, mask)`: float32 (B, H, W, C) in [0, 1] and
        float32 (B, H, W, 1), 1 = hole.
    """
    import tensorflow as tf  # The TensorFlow edge of a NumPy-first module.

    images = np.asarray(images)
    if images.ndim != 4 or images.shape[1] != images.shape[2]:
        raise ValueError(
            f"`images` must have shape (N, H, W, C) with H == W. Received: images.shape={images.shape}"
        )
    if images.dtype != np.uint8:
        if not np.issubdtype(images.dtype, np.floating):
            raise ValueError(
                f"`images` must be uint8 or float. Received: dtype={images.dtype}"
            )
        if images.size and (images.min() < 0.0 or images.max() > 1.0):
            raise ValueError(
                f"Float `images` must lie in [0, 1]. Received: min={images.min()}, max={images.max()}"
            )
        images = images.astype(np.float32, copy=False)
    num_images, image_size = images.shape[:2]
    if isinstance(mask, str):
        # "random": a pool of one mask per image; "center": one fixed mask.
        masks = inpainting_masks(
            num_images if mask == "random" else 1,
            image_size,
            mask,
            hole_size=hole_size,
            min_size=min_size,
            max_size=max_size,
            seed=seed,
        )
        pairing = "pool" if mask == "random" else "fixed"
        masks = masks if mask == "random" else masks[0]
    else:
        masks = np.asarray(mask, np.float32)
        if masks.shape == images.shape[1:3] + (1,):
            pairing = "fixed"
        elif masks.shape == images.shape[:3] + (1,):
            pairing = "paired"
        else:
            raise ValueError(
                f"`mask` must be one of {MASK_KINDS}, an array {images.shape[1:3] + (1,)} "
                f"or {images.shape[:3] + (1,)}. Received: mask.shape={masks.shape}"
            )
    buffer = max(num_images, 1)

    def to_unit(image):
        if image.dtype == tf.uint8:
            return tf.cast(image, tf.float32) / 255.0
        return image

    if pairing == "fixed":
        fixed = tf.constant(masks)
        dataset = tf.data.Dataset.from_tensor_slices(images)
        if shuffle:
            dataset = dataset.shuffle(buffer, seed=seed)
        dataset = dataset.map(lambda image: (to_unit(image), fixed))
    elif pairing == "paired":
        dataset = tf.data.Dataset.from_tensor_slices((images, masks))
        if shuffle:
            dataset = dataset.shuffle(buffer, seed=seed)
        dataset = dataset.map(lambda image, m: (to_unit(image), m))
    else:  # A pool of random masks, re-paired every epoch when shuffled.
        image_data = tf.data.Dataset.from_tensor_slices(images)
        mask_data = tf.data.Dataset.from_tensor_slices(masks)
        if shuffle:
            image_data = image_data.shuffle(buffer, seed=seed)
            mask_seed = None if seed is None else seed + 1
            mask_data = mask_data.shuffle(buffer, seed=mask_seed)
        dataset = tf.data.Dataset.zip((image_data, mask_data))
        dataset = dataset.map(lambda image, m: (to_unit(image), m))
    if batch_size is not None:
        dataset = dataset.batch(batch_size, drop_remainder=drop_remainder)
    return dataset.prefetch(tf.data.AUTOTUNE)


def dataset_label(name):
    """Short name of a dataset for titles and directories: `npz:a/b.npz` -> `b`."""
    if name.startswith("npz:"):
        return os.path.splitext(os.path.basename(name[len("npz:") :]))[0]
    return name


def load_images(config, bundled=False, return_source=False):
    """Train and test images of an inpainting Config (its `dataset`,
    `data_dir`, `n_train`, `n_test`): float32 [0, 1], (N, 32, 32, C),
    subsampled; with ``return_source`` also the DataSource."""
    bundled = bundled and config.dataset in ("svhn", "mnist32")
    x_train, x_test, source = load_inpainting_dataset(
        config.dataset,
        config.data_dir,
        bundled=bundled,
        return_source=True,
        n_train=config.n_train,
        n_test=config.n_test,
    )
    if return_source:
        return x_train, x_test, source
    return x_train, x_test


def mask_settings(config):
    """The holes an inpainting Config asks for, as the keyword arguments
    `mask`, `hole_size`, `min_size` and `max_size` of `inpainting_masks`
    and the datasets."""
    return dict(
        mask=config.mask,
        hole_size=config.hole_size,
        min_size=config.min_hole,
        max_size=config.max_hole,
    )


def evaluation_masks(config, num_images, image_size=32):
    """The masks every method is scored with, as an inpainting Config sets
    them (`mask_settings`, `test_mask_seed`): (N, H, W, 1), 1 = hole."""
    return inpainting_masks(
        num_images, image_size, seed=config.test_mask_seed, **mask_settings(config)
    )


def _load_npz_split(path, data_dir):
    if data_dir is not None and not os.path.isabs(path):
        path = os.path.join(os.fspath(data_dir), path)
    images = load_images_npz(path)
    if images.shape[1:3] != (IMAGE_SIZE, IMAGE_SIZE):
        raise DatasetError(
            f"{path}: inpainting images must be {IMAGE_SIZE}x{IMAGE_SIZE}. "
            f"Received: X.shape={images.shape}; resize them first."
        )
    if len(images) < 2:
        raise DatasetError(
            f"{path}: need at least 2 images to split into train and test. "
            f"Received: {len(images)}."
        )
    num_test = npz_test_size(len(images))
    path = os.path.abspath(path)
    source = sources.DataSource(
        name="npz",
        origin="npz",
        path=path,
        n_train=len(images) - num_test,
        n_test=num_test,
        description=(
            f"images from {path}: {len(images) - num_test:,} train / "
            f"{num_test:,} test (the last {num_test:,} held out)"
        ),
    )
    return images[:-num_test], images[-num_test:], source


def _pad_to_32(digits):
    """uint8 (N, 28, 28) MNIST -> (N, 32, 32, 1), 2 zero pixels each side."""
    digits = np.asarray(digits)
    if digits.shape[1:] != (28, 28):
        raise DatasetError(
            f"MNIST images must be 28x28. Received: shape={digits.shape}"
        )
    return np.pad(digits, ((0, 0), (2, 2), (2, 2)))[..., None]


def _to_unit_float(images):
    return images.astype(np.float32) / np.float32(255.0)
