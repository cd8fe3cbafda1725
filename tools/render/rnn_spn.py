"""The RNN-SPN tables: the paper's Table 1 against ours, the runs behind it,
the GRU initialisation check and the shipped trained models."""

import json
import os
import re
import shlex
import statistics

from .cells import duration, minutes, paragraphs, pct, table, whole
from .sources import (
    REPO,
    backend_name,
    clean_command,
    hardware,
    link,
    load,
    result_exists,
    result_link,
    sourced,
)

# RNN-SPN Table 1 as printed in the paper (per-digit test error, %): these
# are the paper's numbers, not ours; the d = 2 rows are also recorded in the
# result files (`paper_per_digit_error`).
PAPER_TABLE_1 = {
    ("rnn_spn", 1): 1.8,
    ("rnn_spn", 2): 1.5,
    ("rnn_spn", 3): 1.8,
    ("rnn_spn", 4): 2.3,
    ("ffn_spn", 1): 4.4,
    ("ffn_spn", 2): 2.0,
    ("ffn_spn", 3): 2.9,
    ("ffn_spn", 4): 5.3,
    ("conv", None): 2.9,
}
MODEL_NAMES = {"rnn_spn": "RNN-SPN", "ffn_spn": "FFN-SPN", "conv": "CNN"}

# The trained models shipped with the package: one manifest `NAME.json` each
# (written by tools/ship_weights.py). Read from this repository, and linked
# relative to it, whatever REPO is set to.
WEIGHTS = REPO / "cram_keras" / "weights"
WEIGHTS_LINK = "cram_keras/weights"

# The columns of a run's row, before those of its table.
RUN_HEADER = [
    "model",
    "paper: per-digit test error",
    "ours: per-digit test error",
    "ours: sequence test error",
    "epochs (best)",
    "training time",
    "train sequences/s",
]


def row_key(model, d):
    """The result files' key of a Table 1 row: `rnn_spn` (d = 2, and the CNN),
    `rnn_spn_d3` for the other factors."""
    return model if d in (2, None) else f"{model}_d{d}"


def split_key(key):
    """``(model, d, seed)`` of a result file's key: ``rnn_spn`` -> (rnn_spn,
    2, 0), ``ffn_spn_d3`` -> (ffn_spn, 3, 0), ``rnn_spn_seed1`` -> (rnn_spn,
    2, 1); d is None for the CNN."""
    match = re.fullmatch(r"(rnn_spn|ffn_spn|conv)(?:_d(\d+))?(?:_seed(\d+))?", key)
    model = match.group(1)
    d = None if model == "conv" else int(match.group(2) or 2)
    return model, d, int(match.group(3) or 0)


def row_label(key):
    model, d, seed = split_key(key)
    label = MODEL_NAMES[model] + ("" if model == "conv" else f", d = {d}")
    return label + (f", seed {seed}" if seed else "")


def table1_runs(result):
    """``(key, run)`` of each model of a result file, in Table 1's order, a
    row's runs of other seeds after it."""
    rows = [row_key(m, d) for m, d in PAPER_TABLE_1]

    def order(key):
        model, d, seed = split_key(key)
        base = row_key(model, d)
        return (rows.index(base) if base in rows else len(rows), seed, key)

    keys = sorted(result["models"], key=order)
    return [(key, result["models"][key]) for key in keys]


def _state(run, unfinished):
    if run["stopped_early"]:
        return "early-stopped"
    return "finished" if run["finished"] else unfinished


def _run_cells(key, run, time):
    return [
        row_label(key),
        pct(run["paper_per_digit_error"]),
        pct(run["test_per_digit_error_at_best"], 2),
        pct(run["test_sequence_error_at_best"], 1),
        f"{run['epochs_done']} ({run['best_epoch']})",
        time(run["train_wall_seconds"]),
        whole(run["train_sequences_per_second"]),
    ]


@sourced("rnn_spn_paper_gpu.json")
def rnn_spn_gpu(result):
    rows = [
        [*_run_cells(key, run, minutes), _state(run, "running")]
        for key, run in table1_runs(result)
    ]
    header = [*RUN_HEADER, "state"]
    return table(header, rows)


# Table 1 with the dropout its family's search chose on the validation set
# (configuration rnn_spn/table1_tuned); absent until its first report.
TUNED = "rnn_spn_table1.json"


def dropout_label(run):
    """``dropout 0.2 at the paper's positions`` (``dropout 0`` without)."""
    if not run.get("dropout"):
        return "dropout 0"
    return f"dropout {run['dropout']:g} at {PLACEMENTS[run['dropout_placement']]} positions"


