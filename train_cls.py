#!/usr/bin/env python
"""Train and evaluate CRAM classification with a clue (Chung & Cho 2018,
Sections III-B1, IV-A, V-A) on cluttered translated MNIST or SVHN, the clue
ablation, and a keras-tuner search over glimpse counts. See
cram_keras/experiments/cram_cls.py.

Examples:
    python train_cls.py --clue oracle                      # ground-truth silhouette
    python train_cls.py --clue saliency                    # learned CNN-DecNN clue
    python train_cls.py --clue none                        # ablation: no clue
    python train_cls.py --dataset svhn --data-dir DIR      # official .mat files
    python train_cls.py --tune --max-trials 16 --epochs 10 # glimpses 1-8 x rate
    python train_cls.py --data-dir ../shared/data/mnist --n-train 20000 --epochs 4
    python train_cls.py --smoke --data-dir DIR             # seconds

The run directory gets config.json, log.csv, tensorboard/, metrics.json (test
error at the best validation epoch), best.weights.h5, model.keras,
glimpses.png and glimpses.gif, saliency/ for --clue saliency, with --export
a SavedModel, and with --tune the keras-tuner project tuner/, trials.csv,
trials.json and best_config.json. Rerunning the same command resumes an
interrupted run or search.
"""

import argparse
import os
import sys


def build_parser():
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--dataset",
        choices=("cluttered60", "cluttered100", "svhn"),
        default=None,
        help="cluttered60: 60x60 MNIST with 4 clutter pieces of 8x8 (RAM's "
        "benchmark); cluttered100: 100x100 with 8; svhn: SVHN 32x32 digits "
        "(TFDS svhn_cropped, or the official train_32x32.mat / test_32x32.mat "
        "in --data-dir) (default: cluttered60)",
    )
    p.add_argument(
        "--clue",
        choices=("oracle", "saliency", "none"),
        default=None,
        help="oracle: the digit's ground-truth silhouette; saliency: the mask of a "
        "CNN-DecNN trained on the training split's masks (the paper pretrains on "
        "MSRA10k, not available offline; SVHN: contrast pseudo-masks), thresholded "
        "at 0.5, at training and test time; none: an all-zero clue and no clue loss "
        "(ablation). SVHN has no oracle (default: oracle; saliency for svhn)",
    )
    p.add_argument(
        "--glimpses", type=int, default=None, help="number of glimpses N (default: 4)"
    )
    p.add_argument(
        "--glimpse-size",
        type=int,
        default=None,
        help="side of the square glimpse patch in pixels (default: 12)",
    )
    p.add_argument(
        "--epochs",
        type=int,
        default=None,
        help="maximum epochs; with --tune, epochs of every trial (default: 50)",
    )
    p.add_argument("--batch-size", type=int, default=None, help="default: 64")
    p.add_argument(
        "--beta",
        type=float,
        default=None,
        help="weight of the clue loss, >= 0 (default: 0.1; must be 0 or unset "
        "with --clue none)",
    )
    p.add_argument(
        "--learning-rate",
        type=float,
        default=None,
        help="Adam learning rate (default: 1e-4, paper V-A)",
    )
    p.add_argument(
        "--n-train",
        type=int,
        default=None,
        help="training images (default: 55000; SVHN: all but the validation ones)",
    )
    p.add_argument(
        "--data-dir",
        default=None,
        help="directory with the official files (MNIST IDX .gz files, or SVHN "
        "train_32x32.mat / test_32x32.mat); without it the data come from TFDS, "
        "which needs internet the first time",
    )
    p.add_argument(
        "--cache-dir",
        default=None,
        help="where generated cluttered sets are cached (default: "
        "$CRAM_KERAS_CACHE or ~/.cache/cram_keras)",
    )
    p.add_argument(
        "--output-dir",
        default=None,
        help="run directory; rerunning with the same flags resumes it (default: "
        "runs/cram_cls/<dataset>_<clue>_g<glimpses>_seed<seed>[_tune][_smoke])",
    )
    p.add_argument("--seed", type=int, default=None, help="training seed (default: 0)")
    p.add_argument(
        "--smoke",
        action="store_true",
        help="a seconds-long run of a tiny CRAM on a tiny generated set "
        "(2 epochs, 32 training images; with --tune, 2 trials)",
    )
    p.add_argument(
        "--export",
        action="store_true",
        help="also write a SavedModel: serve(images, clue) -> class probabilities",
    )
    p.add_argument(
        "--tune",
        action="store_true",
        help="keras-tuner random search over the number of glimpses (1-8) and the "
        "learning rate (1e-5 to 1e-3, log scale); --glimpses and --learning-rate "
        "are then searched, not used",
    )
    p.add_argument(
        "--max-trials",
        type=int,
        default=None,
        help="trials of the --tune search, counting finished ones (default: 16)",
    )
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    from cram_keras.data.errors import DatasetError
    from cram_keras.experiments import cram_cls
    from cram_keras.experiments.config import prepare_run_dir

    overrides = dict(
        dataset=args.dataset,
        clue=args.clue,
        glimpses=args.glimpses,
        glimpse_size=args.glimpse_size,
        epochs=args.epochs,
        batch_size=args.batch_size,
        beta=args.beta,
        learning_rate=args.learning_rate,
        n_train=args.n_train,
        data_dir=args.data_dir,
        cache_dir=args.cache_dir,
        seed=args.seed,
        export=args.export or None,
        tune=args.tune or None,
        max_trials=args.max_trials,
    )
    try:  # Bad values and a run directory of another config: exit 2.
        if args.smoke:
            config = cram_cls.smoke_config(**overrides)
        else:
            config = cram_cls.Config(
                **{k: v for k, v in overrides.items() if v is not None}
            )
        name = f"{config.dataset}_{config.clue}_g{config.glimpses}_seed{config.seed}"
        name += "_tune" if config.tune else ""
        name += "_smoke" if args.smoke else ""
        output_dir = args.output_dir or os.path.join("runs", "cram_cls", name)
        prepare_run_dir(output_dir, config)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    try:  # Missing or damaged data files: exit 2; anything else is a bug.
        cram_cls.train_and_evaluate(config, output_dir)
    except DatasetError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
