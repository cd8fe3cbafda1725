"""Where the data come from: one decision, returned with the data.

The loaders here return the arrays together with a `DataSource` that says
what was loaded (`origin`, `path`, sizes and one human sentence), so a run
can record the dataset it actually used.

The decision, for MNIST (`load_mnist_data`) and SVHN images
(`load_svhn_images`) alike:

1. `data_dir` given: the official files there (the four IDX files for
   MNIST, `train_32x32.mat` / `test_32x32.mat` for SVHN), checked by
   `cram_keras.data.mnist` / `cram_keras.data.svhn`. A bad folder or file is
   a `DatasetError`, never a silent fallback.
2. `bundled=True` (and no `data_dir`): the sample bundled in the package.
3. TFDS has the dataset prepared locally (checked on disk, no download):
   TFDS.
4. The download host answers a single TCP connection within
   `network_timeout` seconds (default 10): TFDS downloads it. For SVHN only
   `train_32x32.mat` and `test_32x32.mat` are fetched, never the 1.3 GB
   `extra_32x32.mat` (see `cram_keras.data.svhn`).
5. Otherwise: the bundled sample, and ONE line on stderr that says what
   was not reachable, what is used instead and how to get the full set.

With the environment variable `CRAM_KERAS_OFFLINE=1` step 4 is skipped
(the network counts as unreachable at once); the test suite sets it so that
scripts it starts decide instantly.

Labelled SVHN for classification (`load_svhn_labelled`) has no fallback:
the bundled SVHN images carry no labels, so step 5 is a `DatasetError`
saying what to pass.

The bundled samples (`cram_keras/data/bundled/README.md`):

- MNIST: the first 5,000 training and first 1,000 test digits of the
  official files, with labels.
- SVHN: the first 1,083 images of the official `train_32x32.mat`, without
  labels, split into the first 883 for training and the last 200 for
  testing.

Example:

>>> mnist, source = load_mnist_data()  # doctest: +SKIP
>>> source.description  # doctest: +SKIP
'bundled MNIST sample: 5,000 train / 1,000 test digits from the official files'
"""

from __future__ import annotations

import dataclasses
import importlib.resources
import math
import os
import socket
import sys
import threading

import numpy as np

from cram_keras.data import mnist as mnist_lib
from cram_keras.data import svhn as svhn_lib
from cram_keras.data.errors import DatasetError
from cram_keras.data.mnist import MnistData
from cram_keras.data.tfds_numpy import tfds_prepared_dir

ORIGINS = ("idx", "mat", "npz", "tfds", "bundled", "arrays")
OFFLINE_ENV = "CRAM_KERAS_OFFLINE"
DEFAULT_NETWORK_TIMEOUT = 10.0

MNIST_TFDS_NAME = "mnist"
SVHN_TFDS_NAME = svhn_lib.TFDS_NAME
# The hosts the TFDS builders download from (tensorflow_datasets'
# url_checksums/mnist.txt and datasets/svhn_cropped/checksums.tsv).
MNIST_HOST = ("storage.googleapis.com", 443)
SVHN_HOST = ("ufldl.stanford.edu", 80)
MNIST_TRAIN_SIZE = 60_000  # Digits in the official training file.

BUNDLED_PACKAGE = "cram_keras.data.bundled"
BUNDLED_MNIST_FILE = "mnist_train_first5000_test_first1000.npz"
BUNDLED_SVHN_FILE = "svhn_train_first1083_unlabeled.npz"
# sha256 of the bundled files, as in bundled/README.md.
BUNDLED_SHA256 = {
    BUNDLED_MNIST_FILE: "4ff31a68777e57cad7e7885458d2d8babde29255d715e8e355f8fb6779038253",
    BUNDLED_SVHN_FILE: "263b807f64ce5c14fd9b14f3168ff4fd99654e49ef707d2a5d0635857294fca0",
}
BUNDLED_MNIST_TRAIN = 5_000
BUNDLED_MNIST_TEST = 1_000
BUNDLED_SVHN_IMAGES = 1_083
BUNDLED_SVHN_TEST = 200  # The last 200 images; the first 883 train.

