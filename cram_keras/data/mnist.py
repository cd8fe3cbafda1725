"""MNIST from TensorFlow Datasets or from the four official IDX files.

`load_mnist()` returns the 60,000 training and 10,000 test digits as uint8
arrays of shape (N, 28, 28) with int64 labels. Without `data_dir` it asks
TensorFlow Datasets (which downloads MNIST once, so it needs internet the
first time); with `data_dir` it reads the official files, which is how the
project runs offline on the full set (`cram_keras.data.sources` chooses
between these and the bundled sample):

    train-images-idx3-ubyte.gz  train-labels-idx1-ubyte.gz
    t10k-images-idx3-ubyte.gz   t10k-labels-idx1-ubyte.gz

(the uncompressed names, without `.gz`, are accepted too). Every file is
checked: a missing or truncated file, a wrong magic number, a header that
disagrees with the file's length, image and label counts that differ, or a
label outside 0..9 each raise `DatasetError` with a message that names the
file and says what to do. A file whose size equals the official size must
also have the official md5.

Note on order: TFDS stores MNIST shuffled, so `x_train[i]` is not the i-th
digit of the official file. Code that splits the training set by index (the
RNN-SPN validation split takes official digits 50,000..59,999) gets a
different, equally random partition from TFDS; pass `data_dir` to get the
official order.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import os
import struct
import zlib

import numpy as np

from cram_keras.data.errors import DatasetError

# Official file names, keyed by the field of `MnistData` they fill.
MNIST_FILES = {
    "x_train": "train-images-idx3-ubyte.gz",
    "y_train": "train-labels-idx1-ubyte.gz",
    "x_test": "t10k-images-idx3-ubyte.gz",
    "y_test": "t10k-labels-idx1-ubyte.gz",
}

# (size in bytes, md5) of the official .gz files.
MNIST_OFFICIAL_GZ = {
    "train-images-idx3-ubyte.gz": (9912422, "f68b3c2dcbeaaa9fbdd348bbdeb94873"),
    "train-labels-idx1-ubyte.gz": (28881, "d53e105ee54ea40749a09fcbcd1e9432"),
    "t10k-images-idx3-ubyte.gz": (1648877, "9fb629c4189551a2d022fa330f9573f3"),
    "t10k-labels-idx1-ubyte.gz": (4542, "ec29112dd5afa0611ce80d1b7f02629c"),
}

IDX_IMAGES_MAGIC = 2051  # 0x00000803: unsigned bytes, 3 dimensions.
IDX_LABELS_MAGIC = 2049  # 0x00000801: unsigned bytes, 1 dimension.
_MAGIC_NAMES = {IDX_IMAGES_MAGIC: "an images file", IDX_LABELS_MAGIC: "a labels file"}

_REDOWNLOAD = (
    "The official files are on the MNIST page (or its mirrors); without "
    "--data-dir the training scripts use TensorFlow Datasets or the bundled "
    "MNIST sample instead."
)


class FieldsByKey:
    """Lets a dataclass of arrays be read like a dict: `data["images"]`."""

    def __getitem__(self, key: str) -> np.ndarray:
        if key not in {field.name for field in dataclasses.fields(self)}:
            raise KeyError(key)
        return getattr(self, key)


@dataclasses.dataclass(frozen=True, eq=False)
class MnistData(FieldsByKey):
    """MNIST as NumPy arrays (`mnist.x_train` or `mnist["x_train"]`).

    Attributes:
        x_train: uint8, (60000, 28, 28), intensities 0..255.
        y_train: int64, (60000,), digit classes 0..9.
        x_test: uint8, (10000, 28, 28).
        y_test: int64, (10000,).
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


