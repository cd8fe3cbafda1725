"""RNN-SPN Table 1 as a resumable campaign (configuration
``rnn_spn/table1``): the paper protocol, one run directory per row.

The protocol is exactly the paper's (released code's): 60k / 10k / 10k
generated sequences, batch 100, RMSprop 5e-4 (rho 0.9, eps 1e-6), two-stage
clipping (+-1, then global norm 5), the released code's learning-rate rule,
early stopping with patience 50 on validation per-digit error, up to 300
epochs, test error at the best validation epoch. Each row of Table 1 is a
variant of the configuration (``rnn_spn``, ``ffn_spn``, ``conv`` for d = 2
and the CNN, ``<model>_d<d>`` otherwise) and trains in the run directory of
that name; a row's run with another seed (``--seed N`` of the training
script) trains in ``<row>_seed<N>`` and is reported as a row of its own
with its seed. The rows train in stages: first to the epochs of the
configuration's SCHEDULE (``--schedule``), then each in turn to the end of
its protocol. A killed campaign continues where it stopped when the same
command is run again (the runner's crash-safe epoch checkpoints and
``stop_after_epochs``). ``--set KEY=VALUE`` (repeatable) changes any other
Config field of the rows trained, e.g. the dropout chosen on the validation
set (configuration ``rnn_spn/dropout_search``): ``--set dropout=0.3 --set
dropout_placement=paper``; the run directories keep their names.

Run it from a git worktree at a fixed commit, in the background (MNIST_DIR
holds the four official MNIST IDX .gz files):

    git worktree add runs/campaign <commit>
    cd runs/campaign && nohup python run_study.py rnn_spn/table1 \\
        --data-dir MNIST_DIR --runs-dir ../rnn_spn_paper \\
        > ../rnn_spn_paper.log 2>&1 &

and, whenever you stop, write the progress file from the run directories
(it also evaluates the best-validation weights so far on the test set, and
measures each SPN step's window area there):

    python run_study.py rnn_spn/table1 --report --data-dir MNIST_DIR \\
        --runs-dir runs/rnn_spn_paper --commit <commit> \\
        --attention-figure rnn_spn_d3=assets/rnn_spn_attention_d3.png

The progress file (the configuration's OUTPUT,
``benchmarks/results/rnn_spn_paper.json``): one row per run directory, with
its epochs done, per-epoch validation per-digit and sequence errors, test
errors at the best validation epoch so far, the mean window area of each
step as a fraction of the image (``window_area_per_step``, the zoom), wall
time, throughput, hardware, the campaign's commit, the row's configuration
and settings, and whether it has finished. A run whose directory is gone
keeps its committed row, or its curve under ``lost_runs`` when a restarted
run replaced it. With ``--variants`` only those rows are reported again, the
others keep their committed values: rows of campaigns at other commits or on
other machines keep theirs (each report stamps the rows it writes with its
``--commit``, ``--hardware`` and ``--backend``).
"""

import json
import os
import sys
import time

import keras
import numpy as np

from cram_keras.experiments import named, rnn_spn
from cram_keras.experiments.experiment import Run
from cram_keras.experiments.run_dir import CHECKPOINT_DIR, load_config
from cram_keras.platform_info import describe
from cram_keras.studies.driver import StudyError
from cram_keras.training.checkpoint import (
    EpochCheckpoints,
    load_weights_without_optimizer,
)
from cram_keras.training.precision import dtype_policy_scope
from cram_keras.utils import read_json

PROTOCOL = (
    "paper: 60k/10k/10k sequences, d=2, batch 100, RMSprop 5e-4, two-stage "
    "clipping, released LR rule, early stopping patience 50 on validation "
    "per-digit error, up to 300 epochs, test at the best validation epoch"
)
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
# Fields a row's variant sets (they name its run directory).
ROW_FIELDS = ("model", "downsample")