_MNIST_FULL_SET = (
    "For the full set pass --data-dir DIR with the four official IDX files, "
    "or run with internet access."
)
_SVHN_FULL_SET = (
    "For the full set pass --dataset svhn --data-dir DIR with the official "
    "train_32x32.mat and test_32x32.mat, or run with internet access."
)


@dataclasses.dataclass(frozen=True)
class DataSource:
    """What a loader loaded: enough to record a run's dataset.

    Attributes:
        name: the dataset, e.g. `"mnist"`, `"svhn"`, `"mnist32"`, `"npz"`.
        origin: how it was read: `"idx"` (official MNIST files), `"mat"`
            (official SVHN files), `"npz"` (an images file), `"tfds"`,
            `"bundled"` (the sample in the package) or `"arrays"` (arrays
            handed over by the caller).
        path: the folder or file read, `None` when there is none (arrays).
        n_train: number of training examples.
        n_test: number of test examples.
        description: one human sentence, e.g. `"bundled MNIST sample: 5,000
            train / 1,000 test digits from the official files"`.
        pools: for generated sets, how many source digits each split draws
            from, e.g. `{"train": 4167, "valid": 833, "test": 1000}`;
            `None` otherwise.
    """

    name: str
    origin: str
    path: str | None
    n_train: int
    n_test: int
    description: str
    pools: dict[str, int] | None = None

    def __post_init__(self):
        if self.origin not in ORIGINS:
            raise ValueError(
                f"`origin` must be one of {ORIGINS}. Received: origin={self.origin!r}"
            )

    def to_dict(self) -> dict:
        """The fields as a JSON-serialisable dict (for `config.json`)."""
        return dataclasses.asdict(self)


def _counted_source(name, origin, path, where, n_train, n_test, unit) -> DataSource:
    """The `DataSource` of `n_train` and `n_test` examples (`unit`), whose
    description is `where` followed by their counts."""
    return DataSource(
        name=name,
        origin=origin,
        path=path,
        n_train=n_train,
        n_test=n_test,
        description=f"{where}: {n_train:,} train / {n_test:,} test {unit}",
    )


# === The bundled samples ===


def bundled_file(name: str):
    """The bundled file `name` as an `importlib.resources` Traversable."""
    return importlib.resources.files(BUNDLED_PACKAGE) / name


def load_bundled_mnist() -> MnistData:
    """The bundled MNIST sample: 5,000 train and 1,000 test digits.

    Returns:
        An `MnistData` with `x_train` uint8 (5000, 28, 28), `y_train` int64
        (5000,), `x_test` uint8 (1000, 28, 28), `y_test` int64 (1000,): the
        first digits of the official files, in file order.

    Raises:
        DatasetError: the bundled file is missing or damaged.
    """
    arrays = _read_bundled(
        BUNDLED_MNIST_FILE,
        {
            "train_images": (BUNDLED_MNIST_TRAIN, 28, 28),
            "train_labels": (BUNDLED_MNIST_TRAIN,),
            "test_images": (BUNDLED_MNIST_TEST, 28, 28),
            "test_labels": (BUNDLED_MNIST_TEST,),
        },
    )
    return MnistData(
        x_train=arrays["train_images"],
        y_train=arrays["train_labels"].astype(np.int64),
        x_test=arrays["test_images"],
        y_test=arrays["test_labels"].astype(np.int64),
    )


def load_bundled_svhn() -> np.ndarray:
    """The bundled SVHN sample: uint8 (1083, 32, 32, 3), no labels.

    The first 1,083 images of the official `train_32x32.mat`, in order.

    Raises:
        DatasetError: the bundled file is missing or damaged.
    """
    shape = (BUNDLED_SVHN_IMAGES, 32, 32, 3)
    return _read_bundled(BUNDLED_SVHN_FILE, {"X": shape})["X"]


def bundled_mnist_source() -> DataSource:
    """The `DataSource` of the bundled MNIST sample."""
    return _counted_source(
        "mnist",
        "bundled",
        str(bundled_file(BUNDLED_MNIST_FILE)),
        "bundled MNIST sample",
        BUNDLED_MNIST_TRAIN,
        BUNDLED_MNIST_TEST,
        "digits from the official files",
    )


