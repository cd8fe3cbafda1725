#!/usr/bin/env python
"""Train and evaluate RNN-SPN, FFN-SPN or the CNN on cluttered MNIST sequences
(Sønderby et al. 2015, Table 1). See cram_keras/experiments/rnn_spn.py.

Examples:
    python train_rnn_spn.py --model rnn_spn --downsample 2          # paper setting
    python train_rnn_spn.py --data-dir ../shared/data/mnist --epochs 3
    python train_rnn_spn.py --smoke --data-dir DIR                  # seconds
"""

import argparse
import os
import sys


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--model",
        choices=("rnn_spn", "ffn_spn", "conv"),
        default=None,
        help="rnn_spn: GRU + transformer per step; ffn_spn: one transformer, "
        "three heads; conv: the classifier alone (default: rnn_spn).",
    )
    p.add_argument(
        "--downsample",
        type=float,
        default=None,
        help="downsample factor d of the transformer: crops are int(100/d) "
        "pixels wide (default: 2; the paper's Table 1 tries 1..4).",
    )
    p.add_argument(
        "--epochs", type=int, default=None, help="maximum epochs (default: 300)"
    )
    p.add_argument("--batch-size", type=int, default=None, help="default: 100")
    p.add_argument(
        "--data-dir",
        default=None,
        help="directory with the four official MNIST IDX .gz files; without it "
        "MNIST comes from TFDS (needs internet the first time)",
    )
    p.add_argument(
        "--cache-dir",
        default=None,
        help="where generated sequence sets are cached (default: $CRAM_KERAS_CACHE or ~/.cache/cram_keras)",
    )
    p.add_argument(
        "--output-dir",
        default=None,
        help="run directory; rerunning with the same flags resumes it "
        "(default: runs/rnn_spn/<model>_d<downsample>_seed<seed>[_smoke])",
    )
    p.add_argument("--seed", type=int, default=None, help="training seed (default: 0)")
    p.add_argument(
        "--jit-compile",
        action="store_true",
        help="compile the train step with XLA (off by default: slower on CPU "
        "for these models, see benchmarks/results/rnn_spn_speed.json)",
    )
    p.add_argument(
        "--n-train",
        type=int,
        default=None,
        help="training sequences to generate (default: 60000, the paper's)",
    )
    p.add_argument(
        "--smoke",
        action="store_true",
        help="a seconds-long run on a tiny generated set (2 epochs, 64 sequences)",
    )
    p.add_argument(
        "--export",
        action="store_true",
        help="also write a SavedModel (serve: images -> per-step class probabilities)",
    )
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    from cram_keras.experiments import rnn_spn

    overrides = dict(
        model=args.model,
        downsample=args.downsample,
        epochs=args.epochs,
        batch_size=args.batch_size,
        data_dir=args.data_dir,
        cache_dir=args.cache_dir,
        seed=args.seed,
        export=args.export or None,
        jit_compile=args.jit_compile or None,
        n_train=args.n_train,
    )
    try:
        if args.smoke:
            config = rnn_spn.smoke_config(**overrides)
        else:
            config = rnn_spn.Config(
                **{k: v for k, v in overrides.items() if v is not None}
            )
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    output_dir = args.output_dir or os.path.join(
        "runs",
        "rnn_spn",
        f"{config.model}_d{config.downsample:g}_seed{config.seed}"
        + ("_smoke" if args.smoke else ""),
    )
    rnn_spn.train_and_evaluate(config, output_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
