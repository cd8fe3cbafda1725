#!/usr/bin/env python
"""CRAM classification with a clue on cluttered translated MNIST (Chung & Cho
2018, Sections III-B1, IV-A), with a keras-tuner search over glimpse counts.

NOT BUILT YET: the flags below are the planned interface; running the script
exits with status 2 and says so. Today `train_rnn_spn.py` runs end to end.
"""

import argparse
import sys


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--dataset", choices=("cluttered60", "cluttered100", "svhn"),
                   default="cluttered60", help="default: cluttered60")
    p.add_argument("--clue", choices=("oracle", "saliency", "none"), default="oracle",
                   help="oracle: ground-truth mask; saliency: learned CNN-DecNN; "
                   "none: no clue (ablation)")
    p.add_argument("--glimpses", type=int, default=4, help="number of glimpses")
    p.add_argument("--glimpse-size", type=int, default=12, help="glimpse side in pixels")
    p.add_argument("--epochs", type=int, default=50, help="training epochs")
    p.add_argument("--batch-size", type=int, default=64, help="default: 64")
    p.add_argument("--beta", type=float, default=0.1, help="weight of the clue loss")
    p.add_argument("--data-dir", default=None, help="directory with the official files")
    p.add_argument("--output-dir", default=None, help="run directory (resumable)")
    p.add_argument("--seed", type=int, default=0, help="random seed")
    p.add_argument("--smoke", action="store_true", help="seconds-long run on tiny data")
    p.add_argument("--export", action="store_true", help="write a SavedModel")
    p.add_argument("--tune", action="store_true",
                   help="keras-tuner search over glimpses (1-8) and learning rate")
    return p.parse_args(argv)


def main(argv=None):
    parse_args(argv)
    print(
        "train_cls.py is not implemented yet (issue 4: CRAM classification). "
        "Nothing was trained. What runs today: train_rnn_spn.py.",
        file=sys.stderr,
    )
    return 2


if __name__ == "__main__":
    sys.exit(main())
