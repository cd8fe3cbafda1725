#!/usr/bin/env python
"""RNN-SPN: the GRU's initialisation, Keras' defaults against the released
code's Lasagne defaults.

The released Theano/Lasagne code builds its GRU with Lasagne's defaults:
weights Normal(0, 0.1) for inputs and hidden state, zero biases (its
`W_ini_gru` is defined but never passed). Keras' defaults are Glorot
uniform / orthogonal. Both are trained with the paper's recipe on the same
20k generated training sequences for 6 epochs with the same seeds; the
result is the per-epoch validation per-digit error and the first epoch at
which it is below 50 % and 20 %.

    python benchmarks/rnn_spn_init.py --data-dir MNIST_DIR --seeds 0,1

Writes benchmarks/results/rnn_spn_init.json (rewritten after every run, so
an interrupted protocol keeps what it measured; rerunning resumes). Runs
already in that file (same epochs and training-set size) are kept, not
retrained, also where their run directories are gone; each run records the
machine it trained on.
"""

import argparse
import os
import shlex
import sys
import time

# As the training scripts: TensorFlow's oneDNN CPU kernels on unless set.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")

from cram_keras.experiments import rnn_spn
from cram_keras.experiments.runner import read_log
from cram_keras.platform_info import describe
from cram_keras.utils import read_json, write_json

INITIALIZERS = ("keras", "lasagne")


def first_epoch_below(errors, threshold):
    """1-based epoch at which `errors` first drops below `threshold`, or None."""
    for epoch, error in enumerate(errors, start=1):
        if error < threshold:
            return epoch
    return None


def markdown_table(results):
    """Validation per-digit error per epoch, one row per run (README)."""
    epochs = results["epochs"]
    lines = [
        "| run | "
        + " | ".join(f"epoch {e}" for e in range(1, epochs + 1))
        + " | first below 50 % | first below 20 % | test per-digit error |",
        "|---|" + "---|" * (epochs + 3),
    ]
    for _, run in sorted(results["runs"].items()):
        errors = run["valid_per_digit_error_per_epoch"]
        cells = [f"{100 * e:.1f} %" for e in errors] + [""] * (epochs - len(errors))
        lines.append(
            f"| {run['gru_initializer']}, seed {run['seed']} | "
            + " | ".join(cells)
            + f" | {run['first_epoch_below_50'] or '-'} | "
            f"{run['first_epoch_below_20'] or '-'} | "
            f"{100 * run['test_per_digit_error']:.1f} % |"
        )
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--data-dir", default=None, help="MNIST IDX directory")
    p.add_argument("--epochs", type=int, default=6, help="epochs per run (default: 6)")
    p.add_argument("--n-train", type=int, default=20000, help="training sequences")
    p.add_argument("--seeds", default="0", help="comma-separated seeds (default: 0)")
    p.add_argument("--runs-dir", default="runs/rnn_spn_init", help="run directories")
    p.add_argument("--output", default="benchmarks/results/rnn_spn_init.json")
    p.add_argument(
        "--table", action="store_true", help="print the results file as a table"
    )
    args = p.parse_args(argv)
    if args.table:
        print(markdown_table(read_json(args.output)))
        return 0

    seeds = [int(s) for s in args.seeds.split(",")]
    previous = read_json(args.output) if os.path.exists(args.output) else {}
    if (previous.get("epochs"), previous.get("n_train")) != (args.epochs, args.n_train):
        previous = {}  # another protocol: nothing to keep
    results = {
        "command": "python "
        + " ".join(shlex.quote(a) for a in [sys.argv[0], *(argv or sys.argv[1:])]),
        "hardware": describe(),
        "epochs": args.epochs,
        "n_train": args.n_train,
        "runs": {},
    }
    start = time.perf_counter()
    for seed in seeds:
        for init in INITIALIZERS:
            key = f"{init}_seed{seed}"
            if key in previous.get("runs", {}):
                # Measured before (perhaps on another machine, whose run
                # directory is gone): kept, not retrained.
                kept = dict(previous["runs"][key])
                kept.setdefault("hardware", previous.get("hardware"))
                results["runs"][key] = kept
                print(f"{key}: kept from {args.output}")
                continue
            config = rnn_spn.Config(
                model="rnn_spn",
                gru_initializer=init,
                epochs=args.epochs,
                n_train=args.n_train,
                data_dir=args.data_dir,
                seed=seed,
            )
            run_dir = os.path.join(args.runs_dir, f"{init}_seed{seed}")
            metrics = rnn_spn.train_and_evaluate(config, run_dir)
            rows = read_log(run_dir)
            errors = [1.0 - r["val_digit_accuracy"] for r in rows]
            results["runs"][f"{init}_seed{seed}"] = {
                "gru_initializer": init,
                "seed": seed,
                "valid_per_digit_error_per_epoch": errors,
                "first_epoch_below_50": first_epoch_below(errors, 0.5),
                "first_epoch_below_20": first_epoch_below(errors, 0.2),
                "test_per_digit_error": metrics["test_per_digit_error"],
                "train_sequences_per_second": metrics["train_sequences_per_second"],
                "wall_seconds": metrics["wall_seconds"],
                "hardware": describe(),
            }
            results["protocol_wall_seconds"] = time.perf_counter() - start
            write_json(args.output, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