def _mean_of_finished(found):
    """``2.10 % (seeds 0, 1)``: the mean test error over the finished runs
    of ``{seed: run}``, when more than one has finished; else ``""``."""
    finished = {
        seed: run["test_per_digit_error_at_best"]
        for seed, run in found.items()
        if run["finished"]
    }
    if len(finished) < 2:
        return ""
    mean = sum(finished.values()) / len(finished)
    return f"{pct(mean, 2)} (seeds {', '.join(map(str, sorted(finished)))})"


def rnn_spn_table1(base):
    """Every row of the paper's Table 1, with ours where it has been run."""
    gpu = load("rnn_spn_paper_gpu.json")["models"]
    cpu = load("rnn_spn_paper.json")["models"]
    tuned = load(TUNED)["models"] if result_exists(TUNED) else None

    def seeds(runs, model, d):
        """{seed: run} of one row in one result file."""
        return {
            split_key(key)[2]: run
            for key, run in runs.items()
            if split_key(key)[:2] == (model, d)
        }

    def cell(found, several, setting=False):
        if not found:
            return "not run"
        parts = []
        for seed, run in sorted(found.items()):
            text = pct(run["test_per_digit_error_at_best"], 2)
            notes = [dropout_label(run)] if setting else []
            if several:
                notes.append(f"seed {seed}")
            if not run["finished"]:
                notes.append(f"after {run['epochs_done']} epochs; not finished")
            parts.append(text + "".join(f" ({note})" for note in notes))
        return "; ".join(parts)

    rows = []
    for (model, d), paper in PAPER_TABLE_1.items():
        on_gpu, on_cpu = seeds(gpu, model, d), seeds(cpu, model, d)
        several = len(set(on_gpu) | set(on_cpu)) > 1
        # The mean over seeds of finished runs, one run per seed (the GPU's
        # where both ran it).
        row = [
            row_label(row_key(model, d)),
            f"{paper:.1f} %",
            cell(on_gpu, several),
            cell(on_cpu, several),
            _mean_of_finished({**on_cpu, **on_gpu}),
        ]
        if tuned is not None:
            chosen = seeds(tuned, model, d)
            found = cell(chosen, len(chosen) > 1, setting=True)
            mean = _mean_of_finished(chosen)
            row.append(found + (f"; mean {mean}" if mean else ""))
        rows.append(row)
    header = [
        "model",
        "paper",
        "ours, dropout 0: one GPU, JAX",
        "ours, dropout 0: CPU, TensorFlow",
        "ours, dropout 0: mean over seeds",
    ]
    sources = [
        result_link("rnn_spn_paper_gpu.json", base),
        result_link("rnn_spn_paper.json", base),
    ]
    columns = "dropout 0 is the released code's default"
    if tuned is not None:
        header.append("ours: dropout chosen on the validation set")
        sources.append(result_link(TUNED, base))
        columns += (
            "; the last column trains as the paper did, with the dropout rate and "
            "placement that the row's search chose on the validation set"
        )
    return paragraphs(
        table(header, rows),
        f"Per-digit test error at the best validation epoch. Ours: "
        f"{', '.join(sources[:-1])} and {sources[-1]} (details below); {columns}. "
        "A row run with more than one seed gives each seed's error, and the mean "
        "over the seeds whose runs have finished.",
    )


def _cpu_runs(result, setting=False):
    """A row per run of a CPU campaign's result file: its errors, times,
    window areas, hardware and state (with ``setting``: its dropout)."""
    rows = []
    for key, run in table1_runs(result):
        areas = ", ".join(f"{area:.2f}" for area in run.get("window_area_per_step", []))
        stopped = (
            f"stopped after {run['epochs_done']} of up to 300 epochs; rerun to continue"
        )
        cells = _run_cells(key, run, duration)
        if setting:
            cells.insert(1, dropout_label(run))
        rows.append(
            [
                *cells,
                areas,
                hardware(run) if run.get("hardware") else hardware(result),
                _state(run, stopped),
            ]
        )
    header = [
        *RUN_HEADER,
        "window area per step (fraction of the image)",
        "hardware",
        "state",
    ]
    if setting:
        header.insert(1, "dropout")
    return table(header, rows)


@sourced("rnn_spn_paper.json")
def rnn_spn_cpu(result):
    return _cpu_runs(result)


@sourced(TUNED)
def rnn_spn_tuned(result):
    return _cpu_runs(result, setting=True)


# The result files whose RNN-SPN and FFN-SPN runs record their window areas.
ZOOM_SOURCES = (
    "rnn_spn_paper.json",
    "rnn_spn_paper_bf16.json",
    "rnn_spn_paper_gpu.json",
)


