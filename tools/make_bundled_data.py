"""Rewrites the bundled data samples in `cram_keras/data/bundled/`.

Usage (from the repository root):

    python tools/make_bundled_data.py \
        --mnist-dir MNIST_DIR \
        --svhn-npz SVHN_SUBSET_NPZ

What it writes (see `cram_keras/data/bundled/README.md`):

- `mnist_train_first5000_test_first1000.npz`: the first 5,000 digits of the
  official `train-images-idx3-ubyte.gz` / `train-labels-idx1-ubyte.gz` and
  the first 1,000 of `t10k-images-idx3-ubyte.gz` / `t10k-labels-idx1-ubyte.gz`,
  in file order, uint8, keys `train_images` (5000, 28, 28), `train_labels`
  (5000,), `test_images` (1000, 28, 28), `test_labels` (1000,).
- `svhn_train_first1083_unlabeled.npz`: a byte-for-byte copy of the given
  file (key `X`, uint8 (1083, 32, 32, 3): the first 1,083 images of the
  official `train_32x32.mat`), after checking its sha256.

Every source file must have the checksum recorded below; the MNIST `.npz`
is written with fixed zip timestamps and permissions, so rerunning the
script rewrites the same bytes (with the same zlib). `--check` writes to a
temporary folder and compares with the committed files instead.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import shutil
import sys
import tempfile
import zipfile

import numpy as np

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_OUT = os.path.join(REPO_ROOT, "cram_keras", "data", "bundled")

N_TRAIN = 5_000
N_TEST = 1_000
MNIST_OUT = "mnist_train_first5000_test_first1000.npz"
SVHN_OUT = "svhn_train_first1083_unlabeled.npz"

# sha256 of the source files: the official MNIST files (the same values as
# tensorflow_datasets/url_checksums/mnist.txt) and the SVHN subset.
SOURCE_SHA256 = {
    "train-images-idx3-ubyte.gz": "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
    "train-labels-idx1-ubyte.gz": "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
    "t10k-images-idx3-ubyte.gz": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
    "t10k-labels-idx1-ubyte.gz": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
    "svhn_train_first1083_unlabeled.npz": "263b807f64ce5c14fd9b14f3168ff4fd99654e49ef707d2a5d0635857294fca0",
}
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)  # The earliest date a zip entry can hold.


def sha256_of(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _check_source(path: str, name: str) -> None:
    if not os.path.isfile(path):
        sys.exit(f"error: source file not found: {path}")
    digest = sha256_of(path)
    if digest != SOURCE_SHA256[name]:
        sys.exit(
            f"error: {path} is not the expected {name}: sha256 {digest}, "
            f"expected {SOURCE_SHA256[name]}."
        )


def write_npz_reproducibly(path: str, arrays: dict[str, np.ndarray]) -> None:
    """Writes a compressed `.npz` whose bytes depend only on `arrays`.

    `np.savez_compressed` stamps each entry with the current time; here
    every entry gets a fixed date, Unix permissions 0644 and deflate level 9,
    in the order of `arrays`.
    """
    with zipfile.ZipFile(path, "w") as archive:
        for name, array in arrays.items():
            buffer = io.BytesIO()
            np.lib.format.write_array(
                buffer, np.ascontiguousarray(array), allow_pickle=False
            )
            info = zipfile.ZipInfo(f"{name}.npy", date_time=_ZIP_DATE)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.create_system = 3  # Unix, whatever the platform.
            info.external_attr = 0o644 << 16
            archive.writestr(info, buffer.getvalue(), compresslevel=9)


def build(mnist_dir: str, svhn_npz: str, out_dir: str) -> dict[str, str]:
    """Writes both bundled files into `out_dir`; returns {file name: sha256}."""
    from cram_keras.data.mnist import IDX_IMAGES_MAGIC, IDX_LABELS_MAGIC, read_idx

    arrays = {}
    for key, name, magic, count in (
        ("train_images", "train-images-idx3-ubyte.gz", IDX_IMAGES_MAGIC, N_TRAIN),
        ("train_labels", "train-labels-idx1-ubyte.gz", IDX_LABELS_MAGIC, N_TRAIN),
        ("test_images", "t10k-images-idx3-ubyte.gz", IDX_IMAGES_MAGIC, N_TEST),
        ("test_labels", "t10k-labels-idx1-ubyte.gz", IDX_LABELS_MAGIC, N_TEST),
    ):
        path = os.path.join(mnist_dir, name)
        _check_source(path, name)
        arrays[key] = read_idx(path, magic)[:count].astype(np.uint8)
    _check_source(svhn_npz, SVHN_OUT)
    with np.load(svhn_npz, allow_pickle=False) as contents:
        images = contents["X"]
    if images.shape != (1083, 32, 32, 3) or images.dtype != np.uint8:
        sys.exit(f"error: {svhn_npz}: X is {images.dtype} {images.shape}")

    os.makedirs(out_dir, exist_ok=True)
    write_npz_reproducibly(os.path.join(out_dir, MNIST_OUT), arrays)
    shutil.copyfile(svhn_npz, os.path.join(out_dir, SVHN_OUT))
    return {
        name: sha256_of(os.path.join(out_dir, name)) for name in (MNIST_OUT, SVHN_OUT)
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--mnist-dir",
        required=True,
        help="folder with the four official MNIST .gz files",
    )
    parser.add_argument(
        "--svhn-npz",
        required=True,
        help="svhn_train_first1083_unlabeled.npz (key X, the first 1,083 "
        "images of the official train_32x32.mat)",
    )
    parser.add_argument("--out-dir", default=DEFAULT_OUT, help="default: %(default)s")
    parser.add_argument(
        "--check",
        action="store_true",
        help="write to a temporary folder and compare with --out-dir",
    )
    args = parser.parse_args(argv)
    if not args.check:
        for name, digest in build(args.mnist_dir, args.svhn_npz, args.out_dir).items():
            print(f"{digest}  {os.path.join(args.out_dir, name)}")
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        digests = build(args.mnist_dir, args.svhn_npz, tmp)
    status = 0
    for name, digest in digests.items():
        committed = os.path.join(args.out_dir, name)
        found = sha256_of(committed) if os.path.isfile(committed) else "missing"
        same = found == digest
        status |= not same
        print(f"{'same' if same else 'DIFFERENT'}  {name}  {digest}")
    return status


if __name__ == "__main__":
    sys.exit(main())
