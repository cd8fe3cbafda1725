"""TFDS splits as NumPy arrays, read in finite batches, and TFDS status checks.

``tfds.load(..., batch_size=-1)`` batches by the split size from the dataset
metadata and falls back to ``sys.maxsize`` when it is unknown (as under
``tfds.testing.mock_data``), which aborts TensorFlow. Reading fixed-size
batches and concatenating them works in every case.

`tfds_prepared_dir` says whether a dataset is already prepared on this
machine without downloading anything (building a `DatasetBuilder` only
reads local files; TFDS' GCS access is off by default).
"""

from __future__ import annotations

import numpy as np

from cram_keras.data.errors import DatasetError

BATCH = 4096


def load_supervised_split(name, split, offline_hint, *, download=True):
    """Returns ``(images uint8, labels int64)`` of TFDS dataset ``name``.

    Args:
        name: TFDS name, e.g. ``"mnist"``.
        split: e.g. ``"train"``.
        offline_hint: sentence appended to the error when TFDS fails, saying
            how to load the data without internet.
        download: ``False`` reads a prepared dataset only (TFDS raises
            rather than downloading).
    """
    import tensorflow_datasets as tfds

    try:
        dataset = tfds.load(name, split=split, as_supervised=True, download=download)
    except Exception as err:  # TFDS raises many types when offline.
        raise DatasetError(
            f"TFDS could not provide '{name}' split '{split}' "
            f"({type(err).__name__}: {err}). {offline_hint}"
        ) from err
    images, labels = [], []
    for batch_images, batch_labels in tfds.as_numpy(dataset.batch(BATCH)):
        images.append(batch_images)
        labels.append(batch_labels)
    if not images:
        raise DatasetError(f"TFDS '{name}' split '{split}' is empty.")
    return (
        np.concatenate(images).astype(np.uint8, copy=False),
        np.concatenate(labels).astype(np.int64, copy=False),
    )


def tfds_is_mocked() -> bool:
    """Whether `tfds.testing.mock_data` is active (TFDS then serves fake data).

    Under the mock every dataset can be "loaded" offline, so the callers
    treat it as prepared. Only looks at an already imported TFDS.
    """
    import sys

    tfds = sys.modules.get("tensorflow_datasets")
    if tfds is None:
        return False
    try:
        method = tfds.core.DatasetBuilder.download_and_prepare
    except AttributeError:  # A stand-in module (tests) or another TFDS.
        return False
    return getattr(method, "__module__", "") == "tensorflow_datasets.testing.mocking"


def tfds_prepared_dir(name: str) -> str | None:
    """The folder of TFDS dataset `name` if it is prepared locally, else `None`.

    Checks the TFDS data directory (`$TFDS_DATA_DIR`, default
    `~/tensorflow_datasets`) for a complete prepared version of the
    builder's default version; never downloads. Under
    `tfds.testing.mock_data` it returns the mock's folder. Any failure
    (TFDS not installed, an unknown name, a damaged folder) counts as "not
    prepared".

    Args:
        name: TFDS name, e.g. `"mnist"`, `"svhn_cropped"`.

    Returns:
        The prepared version's folder (e.g.
        `~/tensorflow_datasets/mnist/3.0.1`) or `None`.
    """
    import logging

    absl_logger = logging.getLogger("absl")
    level = absl_logger.level
    # A half-written folder of an interrupted download makes TFDS log a
    # warning here; the caller's one-line note says what happens instead.
    absl_logger.setLevel(logging.ERROR)
    try:
        import tensorflow_datasets as tfds

        builder = tfds.builder(name)
        if tfds_is_mocked() or builder.is_prepared():
            return str(builder.data_dir)
    except Exception:  # Not prepared in any usable way.
        return None
    finally:
        absl_logger.setLevel(level)
    return None
