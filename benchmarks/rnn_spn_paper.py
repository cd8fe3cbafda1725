#!/usr/bin/env python
"""RNN-SPN Table 1 as a resumable campaign: the paper protocol.

The protocol is exactly the paper's (released code's): 60k / 10k / 10k
generated sequences, batch 100, RMSprop 5e-4 (rho 0.9, eps 1e-6), two-stage
clipping (+-1, then global norm 5), the released code's learning-rate rule,
early stopping with patience 50 on validation per-digit error, up to 300
epochs, test error at the best validation epoch. The downsample factor d of
the SPN models is `--downsample` (default 2; Table 1 has d = 1..4). Models
run in stages, each in its own run directory (`<model>` for d = 2 and the
CNN, `<model>_d<d>` otherwise): first RNN-SPN to 60 epochs, FFN-SPN and the
CNN to 20 (`--schedule`), then each in turn to the end of its protocol. A
killed campaign continues where it stopped when the same command is run
again (the runner's crash-safe epoch checkpoints and `stop_after_epochs`).
`--set KEY=VALUE` (repeatable) changes any other `Config` field of the runs
trained, e.g. the dropout chosen on the validation set
(benchmarks/rnn_spn_dropout_search.py): `--set dropout=0.3 --set
dropout_placement=paper`; the run directories keep their names.

Run it from a git worktree at a fixed commit, in the background (MNIST_DIR
holds the four official MNIST IDX .gz files):

    git worktree add runs/campaign <commit>
    cd runs/campaign && nohup python benchmarks/rnn_spn_paper.py \\
        --data-dir MNIST_DIR --runs-dir ../rnn_spn_paper \\
        > ../rnn_spn_paper.log 2>&1 &

and, whenever you stop, write the progress file from the run directories
(it also evaluates the best-validation weights so far on the test set, and
measures each SPN step's window area there):

    python benchmarks/rnn_spn_paper.py --report --data-dir MNIST_DIR \\
        --runs-dir runs/rnn_spn_paper --commit <commit> \\
        --attention-figure rnn_spn_d3=assets/rnn_spn_attention_d3.png

`benchmarks/results/rnn_spn_paper.json`: one row per run directory (model
and d), with its epochs done, per-epoch validation per-digit and sequence
errors, test errors at the best validation epoch so far, the mean window
area of each step as a fraction of the image (`window_area_per_step`, the
zoom), wall time, throughput, hardware, the campaign's commit and whether
it has finished. A run whose directory is gone keeps its committed row, or
its curve under ``lost_runs`` when a restarted run replaced it.
"""

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
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

# Table 1 of the paper: per-digit test error by model and downsample factor d
# (the CNN has no transformer).
PAPER_TABLE_1 = {
    ("rnn_spn", 1.0): 0.018,
    ("rnn_spn", 2.0): 0.015,
    ("rnn_spn", 3.0): 0.018,
    ("rnn_spn", 4.0): 0.023,
    ("ffn_spn", 1.0): 0.044,
    ("ffn_spn", 2.0): 0.020,
    ("ffn_spn", 3.0): 0.029,
    ("ffn_spn", 4.0): 0.053,
    ("conv", None): 0.029,
}
MODELS = ("rnn_spn", "ffn_spn", "conv")
NAMES = {"rnn_spn": "RNN-SPN", "ffn_spn": "FFN-SPN", "conv": "CNN"}


def paper_error(model, downsample):
    return PAPER_TABLE_1.get((model, None if model == "conv" else float(downsample)))


def row_key(model, downsample=2.0):
    """A run directory's name and its row's key: the model for the d = 2
    rows (and the CNN), ``<model>_d<d>`` for the other factors."""
    if model == "conv" or float(downsample) == 2.0:
        return model
    return f"{model}_d{float(downsample):g}"


def row_name(model, downsample):
    if model == "conv":
        return NAMES[model]
    return f"{NAMES[model]}, d = {float(downsample):g}"


# Fields set by the campaign's own flags (they also name the run directory).
FLAG_FIELDS = {
    "model": "--models",
    "downsample": "--downsample",
    "data_dir": "--data-dir",
}


