"""Fixtures for the MNIST loader and the cluttered-MNIST generator tests.

Everything is made here, small, from scratch; nothing reads the real MNIST.

- `write_idx` writes IDX files by hand (header layout from LeCun's MNIST
  page), independently of the loader under test.
- `traceable_mnist` is a fake MNIST whose every digit carries its own index:
  a 255 marker at its top-left pixel and the index in base 250 in the next
  three pixels, so a test can find each digit on a canvas and tell which
  source digit it is, without trusting the generator's own bookkeeping.
- `range_valued_mnist` makes a fake MNIST whose digits are flat squares with
  one intensity per index range, so clutter pieces on a canvas tell which
  range they were cut from.
"""

from __future__ import annotations

import dataclasses
import gzip
import struct

import numpy as np
import pytest

from cram_keras.data.mnist import MnistData

TEST_CODE_OFFSET = 100_000  # Test-set digits carry code index + this.


def _write_idx(path, array, *, magic=None, shape=None):
    """Writes `array` as an IDX file of unsigned bytes (gzipped if *.gz).

    `magic` and `shape` override the header, to make malformed files.
    """
    array = np.asarray(array, dtype=np.uint8)
    shape = array.shape if shape is None else shape
    magic = (0x08 << 8 | len(shape)) if magic is None else magic
    payload = (
        struct.pack(">I", magic)
        + struct.pack(f">{len(shape)}I", *shape)
        + array.tobytes()
    )
    if str(path).endswith(".gz"):
        with gzip.open(path, "wb") as f:
            f.write(payload)
    else:
        with open(path, "wb") as f:
            f.write(payload)
    return path


@pytest.fixture
def write_idx():
    return _write_idx


@pytest.fixture
def mnist_dir(tmp_path):
    """A folder with the four official file names holding a tiny MNIST."""
    rng = np.random.default_rng(0)
    arrays = {
        "x_train": rng.integers(0, 256, size=(7, 28, 28), dtype=np.uint8),
        "y_train": rng.integers(0, 10, size=7, dtype=np.uint8),
        "x_test": rng.integers(0, 256, size=(3, 28, 28), dtype=np.uint8),
        "y_test": rng.integers(0, 10, size=3, dtype=np.uint8),
    }
    names = {
        "x_train": "train-images-idx3-ubyte.gz",
        "y_train": "train-labels-idx1-ubyte.gz",
        "x_test": "t10k-images-idx3-ubyte.gz",
        "y_test": "t10k-labels-idx1-ubyte.gz",
    }
    for key, name in names.items():
        _write_idx(tmp_path / name, arrays[key])
    return tmp_path, arrays, names


@dataclasses.dataclass(frozen=True, eq=False)
class Traceable:
    mnist: MnistData

    @staticmethod
    def encode(codes):
        """Fake digits carrying `codes`: marker 255 at (0, 0), code at (0, 1:4)."""
        codes = np.asarray(codes)
        digits = np.zeros((len(codes), 28, 28), dtype=np.uint8)
        digits[:, 0, 0] = 255
        digits[:, 0, 1] = codes // 250**2 + 1
        digits[:, 0, 2] = codes // 250 % 250 + 1
        digits[:, 0, 3] = codes % 250 + 1
        digits[:, 8:20, 12:16] = 200  # Some "ink".
        digits[:, 27, 27] = 254  # The far corner, to see that it is kept.
        return digits

    @staticmethod
    def label(codes):
        codes = np.asarray(codes)
        return np.where(codes >= TEST_CODE_OFFSET, codes * 3 % 10, codes * 7 % 10)

    @staticmethod
    def locate(canvas):
        """[(y, x, code)] of every digit on a clutter-free uint8 canvas, left to right."""
        ys, xs = np.nonzero(canvas == 255)
        found = []
        for y, x in sorted(zip(ys, xs, strict=True), key=lambda yx: yx[1]):
            p = canvas[y, x + 1 : x + 4].astype(np.int64) - 1
            found.append((int(y), int(x), int(p[0] * 250**2 + p[1] * 250 + p[2])))
        return found


@pytest.fixture(scope="session")
def traceable_mnist():
    """A full-size fake MNIST (60,000 + 1,000 digits) whose digits carry their index."""
    train_codes = np.arange(60_000)
    test_codes = np.arange(1_000) + TEST_CODE_OFFSET
    return Traceable(
        MnistData(
            x_train=Traceable.encode(train_codes),
            y_train=Traceable.label(train_codes),
            x_test=Traceable.encode(test_codes),
            y_test=Traceable.label(test_codes),
        )
    )


@pytest.fixture
def range_valued_mnist():
    """Factory: a fake MNIST of flat digits, one intensity per index range.

    `range_valued_mnist({(0, 50_000): 11, (50_000, 60_000): 13}, test=17)`.
    """

    def make(train_values, test, num_test=500):
        x_train = np.zeros((60_000, 28, 28), dtype=np.uint8)
        for (start, stop), value in train_values.items():
            x_train[start:stop] = value
        return MnistData(
            x_train=x_train,
            y_train=np.arange(60_000) % 10,
            x_test=np.full((num_test, 28, 28), test, dtype=np.uint8),
            y_test=np.arange(num_test) % 10,
        )

    return make
