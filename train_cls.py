#!/usr/bin/env python
"""Train and evaluate CRAM classification with a clue (Chung & Cho 2018,
Sections III-B1, IV-A, V-A), the clue ablation and a keras-tuner search over
glimpse counts.

Flags: `python train_cls.py --help`. The experiment: cram_keras/experiments/
cram_cls.py; the run machinery: cram_keras/experiments/runner.py.
"""

import os
import sys

# TensorFlow's settings for every script, before it loads (why: the
# docstring of cram_keras.experiments.cli); the caller's values are kept.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from cram_keras.experiments.cli import script  # noqa: E402

main = script("cram_cls")  # main(argv=None) -> exit code

if __name__ == "__main__":
    sys.exit(main())