def bundled_svhn_source() -> DataSource:
    """The `DataSource` of the bundled SVHN sample, split 883 / 200."""
    n_train = BUNDLED_SVHN_IMAGES - BUNDLED_SVHN_TEST
    return DataSource(
        name="svhn",
        origin="bundled",
        path=str(bundled_file(BUNDLED_SVHN_FILE)),
        n_train=n_train,
        n_test=BUNDLED_SVHN_TEST,
        description=(
            f"bundled SVHN sample: the first {BUNDLED_SVHN_IMAGES:,} images of "
            f"the official train_32x32.mat, {n_train:,} train / "
            f"{BUNDLED_SVHN_TEST:,} test (no labels)"
        ),
    )


def _read_bundled(name: str, shapes: dict[str, tuple[int, ...]]) -> dict:
    resource = bundled_file(name)
    fix = (
        "Reinstall cram-keras (the file ships inside the package), or pass "
        "--data-dir DIR with the official files."
    )
    try:
        with importlib.resources.as_file(resource) as path:
            with open(path, "rb") as f, np.load(f, allow_pickle=False) as npz:
                arrays = {key: npz[key] for key in shapes}
    except FileNotFoundError as err:
        raise DatasetError(
            f"The bundled data file {name} is missing from the installed "
            f"package (looked for {resource}). {fix}"
        ) from err
    except Exception as err:  # A damaged zip, a missing key, ...
        raise DatasetError(
            f"The bundled data file {resource} could not be read "
            f"({type(err).__name__}: {err}). {fix}"
        ) from err
    for key, shape in shapes.items():
        if arrays[key].shape != shape or arrays[key].dtype != np.uint8:
            raise DatasetError(
                f"The bundled data file {resource}: {key} is "
                f"{arrays[key].dtype} {arrays[key].shape}, expected uint8 "
                f"{shape}. {fix}"
            )
    return arrays


# === The network check ===


def offline_requested() -> bool:
    """Whether `$CRAM_KERAS_OFFLINE` asks not to use the network at all."""
    value = os.environ.get(OFFLINE_ENV, "").strip().lower()
    return value not in ("", "0", "false", "no")


def unreachable_reason(
    host: str, port: int, timeout: float = DEFAULT_NETWORK_TIMEOUT
) -> str | None:
    """Tries one TCP connection to `host:port`; says why it failed, if it did.

    One attempt, no retries, and the whole check (name lookup included,
    which `socket` itself cannot time out) returns within `timeout` seconds:
    the connection runs in a daemon thread that is abandoned when it takes
    longer. With `$CRAM_KERAS_OFFLINE` set nothing is tried.

    Args:
        host: the host name.
        port: the TCP port.
        timeout: seconds to wait at most, a positive number.

    Returns:
        `None` when the host accepted the connection, else a short reason
        such as `"timed out after 10 s"` or `"name lookup failed: ..."`.
    """
    timeout = _check_timeout(timeout)
    if offline_requested():
        return f"not tried: {OFFLINE_ENV}=1 is set"
    outcome = {}

    def connect():
        try:
            with socket.create_connection((host, port), timeout=timeout):
                pass
        except Exception as err:  # Any failure means "not reachable".
            outcome["error"] = err
        else:
            outcome["ok"] = True

    thread = threading.Thread(target=connect, name="cram-keras-probe", daemon=True)
    thread.start()
    thread.join(timeout)
    if outcome.get("ok"):
        return None
    error = outcome.get("error")
    if error is None or isinstance(error, TimeoutError):
        return f"timed out after {timeout:g} s"
    if isinstance(error, socket.gaierror):
        return f"name lookup failed: {error.strerror or error}"
    if isinstance(error, ConnectionRefusedError):
        return "connection refused"
    return f"{type(error).__name__}: {error}"


def _check_timeout(timeout) -> float:
    try:
        value = float(timeout)
    except (TypeError, ValueError):
        value = math.nan
    if isinstance(timeout, bool) or not (math.isfinite(value) and value > 0):
        raise ValueError(
            "`network_timeout` must be a positive, finite number of seconds. "
            f"Received: network_timeout={timeout!r}"
        )
    return value


