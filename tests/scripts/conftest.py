"""A fake but full-size MNIST in the official IDX layout, written once per
session: the scripts' smoke runs read it through --data-dir, offline."""

import gzip
import struct

import numpy as np
import pytest


def _write_idx(path, array):
    dims = array.shape
    header = struct.pack(">HBB", 0, 0x08, len(dims)) + struct.pack(
        f">{len(dims)}I", *dims
    )
    with gzip.open(path, "wb", compresslevel=1) as f:
        f.write(header + np.ascontiguousarray(array, dtype=np.uint8).tobytes())


def _fake_digits(n, seed):
    """Bright rectangles whose width encodes the label, on black."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, size=n).astype(np.uint8)
    images = np.zeros((n, 28, 28), np.uint8)
    top = rng.integers(4, 8, size=n)
    for lab in range(10):
        idx = np.flatnonzero(labels == lab)
        width = 4 + 2 * lab % 18
        for t in range(4, 8):
            rows = idx[top[idx] == t]
            images[rows, t : t + 18, 4 : 4 + max(width, 2)] = 255
    return images, labels


@pytest.fixture(scope="session")
def fake_mnist_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("mnist")
    x_train, y_train = _fake_digits(60000, 0)
    x_test, y_test = _fake_digits(10000, 1)
    _write_idx(root / "train-images-idx3-ubyte.gz", x_train)
    _write_idx(root / "train-labels-idx1-ubyte.gz", y_train)
    _write_idx(root / "t10k-images-idx3-ubyte.gz", x_test)
    _write_idx(root / "t10k-labels-idx1-ubyte.gz", y_test)
    return root
