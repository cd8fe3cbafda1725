"""The README's headline table and the reproducing page's tables: every
configuration, every result file with its command, and the wall times."""

import pathlib
import re

from .cells import duration, listed, minutes, num, pct, table
from .cram_cls import CLUE_SHORT
from .rnn_spn import TUNED, dropout_label, row_key, row_label, split_key, table1_runs
from .sources import (
    backend_name,
    clean_command,
    configuration_header,
    configuration_link,
    hardware,
    link,
    load,
    relative,
    repo_path,
    result_date,
    result_exists,
    result_link,
    result_names,
    written_by,
)

# The inpainting budget runs of the headline: file, experiment, the paper's.
HEADLINE_INPAINTING = (
    ("inpaint_svhn1083.json", "CRAM inpainting, SVHN, 8x8 hole", "Fig. 7 only"),
    ("inpaint_mnist32.json", "CRAM inpainting, MNIST-32, 8x8 hole", "not in the paper"),
)
WALL_TIME_INPAINTING = (
    ("inpaint_svhn1083.json", "inpainting budget, SVHN subset"),
    ("inpaint_mnist32.json", "inpainting budget, MNIST 32x32"),
    ("inpaint_study_mnist32.json", "inpainting study, MNIST 32x32"),
)


def short_hardware(name, result):
    """'1 x NVIDIA H200, JAX' or 'AMD EPYC ..., 2 cores, TensorFlow'."""
    text = hardware(result)
    gpu = re.search(r"\d+ x NVIDIA [\w-]+", text)
    backend = backend_name((result.get("backend") or "tensorflow").split(" ")[0])
    where = gpu.group(0) if gpu else text.replace(", no GPU", "")
    return f"{where}, {backend}, {result_date(name, result)}"


def _table1_row(name, key, run, setting, base):
    return [
        f"RNN-SPN Table 1: {row_label(key)}",
        "per-digit test error",
        pct(run["paper_per_digit_error"]),
        pct(run["test_per_digit_error_at_best"], 2),
        setting,
        result_link(name, base),
    ]


def _table1_rows(base):
    """Table 1 on the GPU, then the finished rows that ran on the CPU only."""
    name = "rnn_spn_paper_gpu.json"
    gpu = load(name)
    rows = []
    for key, run in table1_runs(gpu):
        flag = re.sub(r"_d\d+$", "", key)
        setting = (
            f"paper protocol, `--model {flag}`, early-stopped at epoch "
            f"{run['epochs_done']}; {short_hardware(name, gpu)}"
        )
        rows.append(_table1_row(name, key, run, setting, base))
    name = "rnn_spn_paper.json"
    cpu = load(name)
    for key, run in table1_runs(cpu):
        # The runs the GPU file does not hold, once they have finished (the
        # results page lists the others as far as they have got).
        if key in gpu["models"] or not (run["finished"] or run["stopped_early"]):
            continue
        model, d, seed = split_key(key)
        flags = f"--model {model}"
        if d not in (2, None):
            flags += f" --downsample {d}"
        if seed:
            flags += f" --seed {seed}"
        state = (
            f"early-stopped at epoch {run['epochs_done']}"
            if run["stopped_early"]
            else f"all {run['epochs_done']} epochs"
        )
        setting = (
            f"paper protocol, `{flags}`, {state}; "
            f"{short_hardware(name, dict(cpu, **run))}"
        )
        rows.append(_table1_row(name, key, run, setting, base))
    return rows + _tuned_rows(base)


def _tuned_rows(base):
    """The rows trained with the dropout their search chose, also while
    they train (the paper's way of training, not yet finished anywhere)."""
    name = TUNED
    if not result_exists(name):
        return []
    tuned = load(name)
    rows = []
    for key, run in table1_runs(tuned):
        model, d, seed = split_key(key)
        flags = f"--config table1_tuned:{row_key(model, d)}" + (
            f" --seed {seed}" if seed else ""
        )
        if run["stopped_early"]:
            state = f"early-stopped at epoch {run['epochs_done']}"
        elif run["finished"]:
            state = f"all {run['epochs_done']} epochs"
        else:
            state = (
                f"in progress: epoch {run['epochs_done']} of up to 300, best "
                f"{run['best_epoch']}"
            )
        setting = (
            f"paper protocol, {dropout_label(run)} (chosen on the validation set), "
            f"`{flags}`, {state}; {short_hardware(name, dict(tuned, **run))}"
        )
        row = _table1_row(name, key, run, setting, base)
        row[0] += ", dropout chosen on validation"
        rows.append(row)
    return rows


