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

# TensorFlow leaves its oneDNN CPU kernels off on CPUs without AVX-512; on
# them they make training steps 1.3-1.6x faster (AMD EPYC, 2 cores:
# benchmarks/results/rnn_spn_speed.json). Set before TensorFlow is imported;
# TF_ENABLE_ONEDNN_OPTS=0 in the environment keeps them off.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
# TensorFlow's C++ logs: fatal ones only (level 3). Level 2 would still
# print, before the run's first line, errors that need no action: "failed
# call to cuInit" on a machine with CUDA libraries and no usable GPU (the run
# says which devices it uses), and oneDNN's int32 fallback on CPUs without
# AVX-512. Failures that stop a run reach Python as exceptions, and fatal
# C++ lines still print. A TF_CPP_MIN_LOG_LEVEL of the caller is kept.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from cram_keras.experiments.cli import script  # noqa: E402

main = script("inpaint")  # main(argv=None) -> exit code

if __name__ == "__main__":
    sys.exit(main())