def add_arguments(group):
    group.add_argument(
        "--schedule",
        default=None,
        help="first stage: model:epochs, in order (default: the configuration's "
        "SCHEDULE, rnn_spn:60,ffn_spn:20,conv:20); after it every row trains to "
        "the end of its protocol",
    )
    group.add_argument(
        "--report", action="store_true", help="only write the progress file"
    )
    group.add_argument(
        "--command",
        default=None,
        help="the campaign's command line, recorded by --report",
    )
    group.add_argument(
        "--hardware",
        default=None,
        help="the machine the runs trained on, recorded by --report (default: "
        "this machine's description)",
    )
    group.add_argument(
        "--backend",
        default=None,
        help="the Keras backend the runs trained with, recorded by --report "
        "(default: this process's)",
    )
    group.add_argument(
        "--note", default=None, help="a remark stored with the progress file"
    )
    group.add_argument(
        "--curves-figure",
        default=None,
        help="learning-curve figure written by --report ('' for none; default: "
        "the configuration's)",
    )
    group.add_argument(
        "--attention-figure",
        action="append",
        default=None,
        metavar="[ROW=]PATH",
        help="Fig. 3-style figure of a row's best weights so far, written by "
        "--report; ROW is a run directory's name (rnn_spn_d3, ffn_spn, ...; "
        "without it: rnn_spn); repeatable; '' for none (default: the "
        "configuration's, rnn_spn=assets/rnn_spn_attention.png)",
    )


def writes_output(study):
    """Only the report writes the result file: the rows' processes, one
    per row, share the runs folder and the result file's name."""
    return study.args.report


def run(study):
    if study.args.report:
        write_report(study)
        return 0
    for key in study.changes:
        if key in ROW_FIELDS:
            raise StudyError(
                f"--set {key}=...: {key} is set by the row (--variants names the "
                "rows; it names the run directory)."
            )
    rows = study.variants
    schedule = study.args.schedule
    if schedule is None:
        schedule = ",".join(
            f"{m}:{e}" for m, e in study.named.extra["SCHEDULE"].items()
        )
    configs = {row: study.config(row) for row in rows}  # every row checked first
    stages = [parse_schedule(schedule, configs), [(row, None) for row in rows]]
    print("campaign:", study.command, "commit", named.commit(), flush=True)
    for stage in stages:
        for row, epochs in stage:
            print(f"campaign: {row} to {epochs or 'the end'}", flush=True)
            rnn_spn.train_and_evaluate(
                configs[row],
                study.run_dir(row),
                stop_after_epochs=epochs,
                pause_hint="the campaign's next stage continues it.",
            )
    return 0


def parse_schedule(text, configs):
    """``"rnn_spn:60,conv:20"`` -> ``[(row, 60), ...]``: every row of
    ``configs`` whose model is named, in the schedule's order."""
    models = sorted({c.model for c in configs.values()}, key=MODELS.index)
    stage = []
    for item in text.split(","):
        model, _, epochs = item.partition(":")
        if model not in MODELS or not epochs.isdigit() or int(epochs) < 1:
            raise StudyError(
                f"--schedule takes model:epochs items with models from {models} and "
                f"positive epochs. Received: {item!r}"
            )
        stage += [(row, int(epochs)) for row, c in configs.items() if c.model == model]
    return stage


def attention_figures(study):
    """``{row: path}`` of the Fig. 3 figures: the configuration's, or those
    of ``--attention-figure`` (``[ROW=]PATH``; an empty PATH drops ROW)."""
    values = study.args.attention_figure
    if values is None:
        return dict(study.figure("attention") or {})
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


def paper_error(model, downsample):
    return PAPER_TABLE_1.get((model, None if model == "conv" else float(downsample)))


def row_key(model, downsample=2.0, seed=0):
    """A run directory's name and its row's key: the model for the d = 2
    rows (and the CNN), ``<model>_d<d>`` for the other factors; a seed other
    than 0 adds ``_seed<N>``."""
    if model == "conv" or float(downsample) == 2.0:
        key = model
    else:
        key = f"{model}_d{float(downsample):g}"
    return f"{key}_seed{seed}" if seed else key


def split_seed(key):
    """``(row, seed)`` of a run directory's name: ``rnn_spn_seed1`` ->
    ``("rnn_spn", 1)``, ``ffn_spn_d3`` -> ``("ffn_spn_d3", 0)``."""
    row, sep, seed = key.rpartition("_seed")
    if sep and seed.isdigit():
        return row, int(seed)
    return key, 0


