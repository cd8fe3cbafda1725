"""TFDS splits as NumPy arrays, read in finite batches.

``tfds.load(..., batch_size=-1)`` batches by the split size from the dataset
metadata and falls back to ``sys.maxsize`` when it is unknown (as under
``tfds.testing.mock_data``), which aborts TensorFlow. Reading fixed-size
batches and concatenating them works in every case.
"""

import numpy as np

from cram_keras.data.errors import DatasetError

BATCH = 4096


def load_supervised_split(name, split, offline_hint):
    """Returns ``(images uint8, labels int64)`` of TFDS dataset ``name``.

    Args:
        name: TFDS name, e.g. ``"mnist"``.
        split: e.g. ``"train"``.
        offline_hint: sentence appended to the error when TFDS fails, saying
            how to load the data without internet.
    """
    import tensorflow_datasets as tfds

    try:
        dataset = tfds.load(name, split=split, as_supervised=True)
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
