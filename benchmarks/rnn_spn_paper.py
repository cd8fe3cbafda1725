#!/usr/bin/env python
"""RNN-SPN Table 1 as a resumable campaign: the paper protocol on this CPU.

The protocol is exactly the paper's (released code's): 60k / 10k / 10k
generated sequences, d = 2, batch 100, RMSprop 5e-4 (rho 0.9, eps 1e-6),
two-stage clipping (+-1, then global norm 5), the released code's
learning-rate rule, early stopping with patience 50 on validation per-digit
error, up to 300 epochs, test error at the best validation epoch. Models run
in stages, each in its own run directory: first RNN-SPN to 60 epochs, FFN-SPN
and the CNN to 20 (`--schedule`), then each in turn to the end of its
protocol. A killed campaign continues where it stopped when the same command
is run again (the runner's crash-safe epoch checkpoints and
`stop_after_epochs`).

Run it from a git worktree at a fixed commit, in the background:

    git worktree add runs/campaign <commit>
    cd runs/campaign && nohup python benchmarks/rnn_spn_paper.py \\
        --data-dir /work/shared/data/mnist --runs-dir ../rnn_spn_paper \\
        > ../rnn_spn_paper.log 2>&1 &

and, whenever you stop, write the progress file from the run directories
(it also evaluates the best-validation weights so far on the test set):

    python benchmarks/rnn_spn_paper.py --report --data-dir /work/shared/data/mnist \\
        --runs-dir runs/rnn_spn_paper --commit <commit>

`benchmarks/results/rnn_spn_paper.json`: per model, epochs done, per-epoch
validation per-digit and sequence errors, test errors at the best validation
epoch so far, wall time, throughput, hardware, the campaign's commit and
whether it has finished. A run whose directory is gone keeps its committed
curve under ``lost_runs``.
"""

import argparse
import json
import os
import shlex
import subprocess
import sys
import warnings

import numpy as np

# As the training scripts: TensorFlow's oneDNN CPU kernels on unless set.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")

import keras  # noqa: E402 - after the oneDNN setting

from cram_keras.experiments import rnn_spn
from cram_keras.experiments.runner import (
    CHECKPOINT_DIR,
    dtype_policy_scope,
    load_config,
)
from cram_keras.platform_info import describe
from cram_keras.training.checkpoint import EpochCheckpoints
from cram_keras.utils import read_json, write_json

PAPER_TABLE_1 = {"rnn_spn": 0.015, "ffn_spn": 0.020, "conv": 0.029}
MODELS = ("rnn_spn", "ffn_spn", "conv")


def paper_config(model, data_dir, gru_initializer):
    kwargs = dict(model=model, data_dir=data_dir)
    if model == "rnn_spn":
        kwargs["gru_initializer"] = gru_initializer
    return rnn_spn.Config(**kwargs)


def _commit():
    try:
        return subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            cwd=os.path.dirname(os.path.abspath(__file__)),
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def report_model(run_dir, data_cache, attention_path=None):
    """Progress of one run directory, with the test error of the best
    validation epoch so far (evaluated here); with `attention_path`, also
    the Fig. 3-style attention figure of the best weights so far."""
    checkpoints = EpochCheckpoints(os.path.join(run_dir, CHECKPOINT_DIR))
    messages = []
    record = checkpoints.latest(log=messages.append)
    if record is None:
        # No record with intact weights: a run brought back from another
        # machine with its logs only. Its newest readable record still holds
        # the whole per-epoch log.
        record = _newest_readable_record(checkpoints)
        if record is None:
            return None
        print(f"{run_dir}: no weights here; reporting its per-epoch log only")
    else:
        for message in messages:
            print(message, file=sys.stderr)
    config = load_config(rnn_spn.Config, run_dir)
    rows = record["log"]
    early = record["early_stopping"]
    entry = {
        "epochs_done": len(rows),
        "valid_per_digit_error": [1.0 - r["val_digit_accuracy"] for r in rows],
        "valid_sequence_error": [1.0 - r["val_sequence_accuracy"] for r in rows],
        "train_loss": [r["loss"] for r in rows],
        "best_epoch": None if early["best_epoch"] is None else early["best_epoch"] + 1,
        "finished": bool(record.get("finished")),
        "stopped_early": early.get("stopped_epoch") is not None,
        "train_wall_seconds": record.get("train_wall_seconds"),
        "train_sequences_per_second": float(
            np.median([r["train_samples_per_second"] for r in rows[1:] or rows])
        ),
        "gru_initializer": config.gru_initializer
        if config.model == "rnn_spn"
        else None,
        "paper_per_digit_error": PAPER_TABLE_1[config.model],
    }
    metrics_path = os.path.join(run_dir, "metrics.json")
    metrics = read_json(metrics_path) if os.path.exists(metrics_path) else None
    if metrics is not None:
        entry["final_metrics"] = {
            k: metrics[k]
            for k in ("test_per_digit_error", "test_sequence_error", "wall_seconds")
        }
    best = record.get("best_weights")
    best_path = os.path.join(run_dir, CHECKPOINT_DIR, best) if best else None
    if best_path and not os.path.exists(best_path):
        # Weights not kept (e.g. a run brought back from another machine
        # with its logs only): a finished run's metrics.json holds the test
        # errors the runner measured after restoring the best weights; an
        # unfinished one has no test error to report.
        source = "test errors from metrics.json" if metrics else "no test error"
        print(f"{run_dir}: {best} not here; {source}")
        best_path = None
    if best_path is None and metrics is not None:
        entry["test_per_digit_error_at_best"] = metrics["test_per_digit_error"]
        entry["test_sequence_error_at_best"] = metrics["test_sequence_error"]
    elif best_path:
        key = (config.data_dir, config.n_train, config.data_seed)
        if key not in data_cache:
            data_cache[key] = rnn_spn.EXPERIMENT.load_data(config, print)
        data = data_cache[key]
        with dtype_policy_scope(config):
            model = rnn_spn.EXPERIMENT.build_model(config, data)
        with warnings.catch_warnings():
            # The checkpoint also holds the optimizer, which evaluation does not
            # build; Keras warns that it skips those variables.
            warnings.filterwarnings("ignore", message="Skipping variable loading")
            model.load_weights(best_path)
        test = rnn_spn._dataset(*data.splits["test"], config.batch_size)
        scores = model.evaluate(test, return_dict=True, verbose=0)
        entry["test_per_digit_error_at_best"] = 1.0 - float(scores["digit_accuracy"])
        entry["test_sequence_error_at_best"] = 1.0 - float(scores["sequence_accuracy"])
        if attention_path:
            from cram_keras.visualization import attention_figure

            images, labels = data.splits["test"]
            attention_figure(model, images[:6], labels[:6], attention_path)
            entry["attention_figure"] = attention_path
    return entry


