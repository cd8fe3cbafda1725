"""SVHN (cropped digits, 32x32 RGB) and images-only `.npz` files, as NumPy.

SVHN (Netzer et al., 2011) is the CRAM inpainting dataset (paper, section
VI-B). Two sources give the same arrays:

- TFDS `svhn_cropped` (the default; needs internet the first time), and
- the official `train_32x32.mat` / `test_32x32.mat` from
  http://ufldl.stanford.edu/housenumbers/ in a local directory (offline).

TFDS cannot prepare `svhn_cropped` split by split: its builder downloads
`train_32x32.mat`, `test_32x32.mat` and the 1.3 GB `extra_32x32.mat` in one
call, whatever split is asked for, and `download_and_prepare` has no option
to leave a split out. So when `svhn_cropped` is not prepared yet,
`load_svhn()` does not prepare it: it downloads only the official `.mat`
files of the requested splits through TFDS' download manager (checked
against the checksums TFDS ships, cached in TFDS' `downloads/` folder) and
reads them like a `data_dir`. A prepared `svhn_cropped` is read as is.

The choice between these sources and the bundled sample, with a network
check that gives up within seconds, is `cram_keras.data.sources`.

Official file facts used by the checks: `X` is (32, 32, 3, N) uint8, `y` is
(N, 1) with 10 meaning digit 0; `train_32x32.mat` is 182,040,794 bytes
(73,257 images), `test_32x32.mat` 64,275,384 bytes (26,032 images).
"""

import os

import numpy as np
import scipy.io

from cram_keras.data.errors import DatasetError

TFDS_NAME = "svhn_cropped"
URL = "http://ufldl.stanford.edu/housenumbers/"

# split -> (official file name, official size in bytes, number of images).
SVHN_FILES = {
    "train": ("train_32x32.mat", 182_040_794, 73_257),
    "test": ("test_32x32.mat", 64_275_384, 26_032),
}
_IMAGE_SHAPE = (32, 32, 3)
_GET_FILES = (
    "Pass --dataset svhn --data-dir DIR with the official train_32x32.mat "
    f"and test_32x32.mat (from {URL})"
)


def load_svhn(data_dir=None, splits=("train", "test")):
    """Loads SVHN cropped digits as uint8 NHWC images and int64 labels 0..9.

    With `data_dir=None` the data come from TFDS: a prepared
    `svhn_cropped` is read as is; otherwise only the official `.mat` files
    of the requested splits are downloaded (never `extra_32x32.mat`; see the
    module docstring), which needs internet the first time. With a
    `data_dir`, the official `train_32x32.mat` / `test_32x32.mat` are read
    from that directory and nothing is downloaded; each file is checked (see
    `load_svhn_mat`). `cram_keras.data.sources.load_svhn_labelled` adds a
    quick network check in front of this.

    Args:
        data_dir: `None` for TFDS, or a directory holding the official
            `.mat` files of the requested splits (`--data-dir` in the
            training scripts).
        splits: split names to load, from `("train", "test")`; a single
            string is accepted.

    Returns:
        A dict mapping each requested split to `(images, labels)`: images
        uint8 of shape (N, 32, 32, 3), labels int64 of shape (N,) in 0..9
        (the official label 10 is digit 0).

    Raises:
        DatasetError: a file is missing, truncated or malformed, or TFDS
            could not provide the data.
        ValueError: an unknown split name.

    Example:

    >>> data = load_svhn("/data/svhn", splits=("test",))  # doctest: +SKIP
    >>> x_test, y_test = data["test"]
    """
    splits = _check_splits(splits)
    if data_dir is None:
        return _load_tfds(splits)
    data_dir = os.fspath(data_dir)
    paths = {split: os.path.join(data_dir, SVHN_FILES[split][0]) for split in splits}
    # Every file is checked before any is read, so a bad test file does not
    # wait for the slow read of the training file.
    for path in paths.values():
        if not os.path.isfile(path):
            expected = ", ".join(SVHN_FILES[s][0] for s in splits)
            raise DatasetError(
                f"SVHN file not found: {path}. Expected the official file(s) "
                f"{expected} (from {URL}) in the folder given as --data-dir "
                f"({data_dir!r}). With internet, leave out --data-dir to "
                f"download them through TFDS ('{TFDS_NAME}'), the default."
            )
        _check_official_size(path)
    return {split: load_svhn_mat(path) for split, path in paths.items()}


