#!/usr/bin/env python
"""Run a study: a named configuration's variants, each over its seeds.

    python run_study.py cram_cls/budget --data-dir MNIST_DIR
    python run_study.py rnn_spn/table1 --data-dir MNIST_DIR
    python run_study.py NAME --help

The configurations: configs/<experiment>/<name>.py; the driver:
cram_keras/studies/driver.py.
"""

import os
import sys

# TensorFlow's settings for every script, before it loads (why: the
# docstring of cram_keras.experiments.cli); the caller's values are kept.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from cram_keras.studies.driver import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