def _newest_readable_record(checkpoints):
    """The newest checkpoint record that parses, weights or not."""
    for _, path in checkpoints.records():
        try:
            return read_json(path)
        except (OSError, ValueError):
            continue
    return None


def write_report(args):
    previous = read_json(args.output) if os.path.exists(args.output) else {}
    results = {
        "protocol": (
            "paper: 60k/10k/10k sequences, d=2, batch 100, RMSprop 5e-4, two-stage "
            "clipping, released LR rule, early stopping patience 50 on validation "
            "per-digit error, up to 300 epochs, test at the best validation epoch"
        ),
        "command": args.command
        or "python benchmarks/rnn_spn_paper.py --data-dir DIR --runs-dir "
        f"{args.runs_dir}",
        "commit": args.commit or previous.get("commit") or _commit(),
        "hardware": args.hardware or describe(),
        "backend": args.backend or keras.backend.backend(),
        "models": {},
        "lost_runs": list(previous.get("lost_runs", [])),
    }
    if args.note:
        results["note"] = args.note
    cache = {}
    for model in MODELS:
        run_dir = os.path.join(args.runs_dir, model)
        attention = args.attention_figure if model == "rnn_spn" else None
        entry = (
            report_model(run_dir, cache, attention) if os.path.isdir(run_dir) else None
        )
        old = previous.get("models", {}).get(model)
        if entry is None:
            if old is not None:
                results["models"][model] = old
            continue
        if old is not None and old.get("epochs_done", 0) > entry["epochs_done"]:
            # The directory was restarted on a fresh machine: keep the lost curve.
            results["lost_runs"].append(dict(old, model=model))
        results["models"][model] = entry
    write_json(args.output, results)
    if args.curves_figure:
        learning_curves_figure(results, args.curves_figure)
    print(json.dumps(results["models"], indent=1)[:4000])
    print(markdown_table(results))