def _classification_rows(base):
    """A row per clue: the full setting where a run of it finished, else
    the CPU budget's (docs/results.md keeps both tables whole)."""
    full = _classification_full_rows(base)
    name = "cram_cls_budget.json"
    cls = load(name)
    ram = pct(cls["anchors"]["ram_8_glimpses_cluttered60"], 2)
    p = cls["protocol"]
    return [
        full[clue]
        if clue in full
        else [
            f"CRAM classification, 60x60 cluttered MNIST, {CLUE_SHORT[clue]}",
            "test error",
            f"not reported; RAM: {ram}" if clue == "oracle" else "not reported",
            pct(cls["runs"][clue]["test_error"]),
            f"CPU budget, `--clue {clue}`: {p['epochs']} epochs on {p['n_train']:,} images, "
            f"seeds {listed(p['seeds'])}; {short_hardware(name, cls)}",
            result_link(name, base),
        ]
        for clue in CLUE_SHORT
    ]


def _classification_full_rows(base):
    """The script's full setting: a row per clue with a finished run (the
    mean over its finished seeds, each seed's error beside it), by clue."""
    name = "cram_cls_full.json"
    if not result_exists(name):
        return {}
    full = load(name)
    rows = {}
    for clue in CLUE_SHORT:
        runs = {
            seed: run
            for seed, run in sorted(full.get("progress", {}).get(clue, {}).items())
            if run["finished"]
        }
        if not runs:
            continue
        errors = [run["test_error"] for run in runs.values()]
        per_seed = "; ".join(
            f"seed {seed}: {pct(run['test_error'], 2)}, {run['epochs_done']} epochs, "
            f"best {run['best_valid_epoch']}"
            for seed, run in runs.items()
        )
        mean = pct(sum(errors) / len(errors), 2)
        if len(errors) > 1:
            mean += f" (mean of {len(errors)} seeds)"
        rows[clue] = [
            f"CRAM classification, 60x60 cluttered MNIST, {CLUE_SHORT[clue]}, "
            "full setting",
            "test error",
            "not reported; RAM: "
            f"{pct(full['anchors']['ram_8_glimpses_cluttered60'], 2)}"
            if clue == "oracle"
            else "not reported",
            mean,
            f"`--clue {clue}`, all {full['protocol']['n_train']:,} images, at most "
            f"{full['protocol']['epochs']} epochs with early stopping ({per_seed}); "
            f"{short_hardware(name, full)}",
            result_link(name, base),
        ]
    return rows


def _inpainting_rows(base):
    rows = []
    for name, label, paper in HEADLINE_INPAINTING:
        result = load(name)
        m = result["methods"]
        rows.append(
            [
                label,
                "hole PSNR",
                paper,
                f"{num(m['cram']['hole_psnr'])} dB (CNN encoder {num(m['cnn_encoder']['hole_psnr'])}, "
                f"Navier-Stokes {num(m['navier_stokes']['hole_psnr'])})",
                f"CPU budget: {result['epochs']} epochs on {result['n_train']:,} images, seed "
                f"{listed(result['seeds'])}; {short_hardware(name, result)}",
                result_link(name, base),
            ]
        )
    name = "inpaint_full_mnist32.json"
    full = load(name)
    cram, cnn = (full["runs"].get(v, {}).get("0") for v in ("cram", "cnn_encoder"))
    if cram and cnn:
        epochs = min(cram["epochs"][-1], cnn["epochs"][-1])
        rows.append(
            [
                "CRAM inpainting, MNIST-32, 8x8 hole, full budget",
                "validation hole PSNR",
                "not in the paper",
                f"{num(cram['val_hole_psnr'][epochs - 1])} dB (CNN encoder "
                f"{num(cnn['val_hole_psnr'][epochs - 1])}) after epoch {epochs}",
                f"paper settings, 60,000 images, seed 0, {full['status']['cram']['0']}; "
                f"{short_hardware(name, full)}",
                result_link(name, base),
            ]
        )
    return rows + _converge_rows(base) + _tune_rows(base)


def _converge_rows(base):
    """The SVHN subset trained until validation stops improving: the test
    scores once both runs stopped, else the best held-out score so far."""
    name = "inpaint_converge_svhn1083.json"
    if not result_exists(name):
        return []
    result = load(name)
    label = "CRAM inpainting, SVHN, 8x8 hole, until validation stops improving"
    setting = "`--patience 50` on 795 of the 883 images, seed 0"
    if "methods" in result:
        m = result["methods"]
        runs = result["runs"]
        epochs = ", ".join(
            # best_epoch: 0-based in the run's metrics.
            f"{who} {runs[v]['0']['epochs']} ({runs[v]['0']['best_epoch'] + 1})"
            for v, who in (("cram", "CRAM"), ("cnn_encoder", "CNN encoder"))
        )
        return [
            [
                label,
                "hole PSNR",
                "Fig. 7 only",
                f"{num(m['cram']['hole_psnr'])} dB (CNN encoder "
                f"{num(m['cnn_encoder']['hole_psnr'])}, Navier-Stokes "
                f"{num(m['navier_stokes']['hole_psnr'])})",
                f"{setting}; epochs (best): {epochs}; {short_hardware(name, result)}",
                result_link(name, base),
            ]
        ]
    cram, cnn = (result["runs"].get(v, {}).get("0") for v in ("cram", "cnn_encoder"))
    if not (cram and cnn):
        return []
    return [
        [
            label,
            "held-out hole PSNR, best epoch so far",
            "Fig. 7 only",
            f"{num(max(cram['val_hole_psnr']))} dB (CNN encoder "
            f"{num(max(cnn['val_hole_psnr']))})",
            f"{setting}; in progress, best epoch of those done: CRAM "
            f"{cram['best_epoch']} of {cram['epochs'][-1]}, CNN encoder "
            f"{cnn['best_epoch']} of {cnn['epochs'][-1]}; {short_hardware(name, result)}",
            result_link(name, base),
        ]
    ]


