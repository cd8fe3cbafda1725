#!/usr/bin/env python
"""CRAM inpainting on SVHN 32x32 with a centred 8x8 hole (Chung & Cho 2018,
Sections III-B2, IV-B, V-B, VI-B).

NOT BUILT YET: the flags below are the planned interface; running the script
exits with status 2 and says so. Today `train_rnn_spn.py` runs end to end.
"""

import argparse
import sys


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--epochs", type=int, default=50, help="training epochs (default: 50)")
    p.add_argument(
        "--dataset",
        default="svhn",
        help="svhn (TFDS svhn_cropped or the official .mat files in --data-dir), "
        "mnist32 (MNIST padded to 32x32), or npz:PATH (images-only .npz, key X)",
    )
    p.add_argument("--data-dir", default=None, help="directory with the official files")
    p.add_argument("--batch-size", type=int, default=64, help="default: 64")
    p.add_argument("--glimpses", type=int, default=4, help="glimpses of the encoder")
    p.add_argument("--alpha", type=float, default=1.0, help="weight of L_recon")
    p.add_argument("--beta", type=float, default=1e-3, help="weight of L_gan")
    p.add_argument("--output-dir", default=None, help="run directory (resumable)")
    p.add_argument("--seed", type=int, default=0, help="random seed")
    p.add_argument("--smoke", action="store_true", help="seconds-long run on tiny data")
    p.add_argument("--export", action="store_true", help="write a SavedModel")
    p.add_argument("--eval-only", metavar="CHECKPOINT", default=None,
                   help="evaluate a saved model instead of training")
    return p.parse_args(argv)


def main(argv=None):
    parse_args(argv)
    print(
        "train_inpaint.py is not implemented yet (issue 5: CRAM inpainting). "
        "Nothing was trained. What runs today: train_rnn_spn.py.",
        file=sys.stderr,
    )
    return 2


if __name__ == "__main__":
    sys.exit(main())
