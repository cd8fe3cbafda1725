#!/usr/bin/env python
"""CPU-budget protocol for E2 (CRAM classification with a clue, paper
Sections III-B1, IV-A, V-A): the clue ablation on 60x60 cluttered MNIST.

Trains CRAM once per clue and training seed, one run after the other, with
the same architecture (the paper-size encoder: 4 glimpses of 12 px, 512-unit
LSTMs), data, optimiser (Adam 1e-4, batch 64) and number of epochs, changing
only the clue:

* oracle   - the digit's ground-truth silhouette;
* saliency - the CNN-DecNN trained on the training split's masks (the paper
             pretrains it on MSRA10k, not available offline), thresholded
             at 0.5, at training and test time;
* none     - an all-zero clue and no clue loss (the ablation).

It writes benchmarks/results/cram_cls_budget.json (per clue: test error at
the best validation epoch, epochs, wall time and validation error per epoch,
as means over the seeds with every seed's values beside them; the saliency
network's test IoU; the command and the hardware), the
validation-error curves assets/cram_cls_curves.png (the paper claims faster
convergence with the clue) and a glimpse figure (PNG and animated GIF) of the
`--figure-clue` run in assets/.

The committed results came from (wall time in the JSON):

    python benchmarks/cram_cls_budget.py --data-dir MNIST_DIR

which uses 20,000 of the 55,000 training images, the usual 5,000 validation
and 10,000 test images (one generated set), 3 epochs per run, 2 epochs of the
saliency network, and training seeds 0 and 1: six runs, about 35 minutes on
2 busy CPU cores. The paper setting is `train_cls.py` with its defaults on a
GPU. Each run keeps its own resumable directory under --runs-dir
(`<clue>_seed<seed>`), so an interrupted protocol continues where it stopped.
"""

import argparse
import json
import os
import shlex
import shutil
import sys

import numpy as np

from cram_keras.experiments import cram_cls
from cram_keras.platform_info import describe
from cram_keras.utils import write_json

CLUE_COLORS = {"oracle": "tab:green", "saliency": "tab:blue", "none": "tab:red"}


def build_parser():
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--data-dir", default=None, help="MNIST IDX directory (default: TFDS)"
    )
    p.add_argument("--cache-dir", default=None, help="generated-data cache")
    p.add_argument(
        "--n-train", type=int, default=20000, help="training images (default: 20000)"
    )
    p.add_argument(
        "--n-valid", type=int, default=5000, help="validation images (default: 5000)"
    )
    p.add_argument(
        "--n-test", type=int, default=10000, help="test images (default: 10000)"
    )
    p.add_argument("--epochs", type=int, default=3, help="epochs per clue (default: 3)")
    p.add_argument(
        "--saliency-epochs",
        type=int,
        default=2,
        help="epochs of the saliency network (default: 2)",
    )
    p.add_argument(
        "--clues", default="oracle,saliency,none", help="comma-separated clues"
    )
    p.add_argument(
        "--seeds",
        default="0,1",
        help="comma-separated training seeds; each clue runs once per seed and "
        "the JSON reports means and per-seed values (default: 0,1)",
    )
    p.add_argument("--runs-dir", default="runs/cram_cls_budget", help="run directories")
    p.add_argument("--output", default="benchmarks/results/cram_cls_budget.json")
    p.add_argument("--curves", default="assets/cram_cls_curves.png")
    p.add_argument(
        "--figure-clue",
        default="saliency",
        help="whose glimpse figure goes to assets/ (default: saliency)",
    )
    p.add_argument(
        "--figure",
        default="assets/cram_cls_glimpses",
        help="glimpse figure path without extension (.png and .gif are written)",
    )
    return p


def plot_curves(runs, path, title):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.8, 3.4))
    for clue, run in runs.items():
        color = CLUE_COLORS.get(clue)
        for errors in run.get("valid_error_per_epoch_per_seed", []):
            epochs = range(1, len(errors) + 1)
            ax.plot(epochs, [100 * e for e in errors], color=color, lw=0.7, alpha=0.4)
        errors = run["valid_error_per_epoch"]
        ax.plot(
            range(1, len(errors) + 1),
            [100 * e for e in errors],
            marker="o",
            color=color,
            label=f"clue: {clue} (test {100 * run['test_error']:.1f} %)",
        )
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation error (%)")
    ax.set_title(title, fontsize=8)
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _mean(values):
    return float(np.mean(values))