def load_svhn_mat(path):
    """Reads one SVHN `.mat` file in the official layout.

    Checks, each failing with a `DatasetError` that names the file:

    - a file named like an official one (`train_32x32.mat`,
      `test_32x32.mat`) must be at least the official size, else it is a
      truncated download;
    - the file must be readable by `scipy.io.loadmat` (SciPy's own error is
      chained as the cause);
    - it must hold `X` uint8 of shape (32, 32, 3, N) and `y` of shape (N, 1)
      or (N,) with integer labels in 0..10.

    Args:
        path: path of the `.mat` file.

    Returns:
        `(images, labels)`: uint8 (N, 32, 32, 3) and int64 (N,) in 0..9.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise DatasetError(f"SVHN file not found: {path}.")
    size = _check_official_size(path)
    try:
        contents = scipy.io.loadmat(path, variable_names=("X", "y"))
    except Exception as err:
        raise DatasetError(
            f"Could not read SVHN file {path} ({size} bytes) as a MATLAB .mat "
            f"file: {type(err).__name__}: {err}. The file is damaged or "
            "incomplete (an interrupted download?); re-download it."
        ) from err
    missing = [key for key in ("X", "y") if key not in contents]
    if missing:
        try:
            found = sorted(name for name, _, _ in scipy.io.whosmat(path))
        except Exception:  # Only for the message; the file was readable.
            found = "?"
        raise DatasetError(
            f"SVHN file {path} lacks the variable(s) {missing}; the official "
            f"layout has X (32, 32, 3, N) uint8 and y (N, 1). Found: {found}."
        )
    images, labels = contents["X"], contents["y"]
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[:3] != (32, 32, 3):
        raise DatasetError(
            f"SVHN file {path}: X must be uint8 of shape (32, 32, 3, N). "
            f"Received: dtype={images.dtype}, shape={images.shape}."
        )
    num_images = images.shape[3]
    if labels.shape not in ((num_images, 1), (num_images,)):
        raise DatasetError(
            f"SVHN file {path}: y must have shape ({num_images}, 1) to match "
            f"X's {num_images} images. Received: shape={labels.shape}."
        )
    labels = labels.reshape(-1)
    if not np.issubdtype(labels.dtype, np.number) or np.any(labels != np.round(labels)):
        raise DatasetError(
            f"SVHN file {path}: y must hold integer labels. "
            f"Received: dtype={labels.dtype}."
        )
    if num_images and (labels.min() < 0 or labels.max() > 10):
        raise DatasetError(
            f"SVHN file {path}: labels must lie in 0..10 (the official files "
            "use 1..10, with 10 meaning digit 0). "
            f"Received: min={labels.min()}, max={labels.max()}."
        )
    images = np.ascontiguousarray(np.transpose(images, (3, 0, 1, 2)))
    return images, labels.astype(np.int64) % 10


def load_images_npz(path):
    """Reads an images-only `.npz` file: key `X`, uint8, NHWC.

    Args:
        path: path of the `.npz` file.

    Returns:
        The uint8 array `X` of shape (N, H, W, C).

    Raises:
        DatasetError: the file is missing or unreadable, lacks `X`, or `X`
            is not a uint8 rank-4 array.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise DatasetError(
            f"Images file not found: {path}. Expected a .npz file with key X "
            "(uint8, shape (N, H, W, C))."
        )
    try:
        # Opened here so that the file is closed even when np.load fails.
        with open(path, "rb") as file, np.load(file, allow_pickle=False) as contents:
            keys = list(contents.keys())
            images = contents["X"] if "X" in keys else None
    except Exception as err:
        raise DatasetError(
            f"Could not read {path} as a .npz file: {type(err).__name__}: "
            f"{err}. The file is damaged or not a NumPy .npz archive."
        ) from err
    if images is None:
        raise DatasetError(
            f"{path} has no key 'X'; expected X (uint8, shape (N, H, W, C)). "
            f"Found keys: {keys}."
        )
    if images.dtype != np.uint8:
        raise DatasetError(
            f"{path}: X must be uint8 (pixel values 0..255). "
            f"Received: dtype={images.dtype}."
        )
    if images.ndim != 4:
        raise DatasetError(
            f"{path}: X must have rank 4, (N, H, W, C); for grayscale add a "
            f"channel axis of size 1. Received: shape={images.shape}."
        )
    return images


