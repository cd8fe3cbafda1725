"""Trained RNN-SPN models shipped inside the package (package data).

Each model is ``NAME.weights.h5`` (its weights alone), ``NAME.json`` (its
manifest: how it was trained and what it scores) and ``NAME.batch.npz`` (a
fixed batch with its outputs, to check an installation). Load, evaluate
and draw them with `cram_keras.pretrained`; `tools/ship_weights.py` writes
them from a training run. `README.md` beside them describes the format.
"""