def row_name(model, downsample):
    if model == "conv":
        return NAMES[model]
    return f"{NAMES[model]}, d = {float(downsample):g}"


def report_model(run_dir, data_cache, attention_path=None):
    """Progress of one run directory, with the test error of the best
    validation epoch so far (evaluated here); with `attention_path`, also
    the Fig. 3-style attention figure of the best weights so far."""
    checkpoints = EpochCheckpoints(os.path.join(run_dir, CHECKPOINT_DIR))
    # The run's state is its newest record that parses (the whole per-epoch
    # log), whatever weights files are here: the report needs only the best
    # weights of that record, and an older record would report an older
    # state of the run.
    record = checkpoints.newest_record()
    if record is None:
        return None
    if checkpoints.latest(log=lambda _: None) is None:
        # No record with intact weights: a run brought back from another
        # machine with its logs only.
        print(f"{run_dir}: no weights here; reporting its per-epoch log only")
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
        "seed": config.seed,
        "paper_per_digit_error": paper_error(config.model, config.downsample),
        "settings": named.recorded_settings(config),
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
    problem = checkpoints.check_file(record, "best_weights") if best else None
    if problem:
        # Weights not kept (e.g. a run brought back from another machine
        # with its logs only) or damaged: a finished run's metrics.json holds
        # the test errors the runner measured after restoring the best
        # weights; an unfinished one has no test error to report.
        source = "test errors from metrics.json" if metrics else "no test error"
        state = "not here" if not os.path.isfile(best_path) else f"unusable ({problem})"
        print(f"{run_dir}: {best} {state}; {source}")
        best_path = None
    if best_path is None and metrics is not None:
        entry["test_per_digit_error_at_best"] = metrics["test_per_digit_error"]
        entry["test_sequence_error_at_best"] = metrics["test_sequence_error"]
    elif best_path:
        run = Run(run_dir, config)
        key = (config.data_dir, config.n_train, config.data_seed)
        if key not in data_cache:
            data_cache[key] = rnn_spn.EXPERIMENT.load_data(run)
        run.data = data = data_cache[key]
        with dtype_policy_scope(config):
            model = rnn_spn.EXPERIMENT.build_model(run)
        load_weights_without_optimizer(model, best_path)
        test = rnn_spn.EXPERIMENT.dataset(run, "test")
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


def write_report(study):
    args = study.args
    output = study.output
    previous = read_json(output) if os.path.exists(output) else {}
    results = {
        "protocol": PROTOCOL,
        "command": args.command
        or f"python run_study.py {study.name} --data-dir DIR --runs-dir "
        f"{study.runs_dir}",
        "commit": args.commit or previous.get("commit") or named.commit(),
        "hardware": args.hardware or describe(),
        "backend": args.backend or keras.backend.backend(),
        "date": time.strftime("%Y-%m-%d", time.gmtime()),
        "models": {},
        "lost_runs": list(previous.get("lost_runs", [])),
    }
    if args.note:
        results["note"] = args.note
    cache = {}
    figures = attention_figures(study)
    runs_dir = study.runs_dir
    found = (
        sorted(
            name
            for name in os.listdir(runs_dir)
            if os.path.exists(os.path.join(runs_dir, name, "config.json"))
        )
        if os.path.isdir(runs_dir)
        else []
    )
    if args.variants:
        # Only these rows are reported again (e.g. one campaign's, trained at
        # its own commit), with their runs of other seeds; every other row
        # keeps its committed values.
        found = [name for name in found if split_seed(name)[0] in study.variants]
    keys = list(dict.fromkeys(list(previous.get("models", {})) + found))
    for key in sorted(keys, key=_row_order):
        run_dir = os.path.join(runs_dir, key)
        attention = figures.get(key)
        entry = report_model(run_dir, cache, attention) if key in found else None
        if entry is not None:
            # Rows of one file may have trained on different machines and
            # commits: each row records its own.
            entry["hardware"] = results["hardware"]
            entry["backend"] = results["backend"]
            entry["commit"] = results["commit"]
            entry["date"] = results["date"]
            variant, _ = split_seed(key)
            entry["configuration"] = f"{study.name}:{variant}"
            if variant not in study.named.variants:
                print(f"{run_dir}: not a variant of {study.name}", file=sys.stderr)
        old = previous.get("models", {}).get(key)
        if old is not None and "date" not in old and "date" in previous:
            # A row kept from an earlier report carries that report's date.
            old = dict(old, date=previous["date"])
        if entry is None:
            if old is not None:
                results["models"][key] = old
            continue
        if old is not None and old.get("epochs_done", 0) > entry["epochs_done"]:
            # The directory was restarted on a fresh machine: keep the lost curve.
            results["lost_runs"].append(dict(old, model=key))
        results["models"][key] = entry
    rows = [split_seed(k)[0] for k in results["models"]]
    results["variants"] = {
        k: study.named.variants[k]
        for k in dict.fromkeys(rows)
        if k in study.named.variants
    }
    study.write(results)
    curves = (
        study.figure("curves") if args.curves_figure is None else args.curves_figure
    )
    if curves:
        learning_curves_figure(results, curves, reference_curves(study))
    print(json.dumps(results["models"], indent=1)[:4000])
    print(markdown_table(results))


