#!/usr/bin/env python
"""Train and evaluate RNN-SPN, FFN-SPN or the CNN on cluttered MNIST sequences
(Sønderby et al. 2015, Table 1).

Flags: `python train_rnn_spn.py --help`. The experiment: cram_keras/experiments/
rnn_spn.py; the run machinery: cram_keras/experiments/runner.py.
"""

import os
import sys

# TensorFlow's settings for every script, before it loads (why: the
# docstring of cram_keras.experiments.cli); the caller's values are kept.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from cram_keras.experiments.cli import script  # noqa: E402

main = script("rnn_spn")  # main(argv=None) -> exit code

if __name__ == "__main__":
    sys.exit(main())
