"""Test-wide settings: TensorFlow is the default backend, logs stay quiet."""

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