def _note(message: str) -> None:
    """Prints one `note:` line on stderr."""
    print(f"note: {' '.join(message.split())}", file=sys.stderr, flush=True)


# === MNIST ===


def load_mnist_data(
    data_dir: str | os.PathLike | None = None,
    *,
    bundled: bool = False,
    network_timeout: float = DEFAULT_NETWORK_TIMEOUT,
) -> tuple[MnistData, DataSource]:
    """Loads MNIST from the best available source and says which one.

    See the module docstring for the order: `data_dir`, `bundled`, a
    locally prepared TFDS `mnist`, TFDS with a reachable
    storage.googleapis.com, else the bundled sample with one note on
    stderr.

    Args:
        data_dir: folder of the four official IDX files (`--data-dir` in
            the training scripts); it wins over everything else.
        bundled: use the bundled sample (5,000 train / 1,000 test digits)
            when no `data_dir` is given, without looking for TFDS.
        network_timeout: seconds the network check may take at most.

    Returns:
        `(mnist, source)`: an `MnistData` (uint8 images (N, 28, 28), int64
        labels) and its `DataSource`.

    Raises:
        DatasetError: a file in `data_dir` is missing or malformed, or TFDS
            failed after its host answered.

    Example:

    >>> mnist, source = load_mnist_data(bundled=True)  # doctest: +SKIP
    >>> mnist.x_train.shape, source.origin  # doctest: +SKIP
    ((5000, 28, 28), 'bundled')
    """
    network_timeout = _check_timeout(network_timeout)
    if data_dir is not None:
        mnist = mnist_lib.load_mnist(data_dir)
        path = os.path.abspath(os.fspath(data_dir))
        return mnist, _mnist_source(
            mnist, "idx", path, f"MNIST from the official IDX files in {path}"
        )
    if bundled:
        return load_bundled_mnist(), bundled_mnist_source()
    prepared = tfds_prepared_dir(MNIST_TFDS_NAME)
    if prepared is None:
        host, port = MNIST_HOST
        reason = unreachable_reason(host, port, network_timeout)
        if reason is not None:
            _note(
                f"TFDS '{MNIST_TFDS_NAME}' is not prepared locally and {host} "
                f"is not reachable ({reason}); using the bundled MNIST sample "
                f"({BUNDLED_MNIST_TRAIN:,} train / {BUNDLED_MNIST_TEST:,} test "
                f"digits). {_MNIST_FULL_SET}"
            )
            return load_bundled_mnist(), bundled_mnist_source()
    mnist = mnist_lib.load_mnist(None)
    where = (
        f"prepared in {prepared}" if prepared else f"downloaded from {MNIST_HOST[0]}"
    )
    return mnist, _mnist_source(
        mnist,
        "tfds",
        prepared or tfds_prepared_dir(MNIST_TFDS_NAME),
        f"TFDS '{MNIST_TFDS_NAME}' ({where})",
    )


def resolve_mnist(
    data_dir: str | os.PathLike | None = None,
    *,
    bundled: bool = False,
    mnist: MnistData | tuple[MnistData, DataSource] | None = None,
    network_timeout: float = DEFAULT_NETWORK_TIMEOUT,
) -> tuple[MnistData, DataSource]:
    """The MNIST digits a generator draws from, and their `DataSource`.

    Used by the MNIST-derived generators (`load_cluttered_sequences`,
    `load_cluttered_translated`, `load_inpainting_dataset("mnist32")`).

    Args:
        data_dir: see `load_mnist_data`.
        bundled: see `load_mnist_data`.
        mnist: digits already loaded: an `MnistData` (recorded with origin
            `"arrays"`) or the `(MnistData, DataSource)` pair that
            `load_mnist_data` returns. Excludes `data_dir` and `bundled`.
        network_timeout: see `load_mnist_data`.

    Returns:
        `(mnist, source)`.
    """
    if mnist is None:
        return load_mnist_data(
            data_dir, bundled=bundled, network_timeout=network_timeout
        )
    if data_dir is not None or bundled:
        raise ValueError(
            "`mnist` gives the digits itself; do not pass `data_dir` or "
            f"`bundled` with it. Received: data_dir={data_dir!r}, "
            f"bundled={bundled!r}"
        )
    if isinstance(mnist, tuple) and len(mnist) == 2:
        data, source = mnist
        if isinstance(data, MnistData) and isinstance(source, DataSource):
            return data, source
    elif isinstance(mnist, MnistData):
        return mnist, _mnist_source(
            mnist, "arrays", None, "MNIST arrays given by the caller"
        )
    raise ValueError(
        "`mnist` must be an MnistData or the (MnistData, DataSource) pair of "
        f"load_mnist_data. Received: {type(mnist).__name__}"
    )