def paper_config(model, data_dir, gru_initializer, downsample=2.0, overrides=None):
    """The paper protocol's Config of ``model``; ``overrides`` (``{field:
    value}``, from ``--set``) change any field but those of `FLAG_FIELDS`."""
    kwargs = dict(model=model, data_dir=data_dir)
    if model == "rnn_spn":
        kwargs["gru_initializer"] = gru_initializer
    if model != "conv":
        kwargs["downsample"] = float(downsample)
    kwargs.update(overrides or {})
    return rnn_spn.Config(**kwargs)


def parse_sets(assignments):
    """``["dropout=0.3", ...]`` -> ``{"dropout": 0.3, ...}`` (SystemExit with
    one line on an unknown field, a bad value or a field of `FLAG_FIELDS`)."""
    from cram_keras.experiments.config import parse_assignments

    try:
        overrides = parse_assignments(rnn_spn.Config, assignments)
    except ValueError as err:
        raise SystemExit(str(err)) from None
    for key in overrides:
        if key in FLAG_FIELDS:
            raise SystemExit(
                f"--set {key}=...: {key} is set with {FLAG_FIELDS[key]} (it names the "
                "run directory)."
            )
    return overrides


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
        "model": config.model,
        "downsample": None if config.model == "conv" else config.downsample,
        "dropout": config.dropout,
        "dropout_placement": config.dropout_placement,
        "paper_per_digit_error": paper_error(config.model, config.downsample),
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
        if hasattr(model, "transforms"):
            entry["window_area_per_step"] = window_areas(
                model, data.splits["test"][0], config.batch_size
            )
        if attention_path:
            from cram_keras.visualization import attention_figure

            images, labels = data.splits["test"]
            attention_figure(model, images[:6], labels[:6], attention_path)
            entry["attention_figure"] = attention_path
    return entry


def window_areas(model, images, batch_size):
    """Zoom: the mean area of each step's sampling window as a fraction of
    the image (|det A| of its affine transform), over `images`; a list with
    one value per step."""
    from cram_keras.data.pipelines import as_float
    from cram_keras.evaluation.glimpses import affine_window_area

    areas = []
    for start in range(0, len(images), batch_size):
        params = model.transforms(as_float(images[start : start + batch_size]))
        areas.append(affine_window_area(keras.ops.convert_to_numpy(params)))
    return [float(v) for v in np.concatenate(areas).mean(axis=0)]


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
        "date": time.strftime("%Y-%m-%d", time.gmtime()),
        "models": {},
        "lost_runs": list(previous.get("lost_runs", [])),
    }
    if args.note:
        results["note"] = args.note
    cache = {}
    found = (
        sorted(
            name
            for name in os.listdir(args.runs_dir)
            if os.path.exists(os.path.join(args.runs_dir, name, "config.json"))
        )
        if os.path.isdir(args.runs_dir)
        else []
    )
    keys = list(dict.fromkeys(list(previous.get("models", {})) + found))
    for key in sorted(keys, key=_row_order):
        run_dir = os.path.join(args.runs_dir, key)
        attention = None
        if key in args.attention_figures:
            attention = args.attention_figures[key]
        entry = report_model(run_dir, cache, attention) if key in found else None
        if entry is not None:
            # Rows of one file may have trained on different machines and
            # commits: each row records its own.
            entry["hardware"] = results["hardware"]
            entry["backend"] = results["backend"]
            entry["commit"] = results["commit"]
        old = previous.get("models", {}).get(key)
        if entry is None:
            if old is not None:
                results["models"][key] = old
            continue
        if old is not None and old.get("epochs_done", 0) > entry["epochs_done"]:
            # The directory was restarted on a fresh machine: keep the lost curve.
            results["lost_runs"].append(dict(old, model=key))
        results["models"][key] = entry
    write_json(args.output, results)
    if args.curves_figure:
        learning_curves_figure(results, args.curves_figure)
    print(json.dumps(results["models"], indent=1)[:4000])
    print(markdown_table(results))


def _row_order(key):
    """Table 1's order: RNN-SPN d = 1..4, FFN-SPN d = 1..4, the CNN."""
    model, _, d = key.partition("_d")
    if model not in MODELS:
        model, d = key, ""
    return (MODELS.index(model) if model in MODELS else len(MODELS), float(d or 2), key)


def _key_model(key):
    """(model, d) of a row key (``rnn_spn``, ``ffn_spn_d3``, ``conv``)."""
    model, _, d = key.partition("_d")
    return model, (None if model == "conv" else float(d or 2))


