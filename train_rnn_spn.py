#!/usr/bin/env python
"""Train and evaluate RNN-SPN, FFN-SPN or the CNN on cluttered MNIST sequences
(Sønderby et al. 2015, Table 1).

Flags: `python train_rnn_spn.py --help`. The experiment: cram_keras/experiments/
rnn_spn.py; the run machinery: cram_keras/experiments/runner.py.
"""

import sys

from cram_keras.experiments.cli import script

main = script("rnn_spn")  # main(argv=None) -> exit code

if __name__ == "__main__":
    sys.exit(main())