def rnn_spn_zoom(base):
    """The zoom against d: every run that measured its windows' areas (the
    mean area of each step's window as a fraction of the image, on the test
    set), and per model whether the mean area over the finished runs falls
    as d grows, as the paper says."""
    rows, finished = [], {}
    for name in ZOOM_SOURCES:
        if not result_exists(name):
            continue
        result = load(name)
        policy = result.get("settings", {}).get("dtype_policy", "float32")
        for key, run in table1_runs(result):
            areas = run.get("window_area_per_step")
            if not areas:
                continue
            model, d, _ = split_key(key)
            done = run["finished"]
            mean = sum(areas) / len(areas)
            if done:
                finished.setdefault(model, {}).setdefault(d, []).append(mean)
            state = (
                _state(run, "")
                if done
                else f"training: after {run['epochs_done']} epochs, not counted"
            )
            rows.append(
                [
                    row_label(key),
                    policy,
                    f"{mean:.2f}",
                    ", ".join(f"{a:.2f}" for a in areas),
                    state,
                    result_link(name, base),
                ]
            )
    if not rows:
        return "No run has measured its windows yet."
    header = [
        "model",
        "precision",
        "mean window area (fraction of the image)",
        "per step",
        "state",
        "result file",
    ]
    return paragraphs(
        table(header, rows), *map(_zoom_verdict, sorted(finished.items()))
    )


def _zoom_verdict(item):
    """One sentence per model: whether its mean window area falls as d grows,
    over the factors with a finished run (the mean over their runs)."""
    model, by_d = item
    means = {d: sum(v) / len(v) for d, v in sorted(by_d.items())}
    listed_means = "; ".join(f"d = {d}: {m:.2f}" for d, m in means.items())
    name = MODEL_NAMES[model]
    if len(means) < 2:
        (d,) = means
        return (
            f"{name}: only d = {d} has a finished run ({listed_means}); whether "
            "the windows shrink as d grows needs a second factor."
        )
    values = list(means.values())
    falls = all(b < a for a, b in zip(values, values[1:], strict=False))
    verdict = (
        "falls at every step of d: over these factors the paper's claim holds "
        "(a larger d makes the model zoom in)"
        if falls
        else "does not fall at every step of d: over these factors the paper's "
        "claim (a larger d makes the model zoom in) does not hold"
    )
    return f"{name}, finished runs ({listed_means}): the mean window area {verdict}."


@sourced("rnn_spn_init.json")
def rnn_spn_init(result):
    rows = []
    for run in result["runs"].values():
        rows.append(
            [
                f"{run['gru_initializer']}, seed {run['seed']}",
                *[pct(v) for v in run["valid_per_digit_error_per_epoch"]],
                run["first_epoch_below_50"] or "-",
                run["first_epoch_below_20"] or "-",
                pct(run["test_per_digit_error"]),
            ]
        )
    header = [
        "GRU initialisation",
        *[f"epoch {e + 1}" for e in range(result["epochs"])],
        "first epoch below 50 %",
        "first epoch below 20 %",
        "test per-digit error",
    ]
    return table(header, rows)


def _shipped_row(m, path, base):
    """A shipped model's row, from its manifest ``m`` at ``path``."""
    d = m.get("downsample")
    model = m["model"]
    key = model if model == "conv" else f"{model}_d{d:g}"
    paper = PAPER_TABLE_1.get((model, None if model == "conv" else int(d)))
    if m["status"] == "finished":
        state = f"finished: {m['epochs_trained']} epochs, best {m['best_epoch']}"
    else:
        state = (
            f"in progress: {m['epochs_trained']} of up to {m['max_epochs']} "
            f"epochs, best {m['best_epoch']}"
        )
    target = os.path.relpath(f"{WEIGHTS_LINK}/{path.name}", str(base))
    stored = f"{m['storage_dtype']}, {m['files']['weights']['bytes'] / 1e6:.1f} MB"
    check = m.get("storage_check") or {}
    if m["storage_dtype"] != "float32" and "float32_test_per_digit_error" in check:
        stored += (
            f" (float32 weights: {pct(check['float32_test_per_digit_error'], 2)} "
            "per-digit test error)"
        )
    return [
        f"`{m['name']}`",
        row_label(key),
        "-" if paper is None else f"{paper:.1f} %",
        pct(m["test_per_digit_error"], 2),
        pct(m["test_sequence_error"], 2),
        pct(m["valid_per_digit_error_at_best"], 2),
        state,
        stored,
        link(path.name, target.replace(os.sep, "/")),
    ]


def _shipped_command(m):
    """What a shipped model was tested on and the command that trained it."""
    test = m["test_set"]
    digits = {"idx": "the official MNIST test digits"}.get(
        test["origin"], f"MNIST test digits ({test['origin']})"
    )
    return (
        f"`{m['name']}`: {test['sequences']:,} test sequences generated from "
        f"{digits}; trained by `{clean_command(m['training_command'])}` "
        f"({hardware(m)}, {backend_name(m['backend'])})"
    )