def _tune_rows(base):
    """The glimpse count chosen by the search, once it and the defaults ran."""
    name = "inpaint_tune_svhn1083.json"
    result = load(name) if result_exists(name) else {}
    if "summary" not in result:
        return []
    search, default = result["runs"]["search"], result["runs"]["default"]
    chosen = search["values"]
    return [
        [
            "CRAM inpainting, SVHN, 8x8 hole, glimpses and rate chosen by `--tune`",
            "hole PSNR",
            "4 glimpses, not searched",
            f"{num(search['scores']['hole_psnr'])} dB with {chosen['glimpses']} "
            f"glimpses, Adam {chosen['learning_rate']:.1e} (defaults, "
            f"{default['values']['glimpses']} glimpses, Adam "
            f"{default['values']['learning_rate']:.0e}: "
            f"{num(default['scores']['hole_psnr'])})",
            f"{len(result['trials'])} trials of {result['epochs']} epochs on "
            f"{search['n_train']} images, chosen on {result['tune_valid_fraction']:.0%} "
            f"held out, seed 0; {short_hardware(name, result)}",
            result_link(name, base),
        ]
    ]


def headline(base):
    rows = _table1_rows(base) + _classification_rows(base) + _inpainting_rows(base)
    header = [
        "experiment",
        "metric",
        "paper",
        "ours",
        "setting; hardware, backend, date",
        "result file",
    ]
    return table(header, rows)


def _wall_time_row(key, run, where, time, per_epoch):
    return [
        f"Table 1 protocol, {row_label(key)}",
        where,
        f"{run['epochs_done']} epochs",
        time(run["train_wall_seconds"]),
        per_epoch(run["train_wall_seconds"] / run["epochs_done"]),
    ]


def wall_times(base):
    """What the committed runs took, as a guide to what a rerun takes."""
    rows = [
        _wall_time_row(
            key,
            run,
            "one NVIDIA H200, JAX (three models at once)",
            minutes,
            lambda seconds: f"{seconds:.1f} s",
        )
        for key, run in table1_runs(load("rnn_spn_paper_gpu.json"))
    ]
    cpu = load("rnn_spn_paper.json")
    rows += [
        _wall_time_row(
            key,
            run,
            hardware(cpu) + ", TensorFlow",
            duration,
            lambda seconds: f"{seconds / 60:.1f} min",
        )
        for key, run in table1_runs(cpu)
    ]
    cls = load("cram_cls_budget.json")
    runs = len(cls["runs"]) * len(cls["protocol"]["seeds"])
    rows.append(
        [
            "CRAM classification budget, all clues and seeds",
            hardware(cls) + ", TensorFlow",
            f"{runs} runs of {cls['protocol']['epochs']} epochs",
            duration(cls["total_wall_seconds"]),
            "",
        ]
    )
    for name, label in WALL_TIME_INPAINTING:
        r = load(name)
        runs = sum(len(v) for v in r["runs"].values())
        rows.append(
            [
                label,
                hardware(r) + ", TensorFlow",
                f"{runs} runs of {r['epochs']} epochs",
                duration(r["wall_seconds"]),
                "",
            ]
        )
    return table(["job", "hardware", "size", "wall time", "per epoch"], rows)


def commands(base):
    """Every committed result file with its configuration and the command
    that reproduces it."""
    lines = []
    for name in result_names():
        result = load(name)
        if "runs" in result and isinstance(result["runs"], list):  # sampler_speed.json
            run = result["runs"][-1]
            how, where = f"`{clean_command(run['command'])}`", hardware(run)
        else:
            how, where = written_by(name, result, base), hardware(result)
        lines.append(f"- {result_link(name, base)} ({where}):\n  {how}")
    return "\n".join(lines)


def configurations(base):
    """Every configuration: what it reproduces, its command, its result."""
    rows = []
    for path in sorted(repo_path("configs").glob("*/*.py")):
        name = f"{path.parent.name}/{path.stem}"
        header = configuration_header(name)
        output = header.get("output")
        if output and repo_path(output).exists():
            output = link(pathlib.Path(output).name, relative(repo_path(output), base))
        elif output:
            output = f"`{pathlib.Path(output).name}` (not run yet)"
        rows.append(
            [
                configuration_link(name, base),
                header["title"],
                f"`{header['Command']}`",
                output or "-",
            ]
        )
    return table(["configuration", "what it runs", "command", "result file"], rows)
