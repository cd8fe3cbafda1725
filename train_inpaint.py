#!/usr/bin/env python
"""Train and evaluate CRAM inpainting (Chung & Cho 2018, Sections III-B2,
IV-B, V-B, VI-B; Fig. 7): SVHN 32x32 with a centred 8x8 hole, scored against
OpenCV Telea / Navier-Stokes, mean fill and (with --encoder cnn) the same
GAN with a no-attention encoder. See cram_keras/experiments/inpaint.py.

Examples:
    python train_inpaint.py --epochs 50                    # the paper's SVHN run (TFDS)
    python train_inpaint.py --epochs 50 --encoder cnn      # no-attention baseline
    python train_inpaint.py --dataset mnist32 --data-dir ../shared/data/mnist --epochs 3
    python train_inpaint.py --dataset npz:svhn_subset.npz --data-dir DIR --mask random
    python train_inpaint.py --smoke --dataset mnist32 --data-dir DIR   # seconds
    python train_inpaint.py --eval-only runs/inpaint/RUN/model.keras

The run directory gets config.json, log.csv, metrics.json (the model and the
classical baselines on the same test images and masks), figures/ (one
Fig. 7 figure per epoch), inpaint.png, tensorboard/, model.keras, and with
--export a SavedModel. Rerunning the same command resumes an interrupted run.
"""

import argparse
import os
import sys


def build_parser():
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--epochs", type=int, default=None, help="training epochs (default: 50)"
    )
    p.add_argument(
        "--dataset",
        default=None,
        help="svhn (TFDS svhn_cropped, or the official train_32x32.mat / "
        "test_32x32.mat in --data-dir), mnist32 (MNIST zero-padded to 32x32; the "
        "official IDX files in --data-dir, else TFDS), or npz:PATH (an images-only "
        ".npz with key X, uint8 (N, 32, 32, C); the last 200 of >= 1000 images, "
        "else the last 20%%, are the test set) (default: svhn)",
    )
    p.add_argument(
        "--data-dir",
        default=None,
        help="directory with the official files (offline); without it svhn and "
        "mnist32 come from TFDS, which needs internet the first time; for "
        "npz:PATH, the base of a relative PATH",
    )
    p.add_argument("--batch-size", type=int, default=None, help="default: 64")
    p.add_argument(
        "--glimpses",
        type=int,
        default=None,
        help="glimpses of the CRAM encoder (default: 4)",
    )
    p.add_argument(
        "--alpha",
        type=float,
        default=None,
        help="weight of L_recon, the hole L1 (default: 1.0)",
    )
    p.add_argument(
        "--beta",
        type=float,
        default=None,
        help="weight of L_gan, local + global adversarial loss (default: 0.001)",
    )
    p.add_argument(
        "--clue-weight",
        type=float,
        default=None,
        help="weight of L_clue (default: 0.1)",
    )
    p.add_argument(
        "--warmup-epochs",
        type=float,
        default=None,
        help="reconstruction-only epochs before L_gan switches on (default: 5)",
    )
    p.add_argument(
        "--encoder",
        choices=("cram", "cnn"),
        default=None,
        help="cram: the recurrent attention encoder with the mask as clue; cnn: "
        "the no-attention baseline (a CNN on the occluded image, no clue loss) "
        "(default: cram)",
    )
    p.add_argument(
        "--mask",
        choices=("center", "random"),
        default=None,
        help="center: the paper's centred 8x8 hole; random: rectangles with "
        "sides 4..16 (test masks drawn once, the same for every method) "
        "(default: center)",
    )
    p.add_argument(
        "--n-train",
        type=int,
        default=None,
        help="train on the first N training images only (default: all)",
    )
    p.add_argument(
        "--augment",
        action="store_true",
        help="random flips, transposes and negatives of the training images",
    )
    p.add_argument(
        "--output-dir",
        default=None,
        help="run directory; rerunning with the same flags resumes it (default: "
        "runs/inpaint/<dataset>_<encoder>_<mask>_seed<seed>[_smoke]); with "
        "--eval-only, where eval_metrics.json goes (default: the checkpoint's folder)",
    )
    p.add_argument("--seed", type=int, default=None, help="training seed (default: 0)")
    p.add_argument(
        "--smoke",
        action="store_true",
        help="a seconds-long run: 2 epochs on 64 images, tiny networks",
    )
    p.add_argument(
        "--export",
        action="store_true",
        help="also write a SavedModel (serve: image, mask -> completed image)",
    )
    p.add_argument(
        "--eval-only",
        metavar="CHECKPOINT",
        default=None,
        help="do not train: score CHECKPOINT (a model.keras, or a run directory) "
        "and the classical baselines on --dataset's test set with --mask",
    )
    return p


def parse_args(argv=None):
    return build_parser().parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    from cram_keras.data.errors import DatasetError
    from cram_keras.experiments import inpaint
    from cram_keras.experiments.config import prepare_run_dir

    overrides = dict(
        epochs=args.epochs,
        dataset=args.dataset,
        data_dir=args.data_dir,
        batch_size=args.batch_size,
        glimpses=args.glimpses,
        alpha=args.alpha,
        beta=args.beta,
        clue_weight=args.clue_weight,
        warmup_epochs=args.warmup_epochs,
        encoder=args.encoder,
        mask=args.mask,
        n_train=args.n_train,
        augment=args.augment or None,
        seed=args.seed,
        export=args.export or None,
    )
    try:
        if args.smoke:
            config = inpaint.smoke_config(**overrides)
        else:
            config = inpaint.Config(
                **{k: v for k, v in overrides.items() if v is not None}
            )
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    try:
        if args.eval_only:
            output_dir = args.output_dir or (
                args.eval_only
                if os.path.isdir(args.eval_only)
                else os.path.dirname(os.path.abspath(args.eval_only))
            )
            inpaint.evaluate_checkpoint(config, args.eval_only, output_dir)
            return 0
        output_dir = args.output_dir or os.path.join(
            "runs",
            "inpaint",
            f"{inpaint.dataset_label(config.dataset)}_{config.encoder}_{config.mask}_seed{config.seed}"
            + ("_smoke" if args.smoke else ""),
        )
        try:
            prepare_run_dir(output_dir, config)
        except ValueError as err:  # A different config in the same directory.
            print(f"error: {err}", file=sys.stderr)
            return 2
        inpaint.train_and_evaluate(config, output_dir)
    except (DatasetError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