def shipped_weights(base):
    """The trained models in cram_keras/weights, from their manifests."""
    rows, commands = [], []
    for path in sorted(WEIGHTS.glob("*.json")):
        with open(path, encoding="utf-8") as f:
            manifest = json.load(f)
        rows.append(_shipped_row(manifest, path, base))
        commands.append(_shipped_command(manifest))
    if not rows:
        return "No trained model is shipped."
    header = [
        "name",
        "model",
        "paper: per-digit test error",
        "per-digit test error",
        "sequence test error",
        "validation per-digit error",
        "training",
        "stored as",
        "manifest",
    ]
    return paragraphs(
        table(header, rows),
        "Errors of the shipped weights (those of the best validation epoch), "
        "measured when they were shipped. " + "; ".join(commands) + ".",
    )


PLACEMENTS = {
    None: "-",
    "code": "the released code's",
    "paper": "the paper's",
}


@sourced("rnn_spn_dropout_search_cpu.json")
def rnn_spn_search_cpu(result):
    """The CPU dropout search so far: every trial of its grid, done or not,
    and the choice once every trial is done."""
    epochs = result["epochs_per_trial"]
    parts = []
    for model, grid in result["grid"].items():
        entry = result["models"][model]
        done = {t["name"]: t for t in entry["trials"]}
        rows = []
        for name in grid["trials"]:
            trial = done.get(name)
            if trial is None:
                placement, rate = _grid_point(name)
                rows.append([name, placement, rate, "-", "-", "-", "-", "not done yet"])
                continue
            epoch_seconds = trial.get("epoch_seconds")
            finished = trial["epochs_done"] >= epochs
            rows.append(
                [
                    name,
                    PLACEMENTS[trial["dropout_placement"]],
                    f"{trial['dropout']:g}",
                    pct(trial["best_valid_per_digit_error"], 2),
                    f"{trial['epochs_done']} ({trial['best_epoch']})",
                    duration(trial["train_seconds"]),
                    f"{statistics.median(epoch_seconds):.0f} s"
                    if epoch_seconds
                    else "-",
                    "done"
                    if finished
                    else f"{trial['epochs_done']} of {epochs} epochs",
                ]
            )
        header = [
            "trial",
            "dropout placement",
            "dropout rate",
            "best validation per-digit error",
            "epochs (best)",
            "training time (wall clock)",
            "median epoch (training)",
            "state",
        ]
        finished = sum(1 for t in entry["trials"] if t["epochs_done"] >= epochs)
        policy = result.get("settings", {}).get("dtype_policy", "float32")
        summary = (
            f"{MODEL_NAMES[model]}: {finished} of {len(grid['trials'])} trials "
            f"done, each {epochs} epochs under `{policy}` on the validation set."
        )
        summary += (
            " Training times are wall-clock time, with whatever else the machine "
            "ran meanwhile (a trial that trained beside other work, or paused, "
            "took longer than it needed). The median epoch's training time "
            "(validation excluded) leaves out the epochs that a pause "
            "stretched; it is the machine's own speed only where the trial ran "
            "alone for most of its epochs."
        )
        chosen = entry.get("chosen")
        if chosen:
            summary += (
                f" Chosen: {chosen['trial']} ({dropout_label(chosen)}); the full "
                f"protocol: `{clean_command(chosen['train_command'])}`."
            )
        else:
            summary += (
                f" Rerun to continue: `{_search_command(result['command'])}`. The "
                "choice waits for the remaining trials."
            )
        parts += [table(header, rows), summary]
    return paragraphs(*parts)


def _grid_point(name):
    """The placement and rate cells of a grid trial from its name
    (``p0_d2``, ``code_p0.1_d2``)."""
    placement, _, rest = name.rpartition("_p") if "_p" in name else ("", "", name[1:])
    rate = rest.split("_")[0]
    return PLACEMENTS[placement or None], rate


def _search_command(command):
    """The search's recorded command as a user reruns it to continue: the
    MNIST folder as MNIST_DIR, the run, cache and output locations (this
    machine's) left to their defaults, without ``--report`` (which only
    writes the result file)."""
    words, kept = shlex.split(command), []
    while words:
        word = words.pop(0)
        if word == "--report":
            continue
        if word in ("--cache-dir", "--runs-dir", "--output"):
            words.pop(0)
        elif word == "--data-dir":
            kept += [word, "MNIST_DIR"]
            words.pop(0)
        else:
            kept.append(word)
    return shlex.join(kept)