def table_rows():
    """Every row of the paper's Table 1 as its key, in the table's order."""
    return sorted(
        (row_key(model, d if d is not None else 2.0) for model, d in PAPER_TABLE_1),
        key=_row_order,
    )


def markdown_table(results):
    """Table 1 from the progress file: the paper's nine rows, ours beside."""
    lines = [
        "| model | paper: per-digit test error | ours: per-digit test error "
        "(best validation epoch) | ours: sequence test error | epochs done (best) "
        "| training wall time | train sequences/s | state |",
        "|---|---|---|---|---|---|---|---|",
    ]
    keys = table_rows() + [k for k in results["models"] if k not in table_rows()]
    for key in keys:
        model, d = _key_model(key)
        entry = results["models"].get(key)
        error = paper_error(model, d or 2.0)
        paper = f"{error * 100:.1f} %" if error is not None else ""
        name = row_name(model, d or 2.0)
        if not entry:
            lines.append(f"| {name} | {paper} | not run | | 0 | | | not run |")
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
            f"| {name} | {paper} | "
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

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for index, key in enumerate(sorted(results["models"], key=_row_order)):
        entry = results["models"][key]
        model, d = _key_model(key)
        name = row_name(model, d or 2.0)
        colour = f"C{index % 10}"
        errors = np.asarray(entry["valid_per_digit_error"]) * 100
        state = "finished" if entry["finished"] else "in progress"
        ax.plot(
            np.arange(1, len(errors) + 1),
            errors,
            marker=".",
            color=colour,
            label=f"{name} (ours, validation; {len(errors)} epochs, {state})",
        )
        paper = paper_error(model, d or 2.0)
        if paper is not None:
            ax.axhline(
                paper * 100,
                color=colour,
                linestyle="--",
                linewidth=1,
                label=f"{name} paper test error {paper * 100:.1f} %",
            )
    ax.set_yscale("log")
    ax.set_xlabel("epoch (60k training sequences each)")
    ax.set_ylabel("per-digit error (%)")
    import textwrap

    machine = f"{results.get('hardware', '')} ({results.get('backend', 'tensorflow')})"
    ax.set_title(
        "RNN-SPN Table 1: validation per-digit error\n"
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
        action="append",
        default=None,
        metavar="[ROW=]PATH",
        help="Fig. 3-style figure of a row's best weights so far, written by "
        "--report; ROW is a run directory's name (rnn_spn_d3, ffn_spn, ...; "
        "without it: rnn_spn); repeatable; '' for none (default: "
        "rnn_spn=assets/rnn_spn_attention.png)",
    )
    p.add_argument(
        "--downsample",
        type=float,
        default=2.0,
        help="downsample factor d of the SPN models trained (default 2; their "
        "run directories are <model>_d<d> for d other than 2)",
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        dest="assignments",
        metavar="KEY=VALUE",
        help="any other Config field of the runs trained, e.g. --set dropout=0.3 "
        "(repeatable; the run directories keep their names)",
    )
    args = p.parse_args(argv)
    args.attention_figures = parse_figures(args.attention_figure)
    if args.report:
        write_report(args)
        return 0
    overrides = parse_sets(args.assignments)
    models = args.models.split(",")
    stages = [parse_schedule(args.schedule, models), [(m, None) for m in models]]
    configs = {}
    for model in models:
        try:
            configs[model] = paper_config(
                model, args.data_dir, args.gru_initializer, args.downsample, overrides
            )
        except (TypeError, ValueError) as err:
            raise SystemExit(f"{model}: {err}") from None
    print("campaign:", shlex.join(sys.argv), "commit", _commit(), flush=True)
    for stage in stages:
        for model, epochs in stage:
            config = configs[model]
            key = row_key(model, args.downsample)
            print(f"campaign: {key} to {epochs or 'the end'}", flush=True)
            rnn_spn.train_and_evaluate(
                config, os.path.join(args.runs_dir, key), stop_after_epochs=epochs
            )
    return 0


def parse_figures(values):
    """``["x.png", "rnn_spn_d3=y.png"]`` -> ``{"rnn_spn": "x.png", ...}``; an
    empty value drops that row's figure."""
    if values is None:
        return {"rnn_spn": "assets/rnn_spn_attention.png"}
    figures = {}
    for value in values:
        key, sep, path = value.partition("=")
        if not sep:
            key, path = "rnn_spn", value
        if path:
            figures[key] = path
        else:
            figures.pop(key, None)
    return figures


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