def load_mnist(data_dir: str | os.PathLike | None = None) -> MnistData:
    """Loads MNIST as uint8 images and int64 labels.

    Args:
        data_dir: folder holding the four official IDX files (gzipped or
            not). `None` loads MNIST through TensorFlow Datasets instead,
            which downloads it on first use.

    Returns:
        An `MnistData` with `x_train` (60000, 28, 28) uint8, `y_train`
        (60000,) int64, `x_test` (10000, 28, 28) uint8, `y_test` (10000,)
        int64. Files with other counts (for example a subset) load as they
        are; the image size must be 28x28.

    Raises:
        DatasetError: a file is missing, truncated or malformed; the
            message names it and says what to do.

    Example:

    >>> mnist = load_mnist("/data/mnist")  # doctest: +SKIP
    >>> mnist.x_train.shape, mnist.y_train[:3]  # doctest: +SKIP
    ((60000, 28, 28), array([5, 0, 4]))
    """
    if data_dir is None:
        return _load_mnist_tfds()
    data_dir = os.fspath(data_dir)
    if not os.path.isdir(data_dir):
        raise DatasetError(
            f"The MNIST data directory does not exist or is not a folder. "
            f"Received: {data_dir!r}. Pass --data-dir DIR, the folder that holds "
            f"{_expected_names()}."
        )
    arrays = {
        key: read_idx(
            _find_file(data_dir, name),
            IDX_IMAGES_MAGIC if key.startswith("x") else IDX_LABELS_MAGIC,
        )
        for key, name in MNIST_FILES.items()
    }
    for split in ("train", "test"):
        images, labels = arrays[f"x_{split}"], arrays[f"y_{split}"]
        images_name, labels_name = MNIST_FILES[f"x_{split}"], MNIST_FILES[f"y_{split}"]
        _check_images(images, images_name)
        _check_labels(labels, labels_name)
        if len(images) != len(labels):
            raise DatasetError(
                f"The MNIST {split} images and labels disagree in count: "
                f"{images_name} holds {len(images)} images but {labels_name} "
                f"holds {len(labels)} labels (in {data_dir}). The two files "
                f"come from different downloads or one is damaged; "
                f"re-download both."
            )
    return MnistData(
        x_train=arrays["x_train"],
        y_train=arrays["y_train"].astype(np.int64),
        x_test=arrays["x_test"],
        y_test=arrays["y_test"].astype(np.int64),
    )


def read_idx(path: str | os.PathLike, expected_magic: int | None = None) -> np.ndarray:
    """Reads one IDX file of unsigned bytes (gzipped when named `*.gz`).

    The IDX layout (LeCun's MNIST page): a big-endian int32 magic number
    whose third byte is the data type (0x08 = unsigned byte) and fourth the
    number of dimensions, then one big-endian int32 per dimension, then the
    data in C order.

    Args:
        path: the file.
        expected_magic: the magic number the file must have
            (`IDX_IMAGES_MAGIC` = 2051 for MNIST images, `IDX_LABELS_MAGIC`
            = 2049 for labels); `None` accepts any unsigned-byte IDX file.

    Returns:
        A uint8 array with the shape stated in the header.

    Raises:
        DatasetError: the file cannot be read, is not a complete gzip
            stream, has a bad magic number, or its header disagrees with
            its length.
    """
    path = os.fspath(path)
    name = os.path.basename(path)
    _check_official_md5(path)
    try:
        if path.endswith(".gz"):
            with gzip.open(path, "rb") as f:
                data = f.read()
        else:
            with open(path, "rb") as f:
                data = f.read()
    except EOFError as error:
        raise DatasetError(
            f"{name} is truncated: the gzip stream ends early ({error}). "
            f"File: {path}. The download was interrupted; re-download it. "
            f"{_REDOWNLOAD}"
        ) from error
    except (gzip.BadGzipFile, zlib.error) as error:
        raise DatasetError(
            f"{name} is not a valid gzip file ({error}). File: {path}. It is "
            f"damaged or is not the MNIST file it is named after; re-download "
            f"it. {_REDOWNLOAD}"
        ) from error
    except OSError as error:
        raise DatasetError(f"Could not read {path}: {error}.") from error

    if len(data) < 4:
        raise DatasetError(
            f"{name} is too short to be an IDX file: {len(data)} bytes. "
            f"File: {path}. {_REDOWNLOAD}"
        )
    (magic,) = struct.unpack(">I", data[:4])
    type_code, ndim = (magic >> 8) & 0xFF, magic & 0xFF
    if expected_magic is not None and magic != expected_magic:
        found = _MAGIC_NAMES.get(magic, "not an MNIST IDX file")
        expected = _MAGIC_NAMES.get(expected_magic, "an IDX file")
        raise DatasetError(
            f"{name} has the wrong magic number: expected {expected_magic} "
            f"(0x{expected_magic:08x}, {expected}), received {magic} "
            f"(0x{magic:08x}, {found}). File: {path}. If it is {found}, the "
            f"files were renamed or swapped; otherwise re-download it. "
            f"{_REDOWNLOAD}"
        )
    if magic >> 16 != 0 or type_code != 0x08 or ndim == 0:
        raise DatasetError(
            f"{name} is not an IDX file of unsigned bytes: its magic number "
            f"is 0x{magic:08x}, expected 0x000008NN (NN = number of "
            f"dimensions). File: {path}. {_REDOWNLOAD}"
        )

    header_size = 4 + 4 * ndim
    if len(data) < header_size:
        raise DatasetError(
            f"{name} ends inside its header: {len(data)} bytes for a "
            f"{ndim}-dimensional header of {header_size} bytes. File: {path}. "
            f"The download was interrupted; re-download it. {_REDOWNLOAD}"
        )
    shape = struct.unpack(f">{ndim}I", data[4:header_size])
    expected_size = header_size + int(np.prod(shape, dtype=np.int64))
    if len(data) != expected_size:
        raise DatasetError(
            f"{name} does not match its header: the header declares shape "
            f"{tuple(shape)}, that is {expected_size} bytes with the header, "
            f"but the (decompressed) file holds {len(data)} bytes. File: "
            f"{path}. The file is truncated or damaged; re-download it. "
            f"{_REDOWNLOAD}"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header_size).reshape(shape).copy()