def _row_order(key):
    """Table 1's order: RNN-SPN d = 1..4, FFN-SPN d = 1..4, the CNN; a
    row's seeds in order after it."""
    row, seed = split_seed(key)
    model, _, d = row.partition("_d")
    if model not in MODELS:
        model, d = row, ""
    index = MODELS.index(model) if model in MODELS else len(MODELS)
    return (index, float(d or 2), row, seed)


def _key_model(key):
    """(model, d) of a row key (``rnn_spn``, ``ffn_spn_d3``, ``conv``,
    ``rnn_spn_seed1``)."""
    model, _, d = split_seed(key)[0].partition("_d")
    return model, (None if model == "conv" else float(d or 2))


def _key_name(key):
    """The row's name in the tables, with its seed where it is not 0."""
    model, d = _key_model(key)
    seed = split_seed(key)[1]
    return row_name(model, d or 2.0) + (f", seed {seed}" if seed else "")


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
    keys = sorted(set(table_rows()) | set(results["models"]), key=_row_order)
    for key in keys:
        model, d = _key_model(key)
        entry = results["models"].get(key)
        error = paper_error(model, d or 2.0)
        paper = f"{error * 100:.1f} %" if error is not None else ""
        name = _key_name(key)
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


def reference_curves(study):
    """The runs a configuration's figure compares against (its
    ``REFERENCE_RUNS``: ``{label: [result file, row key]}``, e.g. the
    float32 row beside its mixed_bfloat16 rerun): ``{label: per-epoch
    validation per-digit errors}``."""
    curves = {}
    for label, (name, key) in study.named.extra.get("REFERENCE_RUNS", {}).items():
        with open(os.path.join(named.REPO, "benchmarks", "results", name)) as f:
            curves[label] = json.load(f)["models"][key]["valid_per_digit_error"]
    return curves


def learning_curves_figure(results, path, references=None):
    """Validation per-digit error against epoch (log scale) for every model,
    with the paper's Table 1 test errors as horizontal lines, and the
    ``references`` (``{label: per-epoch errors}``) in grey."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for index, key in enumerate(sorted(results["models"], key=_row_order)):
        entry = results["models"][key]
        model, d = _key_model(key)
        name = _key_name(key)
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
        if paper is not None and not split_seed(key)[1]:
            ax.axhline(
                paper * 100,
                color=colour,
                linestyle="--",
                linewidth=1,
                label=f"{name} paper test error {paper * 100:.1f} %",
            )
    for label, errors in (references or {}).items():
        errors = np.asarray(errors) * 100
        ax.plot(
            np.arange(1, len(errors) + 1),
            errors,
            color="0.5",
            linewidth=1,
            label=f"{label} (validation; {len(errors)} epochs)",
        )
    ax.set_yscale("log")
    ax.set_xlabel("epoch (60k training sequences each)")
    ax.set_ylabel("per-digit error (%)")
    import textwrap

    machine = f"{results.get('hardware', '')} ({results.get('backend', 'tensorflow')})"
    policy = (results.get("settings") or {}).get("dtype_policy") or "float32"
    ax.set_title(
        "RNN-SPN Table 1: validation per-digit error"
        + ("" if policy == "float32" else f", {policy}")
        + "\n"
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
