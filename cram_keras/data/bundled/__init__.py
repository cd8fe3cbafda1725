"""Small real data samples shipped inside the package (package data).

- `mnist_train_first5000_test_first1000.npz`: the first 5,000 training and
  the first 1,000 test digits of the official MNIST files, with labels.
- `svhn_train_first1083_unlabeled.npz`: the first 1,083 images of the
  official SVHN `train_32x32.mat`, without labels.

`README.md` beside them gives their sources, checksums, how they were cut
(`tools/make_bundled_data.py`) and the datasets' terms of use. Load them
with `cram_keras.data.sources` (`load_mnist_data(bundled=True)`,
`load_svhn_images(bundled=True)`), which find them through
`importlib.resources`.
"""