def markdown_table(results):
    """The README's Table 1 rows from the progress file."""
    names = {"rnn_spn": "RNN-SPN, d = 2", "ffn_spn": "FFN-SPN, d = 2", "conv": "CNN"}
    lines = [
        "| model | paper: per-digit test error | ours: per-digit test error "
        "(best validation epoch) | ours: sequence test error | epochs done (best) "
        "| training wall time | train sequences/s | state |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for model in MODELS:
        entry = results["models"].get(model)
        paper = f"{PAPER_TABLE_1[model] * 100:.1f} %"
        if not entry:
            lines.append(
                f"| {names[model]} | {paper} | not started | | 0 | | | queued |"
            )
            continue
        state = (
            "early-stopped"
            if entry["stopped_early"]
            else f"finished ({entry['epochs_done']} epochs)"
            if entry["finished"]
            else "in progress"
        )
        seconds = entry.get("train_wall_seconds") or 0.0
        wall = (
            f"{seconds / 3600:.1f} h" if seconds >= 3600 else f"{seconds / 60:.0f} min"
        )
        test = entry.get("test_per_digit_error_at_best")
        seq = entry.get("test_sequence_error_at_best")
        lines.append(
            f"| {names[model]} | {paper} | "
            + (f"{test * 100:.1f} %" if test is not None else "")
            + " | "
            + (f"{seq * 100:.1f} %" if seq is not None else "")
            + f" | {entry['epochs_done']} ({entry['best_epoch']}) | {wall} | "
            f"{entry['train_sequences_per_second']:.0f} | {state} |"
        )
    return "\n".join(lines)


def learning_curves_figure(results, path):
    """Validation per-digit error against epoch (log scale) for every model,
    with the paper's Table 1 test errors as horizontal lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = {"rnn_spn": "RNN-SPN", "ffn_spn": "FFN-SPN", "conv": "CNN"}
    colours = {"rnn_spn": "C0", "ffn_spn": "C1", "conv": "C2"}
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for model in MODELS:
        entry = results["models"].get(model)
        if entry:
            errors = np.asarray(entry["valid_per_digit_error"]) * 100
            state = "finished" if entry["finished"] else "in progress"
            ax.plot(
                np.arange(1, len(errors) + 1),
                errors,
                marker=".",
                color=colours[model],
                label=f"{names[model]} (ours, validation; {len(errors)} epochs, {state})",
            )
        ax.axhline(
            PAPER_TABLE_1[model] * 100,
            color=colours[model],
            linestyle="--",
            linewidth=1,
            label=f"{names[model]} paper test error {PAPER_TABLE_1[model] * 100:.1f} %",
        )
    ax.set_yscale("log")
    ax.set_xlabel("epoch (60k training sequences each)")
    ax.set_ylabel("per-digit error (%)")
    import textwrap

    machine = f"{results.get('hardware', '')} ({results.get('backend', 'tensorflow')})"
    ax.set_title(
        "RNN-SPN Table 1 campaign: validation per-digit error, d = 2\n"
        + "\n".join(textwrap.wrap(machine, 110)),
        fontsize=8,
    )
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--data-dir", default=None, help="MNIST IDX directory (required offline)"
    )
    p.add_argument("--runs-dir", default="runs/rnn_spn_paper", help="run directories")
    p.add_argument(
        "--models", default=",".join(MODELS), help="comma-separated, in order"
    )
    p.add_argument(
        "--gru-initializer",
        default="lasagne",
        choices=("keras", "lasagne"),
        help="RNN-SPN's GRU initialisation (default: lasagne, the released code's; "
        "see benchmarks/results/rnn_spn_init.json)",
    )
    p.add_argument(
        "--schedule",
        default="rnn_spn:60,ffn_spn:20,conv:20",
        help="first stage: model:epochs, in order (default: rnn_spn:60,ffn_spn:20,"
        "conv:20); after it every model of --models trains to the end of its protocol",
    )
    p.add_argument("--report", action="store_true", help="only write the progress file")
    p.add_argument(
        "--commit", default=None, help="the campaign's commit (for --report)"
    )
    p.add_argument(
        "--command",
        default=None,
        help="the campaign's command line, recorded by --report (default: this "
        "script's)",
    )
    p.add_argument(
        "--hardware",
        default=None,
        help="the machine the runs trained on, recorded by --report (default: "
        "this machine's description)",
    )
    p.add_argument(
        "--backend",
        default=None,
        help="the Keras backend the runs trained with, recorded by --report "
        "(default: this process's)",
    )
    p.add_argument(
        "--note", default=None, help="a remark stored with the progress file"
    )
    p.add_argument(
        "--output",
        default="benchmarks/results/rnn_spn_paper.json",
        help="the progress file written by --report",
    )
    p.add_argument(
        "--curves-figure",
        default="assets/rnn_spn_paper_curves.png",
        help="learning-curve figure written by --report ('' for none)",
    )
    p.add_argument(
        "--attention-figure",
        default="assets/rnn_spn_attention.png",
        help="Fig. 3-style figure of the best RNN-SPN so far, written by --report "
        "('' for none)",
    )
    args = p.parse_args(argv)
    if args.report:
        write_report(args)
        return 0
    print("campaign:", shlex.join(sys.argv), "commit", _commit(), flush=True)
    models = args.models.split(",")
    stages = [parse_schedule(args.schedule, models), [(m, None) for m in models]]
    for stage in stages:
        for model, epochs in stage:
            config = paper_config(model, args.data_dir, args.gru_initializer)
            print(f"campaign: {model} to {epochs or 'the end'}", flush=True)
            rnn_spn.train_and_evaluate(
                config, os.path.join(args.runs_dir, model), stop_after_epochs=epochs
            )
    return 0


def parse_schedule(text, models):
    """``"rnn_spn:60,ffn_spn:20"`` -> ``[("rnn_spn", 60), ("ffn_spn", 20)]``."""
    stage = []
    for item in text.split(","):
        model, _, epochs = item.partition(":")
        if model not in models or not epochs.isdigit() or int(epochs) < 1:
            raise SystemExit(
                f"--schedule takes model:epochs items with models from {models} and "
                f"positive epochs. Received: {item!r}"
            )
        stage.append((model, int(epochs)))
    return stage


if __name__ == "__main__":
    sys.exit(main())
