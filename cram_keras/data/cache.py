"""A disk cache of generated NumPy datasets, keyed by their parameters.

Generated datasets (the cluttered MNIST variants) are deterministic per
seed, but regenerating them costs time and a NumPy upgrade could in
principle change a random stream. `cached_arrays` stores the arrays once in
an `.npz` whose name is a hash of every parameter that affects them
(including a format version and a fingerprint of the source data), so a
rerun reads back byte-identical arrays.

Writes are atomic: the arrays go to a temporary file in the same folder,
which is flushed to disk and then renamed over the final name, so an
interrupted run never leaves a half-written cache under the final name. A
cache file that cannot be read back (truncated, damaged, written by another
format) is regenerated with a warning.

The default folder (`cram_keras.utils.cache_folder`) is `$CRAM_KERAS_CACHE`
if set, else `~/.cache/cram_keras`.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import warnings
from collections.abc import Callable, Mapping

import numpy as np

_PARAMS_KEY = "__params__"


def fingerprint(*arrays: np.ndarray) -> str:
    """md5 over the dtypes, shapes and bytes of `arrays` (hex string).

    Used to key a cache on the source data itself, so that two different
    MNIST copies (or MNIST from TFDS, which is stored in another order)
    never share a cache file.
    """
    digest = hashlib.md5()
    for array in arrays:
        array = np.ascontiguousarray(array)
        digest.update(f"{array.dtype.str}{array.shape}".encode())
        digest.update(memoryview(array).cast("B"))
    return digest.hexdigest()


def cache_path(cache_dir: str | os.PathLike, prefix: str, params: Mapping) -> str:
    """The file that caches the dataset described by `params`.

    Args:
        cache_dir: the cache folder.
        prefix: a readable name for the dataset kind, e.g.
            `"cluttered_sequences"`.
        params: every parameter that affects the arrays, JSON-serialisable
            (include a format version).

    Returns:
        `<cache_dir>/<prefix>-<first 16 hex digits of sha256(params)>.npz`.
    """
    key = hashlib.sha256(_params_json(params).encode()).hexdigest()[:16]
    return os.path.join(os.fspath(cache_dir), f"{prefix}-{key}.npz")


def cached_arrays(
    path: str | os.PathLike,
    params: Mapping,
    create: Callable[[], Mapping[str, np.ndarray]],
) -> dict[str, np.ndarray]:
    """Returns the arrays cached at `path`, creating them on a miss.

    Args:
        path: the cache file, normally from `cache_path`.
        params: the parameters the arrays were made from; stored in the file
            and compared on reading, so a file that does not match is
            treated as stale and regenerated.
        create: called without arguments on a miss; returns a mapping of
            names to arrays (no object arrays).

    Returns:
        A dict of the arrays, read back from the file when it was valid,
        else the freshly created ones (which are then written to `path`).
    """
    path = os.fspath(path)
    expected = _params_json(params)
    if os.path.exists(path):
        try:
            # Open the file ourselves: np.load leaks its own handle when the
            # zip directory is unreadable.
            with open(path, "rb") as f, np.load(f, allow_pickle=False) as npz:
                arrays = {name: npz[name] for name in npz.files}
            stored = str(arrays.pop(_PARAMS_KEY))
            if stored != expected:
                raise ValueError(f"it was made with other parameters: {stored}")
        # Any failure to read a cache file (bad zip, bad CRC, truncated
        # array, missing key, stale parameters) has the same safe answer:
        # regenerate it.
        except Exception as error:
            warnings.warn(
                f"The dataset cache {path} could not be used "
                f"({type(error).__name__}: {error}); regenerating it.",
                stacklevel=2,
            )
        else:
            return arrays

    arrays = dict(create())
    _atomic_savez(path, {**arrays, _PARAMS_KEY: np.asarray(expected)})
    return arrays


def _params_json(params: Mapping) -> str:
    return json.dumps(params, sort_keys=True, separators=(",", ":"))


def _atomic_savez(path: str, arrays: Mapping[str, np.ndarray]) -> None:
    folder = os.path.dirname(path) or "."
    os.makedirs(folder, exist_ok=True)
    fd, tmp_path = tempfile.mkstemp(
        dir=folder, prefix=os.path.basename(path) + ".", suffix=".tmp"
    )
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez_compressed(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp_path, 0o644)  # mkstemp makes it private (0o600).
        os.replace(tmp_path, path)
    except BaseException:
        if os.path.exists(tmp_path):
            os.remove(tmp_path)
        raise