def _check_official_size(path):
    """Returns the size of `path`; raises if an official name is truncated."""
    name = os.path.basename(path)
    size = os.path.getsize(path)
    official_sizes = {file_name: nbytes for file_name, nbytes, _ in SVHN_FILES.values()}
    official_size = official_sizes.get(name)
    if official_size is not None and size < official_size:
        raise DatasetError(
            f"SVHN file {path} is truncated: got {size} bytes, expected "
            f"{official_size}; the download was interrupted; re-download it "
            f"from {URL}{name}."
        )
    return size


def _check_splits(splits):
    if isinstance(splits, str):
        splits = (splits,)
    splits = tuple(splits)
    unknown = [s for s in splits if s not in SVHN_FILES]
    if not splits or unknown:
        raise ValueError(
            f"`splits` must be a non-empty selection of {tuple(SVHN_FILES)}. "
            f"Received: splits={splits}."
        )
    return splits


def download_svhn_mat_files(splits=("train", "test"), download_dir=None):
    """Downloads the official `.mat` files of `splits`, never `extra_32x32.mat`.

    Uses TFDS' download manager with the checksums TFDS ships for
    `svhn_cropped`, so each file is verified (size and sha256) and fetched
    once; later calls find it in `download_dir`.

    Args:
        splits: split names from `("train", "test")`.
        download_dir: where to keep the files; `None` is the `downloads`
            folder of the TFDS data directory (where TFDS itself would put
            them, e.g. `~/tensorflow_datasets/downloads`).

    Returns:
        A dict mapping each split to the path of its downloaded `.mat` file.

    Raises:
        DatasetError: the download failed (no internet, a checksum
            mismatch, ...).
    """
    import tensorflow_datasets as tfds

    splits = _check_splits(splits)
    builder_cls = tfds.builder_cls(TFDS_NAME)
    if download_dir is None:
        download_dir = os.path.join(tfds.core.constants.DATA_DIR, "downloads")
    urls = {split: URL + SVHN_FILES[split][0] for split in splits}
    try:
        manager = tfds.download.DownloadManager(
            download_dir=download_dir,
            url_infos=builder_cls.url_infos,
            dataset_name=TFDS_NAME,
        )
        paths = manager.download(urls)
    except Exception as err:  # Network and checksum errors of many types.
        raise DatasetError(
            f"Could not download the SVHN file(s) "
            f"{', '.join(SVHN_FILES[s][0] for s in splits)} from {URL} "
            f"({type(err).__name__}: {err}). {_GET_FILES}, or retry with "
            "internet access."
        ) from err
    return {split: os.fspath(path) for split, path in paths.items()}


def _load_tfds(splits):
    from cram_keras.data.tfds_numpy import load_supervised_split, tfds_prepared_dir

    if tfds_prepared_dir(TFDS_NAME) is None:
        # Not prepared: fetch only the requested .mat files (module docstring).
        paths = download_svhn_mat_files(splits)
        return {split: load_svhn_mat(path) for split, path in paths.items()}
    hint = f"{_GET_FILES}."
    result = {}
    for split in splits:
        images, labels = load_supervised_split(TFDS_NAME, split, hint)
        if images.shape[1:] != _IMAGE_SHAPE:
            raise DatasetError(
                f"TFDS '{TFDS_NAME}' split '{split}' gave images of shape "
                f"{images.shape[1:]}, expected {_IMAGE_SHAPE}."
            )
        result[split] = (images, labels)
    return result