def _load_mnist_tfds() -> MnistData:
    from cram_keras.data.tfds_numpy import load_supervised_split

    hint = (
        "TFDS downloads MNIST on first use, which needs internet. Offline, "
        f"download the four official files ({_expected_names()}) and pass "
        "their folder as --data-dir DIR."
    )
    x_train, y_train = load_supervised_split("mnist", "train", hint)
    x_test, y_test = load_supervised_split("mnist", "test", hint)
    return MnistData(
        x_train=x_train.reshape(-1, 28, 28),
        y_train=y_train,
        x_test=x_test.reshape(-1, 28, 28),
        y_test=y_test,
    )


def _expected_names() -> str:
    return ", ".join(MNIST_FILES.values())


def _find_file(data_dir: str, name: str) -> str:
    for candidate in (name, name.removesuffix(".gz")):
        path = os.path.join(data_dir, candidate)
        if os.path.isfile(path):
            return path
    raise DatasetError(
        f"MNIST file not found: {os.path.join(data_dir, name)} (nor its "
        f"uncompressed form without `.gz`). The data directory must hold the "
        f"four official files: {_expected_names()}. Received: --data-dir "
        f"{data_dir}. Point --data-dir at the folder that holds them, or "
        f"leave it out to use TensorFlow Datasets or the bundled sample."
    )


def _check_official_md5(path: str) -> None:
    name = os.path.basename(path)
    if name not in MNIST_OFFICIAL_GZ:
        return
    size, md5 = MNIST_OFFICIAL_GZ[name]
    try:
        if os.path.getsize(path) != size:
            return  # Not claiming to be the official file (e.g. a subset).
        with open(path, "rb") as f:
            digest = hashlib.md5(f.read()).hexdigest()
    except OSError as error:
        raise DatasetError(f"Could not read {path}: {error}.") from error
    if digest != md5:
        raise DatasetError(
            f"{name} has the official size ({size} bytes) but not the "
            f"official md5: expected {md5}, received {digest}. File: {path}. "
            f"The file is damaged; re-download it. {_REDOWNLOAD}"
        )


def _check_images(images: np.ndarray, name: str) -> None:
    if images.ndim != 3 or images.shape[1:] != (28, 28):
        raise DatasetError(
            f"{name} does not hold 28x28 images: its header declares shape "
            f"{images.shape}, expected (N, 28, 28). Is it an MNIST images "
            f"file? {_REDOWNLOAD}"
        )


def _check_labels(labels: np.ndarray, name: str) -> None:
    if labels.ndim != 1:
        raise DatasetError(
            f"{name} does not hold a vector of labels: its header declares "
            f"shape {labels.shape}, expected (N,). {_REDOWNLOAD}"
        )
    if labels.size and labels.max() > 9:
        bad = np.flatnonzero(labels > 9)
        raise DatasetError(
            f"{name} holds labels outside 0..9: {bad.size} of them, the first "
            f"at index {bad[0]} with value {labels[bad[0]]}. The file is "
            f"damaged or is not an MNIST labels file; re-download it. "
            f"{_REDOWNLOAD}"
        )
