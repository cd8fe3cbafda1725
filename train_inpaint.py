#!/usr/bin/env python
"""Train and evaluate CRAM inpainting (Chung & Cho 2018, Sections III-B2,
IV-B, V-B, VI-B; Fig. 7): SVHN 32x32 with a centred 8x8 hole, scored against
OpenCV Telea / Navier-Stokes, mean fill and (with --encoder cnn) the same GAN
with a no-attention encoder.

Flags: `python train_inpaint.py --help`. The experiment: cram_keras/experiments/
inpaint.py; the run machinery: cram_keras/experiments/runner.py.
"""

import os
import sys

# TensorFlow's settings for every script, before it loads (why: the
# docstring of cram_keras.experiments.cli); the caller's values are kept.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from cram_keras.experiments.cli import script  # noqa: E402

main = script("inpaint")  # main(argv=None) -> exit code

if __name__ == "__main__":
    sys.exit(main())