def split_digit_pools(
    mnist: MnistData, source: DataSource, valid_start: int
) -> tuple[int, DataSource]:
    """Where a generator's validation digits start, and the source with pools.

    The generators take validation digits from the official training digits
    `valid_start` onwards (50,000 for RNN-SPN, 55,000 for the translated
    set). The bundled sample holds only 5,000 training digits, so for it the
    same fraction is used (5,000 x 50,000 / 60,000 = 4,167 train / 833
    valid); any other source must hold more than `valid_start` digits.

    Args:
        mnist: the digits.
        source: their `DataSource`.
        valid_start: index of the first validation digit in the official
            training set.

    Returns:
        `(start, source)`: the index of the first validation digit in
        `mnist.x_train`, and `source` with `pools` set and the pool sizes
        appended to its description.

    Raises:
        DatasetError: a non-bundled training set with `valid_start` digits
            or fewer.
    """
    n = len(mnist.x_train)
    if source.origin == "bundled":
        start = min(max(round(n * valid_start / MNIST_TRAIN_SIZE), 1), n - 1)
    elif n <= valid_start:
        check = " Check --data-dir." if source.origin == "idx" else ""
        raise DatasetError(
            f"The MNIST training set has {n} digits; the validation split "
            f"takes digits {valid_start} onwards, so it needs more (the "
            f"official file has {MNIST_TRAIN_SIZE}). Source: "
            f"{source.description}.{check}"
        )
    else:
        start = valid_start
    pools = {"train": start, "valid": n - start, "test": len(mnist.x_test)}
    description = (
        f"{source.description}; digit pools: {pools['train']:,} train / "
        f"{pools['valid']:,} valid / {pools['test']:,} test"
    )
    return start, dataclasses.replace(source, pools=pools, description=description)


def _mnist_source(mnist, origin, path, where) -> DataSource:
    return _counted_source(
        "mnist", origin, path, where, len(mnist.x_train), len(mnist.x_test), "digits"
    )


# === SVHN ===


def load_svhn_images(
    data_dir: str | os.PathLike | None = None,
    *,
    bundled: bool = False,
    network_timeout: float = DEFAULT_NETWORK_TIMEOUT,
) -> tuple[np.ndarray, np.ndarray, DataSource]:
    """SVHN train and test images (no labels), for inpainting.

    See the module docstring for the order: `data_dir` (the official
    `.mat` files), `bundled`, a locally prepared TFDS `svhn_cropped`, the
    official train and test `.mat` files downloaded when
    ufldl.stanford.edu answers (never `extra_32x32.mat`), else the bundled
    1,083 images (first 883 train, last 200 test) with one note on stderr.

    Args:
        data_dir: folder holding `train_32x32.mat` and `test_32x32.mat`
            (`--dataset svhn --data-dir DIR` in the training scripts).
        bundled: use the bundled sample when no `data_dir` is given.
        network_timeout: seconds the network check may take at most.

    Returns:
        `(train_images, test_images, source)`: uint8 (N, 32, 32, 3) arrays
        and their `DataSource`.

    Raises:
        DatasetError: a file in `data_dir` is missing or malformed, or a
            download failed after the host answered.
    """
    network_timeout = _check_timeout(network_timeout)
    if data_dir is None and bundled:
        return _bundled_svhn_split()
    found = _svhn_full(data_dir, ("train", "test"), network_timeout)
    if isinstance(found, str):
        _note(
            f"TFDS '{SVHN_TFDS_NAME}' is not prepared locally and "
            f"{SVHN_HOST[0]} is not reachable ({found}); using the bundled "
            f"SVHN sample ({BUNDLED_SVHN_IMAGES:,} real training images: "
            f"{BUNDLED_SVHN_IMAGES - BUNDLED_SVHN_TEST:,} train / "
            f"{BUNDLED_SVHN_TEST:,} test). {_SVHN_FULL_SET}"
        )
        return _bundled_svhn_split()
    data, source = found
    return data["train"][0], data["test"][0], source