def summarize(per_seed):
    """One clue's entry: means over seeds, and every seed's own values."""
    curves = [m["valid_error_per_epoch"] for m in per_seed]
    shortest = min(len(c) for c in curves)
    return {
        "test_error": _mean([m["test_error"] for m in per_seed]),
        "valid_error": _mean([m["valid_error"] for m in per_seed]),
        "epochs": per_seed[0]["epochs"],
        "wall_seconds": _mean([m["wall_seconds"] for m in per_seed]),
        "valid_error_per_epoch": [
            _mean([c[e] for c in curves]) for e in range(shortest)
        ],
        "train_error_per_epoch": [
            _mean([m["train_error_per_epoch"][e] for m in per_seed])
            for e in range(shortest)
        ],
        "glimpse_in_digit_box": _mean([m["glimpse_in_digit_box"] for m in per_seed]),
        "glimpse_scale": _mean([m["glimpse_scale"] for m in per_seed]),
        "beta": per_seed[0]["beta"],
        "parameters": per_seed[0]["parameters"],
        "train_samples_per_second": _mean(
            [m["train_samples_per_second"] for m in per_seed]
        ),
        "seeds": [m["seed"] for m in per_seed],
        "test_error_per_seed": [m["test_error"] for m in per_seed],
        "wall_seconds_per_seed": [m["wall_seconds"] for m in per_seed],
        "best_epoch_per_seed": [m["best_epoch"] for m in per_seed],
        "valid_error_per_epoch_per_seed": curves,
    }


def main(argv=None):
    args = build_parser().parse_args(argv)
    clues = [c.strip() for c in args.clues.split(",") if c.strip()]
    unknown = sorted(set(clues) - set(cram_cls.CLUES))
    if unknown or not clues:
        print(
            f"error: --clues must name some of {cram_cls.CLUES}. Received: {args.clues!r}",
            file=sys.stderr,
        )
        return 2
    try:
        seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    except ValueError:
        seeds = []
    if not seeds or min(seeds) < 0 or len(set(seeds)) != len(seeds):
        print(
            "error: --seeds must be distinct integers >= 0, comma-separated. "
            f"Received: {args.seeds!r}",
            file=sys.stderr,
        )
        return 2
    command = "python " + " ".join(
        shlex.quote(a) for a in [sys.argv[0], *(sys.argv[1:] if argv is None else argv)]
    )
    protocol = {
        "dataset": "cluttered60",
        "n_train": args.n_train,
        "n_valid": args.n_valid,
        "n_test": args.n_test,
        "epochs": args.epochs,
        "saliency_epochs": args.saliency_epochs,
        "seeds": seeds,
        "budget": (
            f"CPU budget: {args.n_train} of the 55,000 training images, "
            f"{args.epochs} epochs per clue and seed, the same for every clue; "
            "paper-size model, Adam 1e-4, batch 64; test error at the best "
            f"validation epoch; values are means over the training seeds {seeds} "
            "(one generated dataset), per-seed values alongside"
        ),
    }
    results = {"runs": {}}
    for clue in clues:
        per_seed = []
        for seed in seeds:
            config = cram_cls.Config(
                dataset="cluttered60",
                clue=clue,
                data_dir=args.data_dir,
                cache_dir=args.cache_dir,
                n_train=args.n_train,
                n_valid=args.n_valid,
                n_test=args.n_test,
                epochs=args.epochs,
                saliency_epochs=args.saliency_epochs,
                seed=seed,
            )
            run_dir = os.path.join(args.runs_dir, f"{clue}_seed{seed}")
            metrics = cram_cls.train_and_evaluate(config, run_dir)
            per_seed.append(dict(metrics, seed=seed))
            if clue == args.figure_clue and seed == seeds[0]:
                figure_dir = os.path.dirname(args.figure)
                if figure_dir:
                    os.makedirs(figure_dir, exist_ok=True)
                for ext in ("png", "gif"):
                    shutil.copyfile(
                        os.path.join(run_dir, f"glimpses.{ext}"), f"{args.figure}.{ext}"
                    )
        results["runs"][clue] = summarize(per_seed)
        if clue == "saliency":
            for key in ("saliency_test_iou", "saliency_valid_iou", "saliency_seconds"):
                results[key] = _mean([m[key] for m in per_seed])
            results["saliency_test_iou_per_seed"] = [
                m["saliency_test_iou"] for m in per_seed
            ]
        results.update(
            command=command,
            hardware=describe(),
            protocol=protocol,
            anchors=dict(
                cram_cls.ANCHORS,
                note=(
                    "published test errors, not run here: RAM 8 glimpses and its "
                    "conv net (Mnih et al. 2014) on 60x60 cluttered MNIST; ST-CNN "
                    "(Jaderberg et al. 2015) on its 60x60 translated+cluttered MNIST"
                ),
            ),
            # The sum of the runs' own wall times (saliency training included),
            # which survive interruptions and resumed invocations.
            total_wall_seconds=sum(
                sum(r["wall_seconds_per_seed"]) for r in results["runs"].values()
            ),
        )
        write_json(args.output, results)
    if args.curves:
        curves_dir = os.path.dirname(args.curves)
        if curves_dir:
            os.makedirs(curves_dir, exist_ok=True)
        plot_curves(
            results["runs"],
            args.curves,
            f"CRAM, cluttered MNIST 60x60, {args.n_train} training images, "
            f"{len(seeds)} seed(s)",
        )
    print(json.dumps(results, indent=2, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