def load_svhn_labelled(
    data_dir: str | os.PathLike | None = None,
    *,
    splits=("train", "test"),
    network_timeout: float = DEFAULT_NETWORK_TIMEOUT,
) -> tuple[dict, DataSource]:
    """Labelled SVHN for classification; there is no bundled fallback.

    The same order as `load_svhn_images` without the bundled sample, whose
    images have no labels: when neither `data_dir`, a prepared TFDS
    `svhn_cropped` nor a reachable download host is there, it raises.

    Args:
        data_dir: folder holding the official `.mat` files of `splits`.
        splits: split names from `("train", "test")`.
        network_timeout: seconds the network check may take at most.

    Returns:
        `(data, source)`: `data` maps each split to `(images, labels)`,
        uint8 (N, 32, 32, 3) and int64 (N,) in 0..9.

    Raises:
        DatasetError: no labelled SVHN is available (the message says what
            to pass), or a file is missing or malformed.
    """
    network_timeout = _check_timeout(network_timeout)
    found = _svhn_full(data_dir, splits, network_timeout)
    if isinstance(found, str):
        raise DatasetError(
            f"Labelled SVHN is not available: TFDS '{SVHN_TFDS_NAME}' is not "
            f"prepared locally and {SVHN_HOST[0]} is not reachable ({found}). "
            f"The bundled SVHN sample cannot stand in: its "
            f"{BUNDLED_SVHN_IMAGES:,} images have no labels. Pass --dataset "
            f"svhn --data-dir DIR with the official train_32x32.mat and "
            f"test_32x32.mat (from {svhn_lib.URL}), or run with internet access."
        )
    return found


def _svhn_full(data_dir, splits, network_timeout):
    """`(data, source)` of the full SVHN, or the reason it is unreachable."""
    if data_dir is not None:
        data = svhn_lib.load_svhn(data_dir, splits=splits)
        path = os.path.abspath(os.fspath(data_dir))
        return data, _svhn_source(
            data, "mat", path, f"SVHN from the official .mat files in {path}"
        )
    prepared = tfds_prepared_dir(SVHN_TFDS_NAME)
    if prepared is not None:
        data = svhn_lib.load_svhn(None, splits=splits)
        return data, _svhn_source(
            data, "tfds", prepared, f"TFDS '{SVHN_TFDS_NAME}' (prepared in {prepared})"
        )
    host, port = SVHN_HOST
    reason = unreachable_reason(host, port, network_timeout)
    if reason is not None:
        return reason
    paths = svhn_lib.download_svhn_mat_files(splits)
    data = {split: svhn_lib.load_svhn_mat(path) for split, path in paths.items()}
    folder = os.path.dirname(next(iter(paths.values())))
    names = " / ".join(svhn_lib.SVHN_FILES[split][0] for split in paths)
    return data, _svhn_source(
        data, "mat", folder, f"SVHN {names} downloaded from {host} into {folder}"
    )


def _svhn_source(data, origin, path, where) -> DataSource:
    n_train = len(data["train"][0]) if "train" in data else 0
    n_test = len(data["test"][0]) if "test" in data else 0
    return _counted_source("svhn", origin, path, where, n_train, n_test, "images")


def _bundled_svhn_split():
    images = load_bundled_svhn()
    return (
        images[:-BUNDLED_SVHN_TEST],
        images[-BUNDLED_SVHN_TEST:],
        bundled_svhn_source(),
    )
