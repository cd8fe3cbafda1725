#!/usr/bin/env python
"""Render the results tables of README.md and docs/*.md from the result files.

Every table of measured numbers in the documentation sits between two
markers and is written by this script from `benchmarks/results/*.json`:

    <!-- render:NAME -->
    ... generated, do not edit by hand ...
    <!-- /render:NAME -->

    python tools/render_docs.py            # rewrite every block in place
    python tools/render_docs.py --check    # exit 1 if a block differs
    python tools/render_docs.py --list     # the block names and their files

One block, `shipped_weights`, reads the manifests of the trained models
shipped in `cram_keras/weights/` (`NAME.json`, written by
`tools/ship_weights.py`) instead.

Each results block ends with a source line: the result file, the named
configuration it came from (`configs/`) with the command that runs it (or,
for a speed benchmark, the command that wrote it), the hardware, the
backend and library versions, and the date. Commands are shown as a user runs them: local data folders become
`MNIST_DIR` (the folder with the four official MNIST IDX files), the
1,083-image SVHN subset is the copy bundled in the package, and options
that only named where a run directory or a note went are left out.

Standard library only (no TensorFlow), so the docs test runs it quickly.
"""

import argparse
import ast
import difflib
import json
import os
import pathlib
import re
import sys

REPO = pathlib.Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "results"

BLOCK = re.compile(
    r"(<!-- render:(?P<name>[a-z0-9_]+) -->\n)(?P<body>.*?)(<!-- /render:(?P=name) -->)",
    re.S,
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


def ordered(keys, order=tuple(MODEL_NAMES)):
    """Keys in the given order (the papers' table order), others after."""
    return sorted(keys, key=lambda k: order.index(k) if k in order else len(order))


def row_key(model, d):
    """The result files' key of a Table 1 row: `rnn_spn` (d = 2, and the CNN),
    `rnn_spn_d3` for the other factors."""
    return model if d in (2, None) else f"{model}_d{d}"


def row_label(key):
    match = re.fullmatch(r"(rnn_spn|ffn_spn|conv)(?:_d(\d+))?", key)
    model, d = match.group(1), match.group(2) or "2"
    return MODEL_NAMES[model] + ("" if model == "conv" else f", d = {d}")


def table1_order(keys):
    rows = [row_key(m, d) for m, d in PAPER_TABLE_1]
    return sorted(keys, key=lambda k: rows.index(k) if k in rows else len(rows))


# The date each result file was written, for the files whose script did not
# record one (the date of the commit that last wrote the file). Files that
# record a date (`date`, `started_utc`) use their own.
RESULT_DATES = {
    "bf16_check.json": "2026-12-04",
    "cram_cls_budget.json": "2026-12-04",
    "inpaint_mnist32.json": "2026-12-02",
    "inpaint_study_mnist32.json": "2026-12-01",
    "inpaint_svhn1083.json": "2026-12-01",
    "profile_steps.json": "2026-12-01",
    "rnn_spn_init.json": "2026-12-04",
    "rnn_spn_paper.json": "2026-12-04",
    "rnn_spn_paper_gpu.json": "2026-12-04",
    "rnn_spn_speed.json": "2026-12-01",
    "train_speed.json": "2026-12-04",
}

# Commands recorded in a form no user runs (several device calls and a resume
# on another machine): the command that reproduces the result.
COMMANDS = {
    "rnn_spn_paper_gpu.json": "OUT=DIR DATA_DIR=MNIST_DIR bash benchmarks/rnn_spn_paper_gpu.sh",
}

SVHN_SUBSET = "cram_keras/data/bundled/svhn_train_first1083_unlabeled.npz"

# The trained models shipped with the package: one manifest `NAME.json` each
# (written by tools/ship_weights.py). Read from this repository, and linked
# relative to it, whatever REPO is set to.
WEIGHTS = REPO / "cram_keras" / "weights"
WEIGHTS_LINK = "cram_keras/weights"


# --- formatting -------------------------------------------------------------


def load(name):
    with open(RESULTS / name, encoding="utf-8") as f:
        return json.load(f)


def pct(value, digits=1):
    return "-" if value is None else f"{100 * value:.{digits}f} %"


def num(value, digits=2):
    return "-" if value is None else f"{value:.{digits}f}"


def ratio(value):
    return "-" if value is None else f"{value:.2f}x"


def whole(value):
    return "-" if value is None else f"{value:,.0f}"


def minutes(seconds):
    return f"{seconds / 60:.0f} min"


def duration(seconds):
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def clean_command(command, name=None):
    """A recorded command as a user runs it (no machine-local paths)."""
    if name in COMMANDS:
        return COMMANDS[name]
    command = re.sub(r" --note .*$", "", command)  # free text, always last
    command = re.sub(r"--data-dir \S+", "--data-dir MNIST_DIR", command)
    command = re.sub(
        r"npz:\S*svhn_train_first1083_unlabeled\.npz", f"npz:{SVHN_SUBSET}", command
    )
    command = re.sub(r" --runs-dir /\S+", "", command)  # an absolute run folder
    command = re.sub(
        r"--output /\S+/([^/\s]+\.json)", r"--output benchmarks/results/\1", command
    )
    return command


def hardware(result):
    text = result.get("hardware") or result.get("machine", {}).get("description", "")
    flags = result.get("cpu_flags")
    if flags and "(" not in text.split(",")[0]:
        widest = (
            "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else None
        )
        if widest:
            text = text.replace(",", f" ({widest}),", 1)
    return text


def versions(result):
    found = dict(result.get("versions", {}))
    for key in ("tensorflow", "keras"):
        if isinstance(result.get(key), str):
            found.setdefault(key, result[key])
    parts = []
    for key, label in (
        ("tensorflow", "TensorFlow"),
        ("keras", "Keras"),
        ("torch", "torch"),
    ):
        if key in found:
            parts.append(f"{label} {found[key].split('+')[0]}")
    return ", ".join(parts)


def result_date(name, result):
    for key in ("date", "started_utc"):
        if isinstance(result.get(key), str):
            return result[key][:10]
    return RESULT_DATES[name]


def configuration_header(name):
    """The header of configuration ``name`` (its docstring, read without
    importing it): ``{"title": ..., "Command": ..., "Reproduces": ...}``."""
    path = REPO / "configs" / (name.partition(":")[0] + ".py")
    tree = ast.parse(path.read_text(encoding="utf-8"))
    doc = ast.get_docstring(tree) or ""
    header = {"title": doc.splitlines()[0] if doc else ""}
    for match in re.finditer(r"^([A-Z][a-z ]+): (.+(?:\n[ \t]+.+)*)", doc, re.M):
        header[match.group(1)] = " ".join(match.group(2).split())
    for node in tree.body:
        if isinstance(node, ast.Assign) and node.targets[0].id == "OUTPUT":
            header["output"] = ast.literal_eval(node.value)
    return header


def configuration_command(name):
    return configuration_header(name)["Command"]


def configurations(base):
    """Every configuration: what it reproduces, its command, its result."""
    rows = []
    for path in sorted((REPO / "configs").glob("*/*.py")):
        name = f"{path.parent.name}/{path.stem}"
        header = configuration_header(name)
        link = os.path.relpath(path, REPO / base).replace(os.sep, "/")
        output = header.get("output")
        if output and (REPO / output).exists():
            target = os.path.relpath(REPO / output, REPO / base).replace(os.sep, "/")
            output = f"[`{pathlib.Path(output).name}`]({target})"
        elif output:
            output = f"`{pathlib.Path(output).name}` (not run yet)"
        rows.append(
            [
                f"[`{name}`]({link})",
                header["title"],
                f"`{header['Command']}`",
                output or "-",
            ]
        )
    return table(["configuration", "what it runs", "command", "result file"], rows)


def written_by(name, result, base):
    """How the source line names what wrote a result file: its
    configuration and the command that runs it, or the command alone."""
    if result.get("script_commit"):  # the script is no longer in the tree
        command = result["command"].replace("benchmarks/", "")
        return f"`{command}`, a script archived at commit {result['script_commit'][:7]}"
    command = clean_command(result["command"], name)
    if "configuration" not in result:
        return f"`{command}`"
    config = result["configuration"]
    if name not in COMMANDS:
        command = configuration_command(config)
    link = os.path.relpath(REPO / "configs" / f"{config}.py", REPO / base)
    return f"configuration [`{config}`]({link.replace(os.sep, '/')}): `{command}`"


def source(name, result, base, backend=None, date=None, command=None):
    """The source line under a table: file, command, hardware, backend, date."""
    link = os.path.relpath(RESULTS / name, REPO / base).replace(os.sep, "/")
    backend = backend or result.get("backend") or "TensorFlow"
    backend = {"tensorflow": "TensorFlow"}.get(backend, backend)
    extra = versions(result)
    if extra and not extra.startswith("TensorFlow"):
        backend = f"{backend}; {extra}"
    elif extra:
        backend = extra
    how = f"`{command}`" if command else written_by(name, result, base)
    return (
        f"Source: [`benchmarks/results/{name}`]({link}), written by {how}; "
        f"{hardware(result)}; {backend}; {date or result_date(name, result)}."
    )


# --- RNN-SPN ----------------------------------------------------------------


def rnn_spn_gpu(base):
    name = "rnn_spn_paper_gpu.json"
    result = load(name)
    rows = []
    for key in table1_order(result["models"]):
        model = result["models"][key]
        state = (
            "early-stopped"
            if model["stopped_early"]
            else ("finished" if model["finished"] else "running")
        )
        rows.append(
            [
                row_label(key),
                pct(model["paper_per_digit_error"]),
                pct(model["test_per_digit_error_at_best"], 2),
                pct(model["test_sequence_error_at_best"], 1),
                f"{model['epochs_done']} ({model['best_epoch']})",
                minutes(model["train_wall_seconds"]),
                whole(model["train_sequences_per_second"]),
                state,
            ]
        )
    header = [
        "model",
        "paper: per-digit test error",
        "ours: per-digit test error",
        "ours: sequence test error",
        "epochs (best)",
        "training time",
        "train sequences/s",
        "state",
    ]
    return table(header, rows) + "\n\n" + source(name, result, base)


def rnn_spn_table1(base):
    """Every row of the paper's Table 1, with ours where it has been run."""
    gpu = load("rnn_spn_paper_gpu.json")["models"]
    cpu = load("rnn_spn_paper.json")["models"]

    def cell(model):
        if model is None:
            return "not run"
        text = pct(model["test_per_digit_error_at_best"], 2)
        if not model["finished"]:
            text += f" (after {model['epochs_done']} epochs; not finished)"
        return text

    rows = []
    for (model, d), paper in PAPER_TABLE_1.items():
        key = row_key(model, d)
        rows.append(
            [row_label(key), f"{paper:.1f} %", cell(gpu.get(key)), cell(cpu.get(key))]
        )

    def link(name):
        return f"[`{name}`]({os.path.relpath(RESULTS / name, REPO / base)})"

    header = ["model", "paper", "ours: one GPU, JAX", "ours: CPU, TensorFlow"]
    return table(header, rows) + (
        f"\n\nPer-digit test error at the best validation epoch. Ours: "
        f"{link('rnn_spn_paper_gpu.json')} and {link('rnn_spn_paper.json')} (details below)."
    )


def rnn_spn_cpu(base):
    name = "rnn_spn_paper.json"
    result = load(name)
    rows = []
    for key in table1_order(result["models"]):
        model = result["models"][key]
        state = (
            "early-stopped"
            if model["stopped_early"]
            else (
                "finished"
                if model["finished"]
                else f"stopped after {model['epochs_done']} of up to 300 epochs; rerun to continue"
            )
        )
        rows.append(
            [
                row_label(key),
                pct(model["paper_per_digit_error"]),
                pct(model["test_per_digit_error_at_best"], 2),
                pct(model["test_sequence_error_at_best"], 1),
                f"{model['epochs_done']} ({model['best_epoch']})",
                duration(model["train_wall_seconds"]),
                whole(model["train_sequences_per_second"]),
                ", ".join(
                    f"{area:.2f}" for area in model.get("window_area_per_step", [])
                ),
                hardware(model) if model.get("hardware") else hardware(result),
                state,
            ]
        )
    header = [
        "model",
        "paper: per-digit test error",
        "ours: per-digit test error",
        "ours: sequence test error",
        "epochs (best)",
        "training time",
        "train sequences/s",
        "window area per step (fraction of the image)",
        "hardware",
        "state",
    ]
    return table(header, rows) + "\n\n" + source(name, result, base)


def rnn_spn_init(base):
    name = "rnn_spn_init.json"
    result = load(name)
    epochs = result["epochs"]
    rows = []
    for run in result["runs"].values():
        curve = run["valid_per_digit_error_per_epoch"]
        rows.append(
            [
                f"{run['gru_initializer']}, seed {run['seed']}",
                *[pct(v) for v in curve],
                run["first_epoch_below_50"] or "-",
                run["first_epoch_below_20"] or "-",
                pct(run["test_per_digit_error"]),
            ]
        )
    header = [
        "GRU initialisation",
        *[f"epoch {e + 1}" for e in range(epochs)],
        "first epoch below 50 %",
        "first epoch below 20 %",
        "test per-digit error",
    ]
    return table(header, rows) + "\n\n" + source(name, result, base)


def rnn_spn_speed(base):
    name = "rnn_spn_speed.json"
    result = load(name)
    res = result["results"]
    rows = []
    for key, label in (
        ("rnn_spn", "RNN-SPN, d = 2"),
        ("ffn_spn", "FFN-SPN, d = 2"),
        ("conv", "CNN"),
    ):
        rows.append(
            [label]
            + [
                f"{res[f'{key}/onednn={o}/jit_compile={j}']['sequences_per_second']:.0f}"
                for o, j in (("0", "False"), ("1", "False"), ("1", "True"))
            ]
        )
    header = [
        "model (sequences/s)",
        "oneDNN off, XLA off",
        "oneDNN on, XLA off (the default)",
        "oneDNN on, XLA on",
    ]
    return table(header, rows) + "\n\n" + source(name, result, base)


def train_speed(base):
    name = "train_speed.json"
    result = load(name)
    res, ratios = result["results"], result["ratios"]

    def speed(key):
        return res[key]["per_second"] if key in res else None

    rows = []
    for key, label in (
        ("rnn_spn", "RNN-SPN, d = 2"),
        ("ffn_spn", "FFN-SPN, d = 2"),
        ("conv", "CNN"),
        ("cram_classifier", "CRAM classifier (60x60, 4 glimpses)"),
        ("cram_inpainter", "CRAM inpainter (32x32x3, G + 2 D)"),
    ):
        unit = res[f"keras/{key}"]["unit"]
        rows.append(
            [
                label,
                f"{speed(f'keras/{key}'):.0f} {unit}",
                whole(speed(f"torch_eager/{key}")),
                whole(speed(f"torch_compile/{key}")),
                ratio(ratios.get(f"{key}: keras / torch_eager")),
                ratio(ratios.get(f"{key}: keras / torch_compile")),
            ]
        )
        bf16 = f"keras_mixed_bfloat16/{key}"
        if bf16 in res:
            rows.append(
                [
                    f"{label}, `--dtype-policy mixed_bfloat16`",
                    f"{speed(bf16):.0f} {unit} ({ratio(ratios[f'{key}: keras_mixed_bfloat16 / keras'])} float32)",
                    "",
                    "",
                    ratio(ratios.get(f"{key}: keras_mixed_bfloat16 / torch_eager")),
                    ratio(ratios.get(f"{key}: keras_mixed_bfloat16 / torch_compile")),
                ]
            )
    header = [
        "model",
        "ours (Keras, TensorFlow)",
        "torch eager",
        "torch.compile",
        "ours / eager",
        "ours / compile",
    ]
    main = table(header, rows)
    native_rows = []
    for key, label in (
        ("rnn_spn", "RNN-SPN, d = 2"),
        ("ffn_spn", "FFN-SPN, d = 2"),
        ("cram_classifier", "CRAM classifier"),
        ("cram_inpainter", "CRAM inpainter"),
    ):
        a, b = f"keras_alternating/{key}", f"keras_native_alternating/{key}"
        if a in res and b in res:
            native_rows.append(
                [
                    label,
                    f"{speed(a):.0f}",
                    f"{speed(b):.0f}",
                    ratio(ratios[f"{key}: keras_native / keras (alternating rounds)"]),
                ]
            )
    native = table(
        ["model (per second)", "`keras.ops` sampler", "compiled sampler", "ratio"],
        native_rows,
    )
    return (
        f"{main}\n\nThe same models with each sampler, timed in alternating rounds:\n\n{native}\n\n"
        + source(name, result, base)
    )


def bf16(base):
    name = "bf16_check.json"
    result = load(name)
    rows = []
    marks = (0, 3, 6, 9)
    for policy, curve in result["curves"].items():
        step = result["speed"][policy]["sequences_per_second"]
        label = f"{step:.0f} sequences/s"
        if policy != "float32":
            label += f" ({ratio(result['speed_ratio_bf16_to_float32'])})"
        rows.append(
            [
                policy,
                label,
                f"{curve['train_sequences_per_second']:.0f} sequences/s",
                ", ".join(num(curve["loss"][i], 3) for i in marks),
                ", ".join(pct(curve["val_digit_error"][i]) for i in (0, 3, 6, 7, 9)),
                pct(curve["test_per_digit_error"]),
            ]
        )
    header = [
        "policy",
        "training step",
        "in the run",
        "loss, epochs 1, 4, 7, 10",
        "validation per-digit error, epochs 1, 4, 7, 8, 10",
        "test per-digit error",
    ]
    return table(header, rows) + "\n\n" + source(name, result, base)


def inpaint_bf16(base):
    """The inpainter under float32 and mixed_bfloat16: the training step of
    each (alternating rounds, per backend timed) and the hole scores of the
    same budget runs under each, per seed."""
    study_name, speed_name = "inpaint_bf16.json", "inpaint_bf16_speed.json"
    study, speed = load(study_name), load(speed_name)
    backends = [b for b in ("tensorflow", "jax") if b in speed["backends"]]
    labels = {"tensorflow": "TensorFlow", "jax": "JAX"}
    seeds = [str(seed) for seed in study["seeds"]]
    runs = study["runs"]
    rows = []
    for policy in ("float32", "mixed_bfloat16"):
        row = [policy]
        for backend in backends:
            timed = speed["backends"][backend]
            cell = f"{timed[policy]['images_per_second']:.0f} images/s"
            if policy != "float32":
                cell += f" ({ratio(timed['speedup'])})"
            row.append(cell)
        for seed in seeds:
            psnr = runs[policy][seed]["scores"]["hole_psnr"]
            cell = f"{num(psnr)} dB"
            if policy != "float32":
                reference = runs["float32"][seed]["scores"]["hole_psnr"]
                cell += f" ({psnr - reference:+.2f})"
            row.append(cell)
        stats = study["seed_stats"][policy]
        row += [
            num(stats["hole_psnr"]["mean"]) + " dB",
            num(stats["hole_l1"]["mean"], 3),
            num(stats["ssim"]["mean"], 3),
            num(stats["train_recon_loss"]["mean"], 3),
        ]
        rows.append(row)
    header = (
        ["policy"]
        + [f"training step, {labels[b]}" for b in backends]
        + [f"hole PSNR, seed {seed}" for seed in seeds]
        + ["mean", "hole L1", "SSIM", "training hole L1, last epoch"]
    )
    timed = speed["backends"][backends[0]]
    link = os.path.relpath(RESULTS / speed_name, REPO / base).replace(os.sep, "/")
    commands = " and ".join(
        f"`{clean_command(speed['backends'][b]['command'])}`" for b in backends
    )
    libraries = ", ".join(
        f"{label} {version}"
        for b in backends
        for key, version in speed["backends"][b]["versions"].items()
        if key != "keras"
        for label in [labels.get(key, key)]
    )
    speed_line = (
        f"Speed: [`benchmarks/results/{speed_name}`]({link}), batch "
        f"{timed['batch_size']}, {timed['rounds']} alternating rounds of "
        f"{timed['steps_per_round']} steps per policy (the "
        f"{timed['step_statistic']} of each), written by {commands}; "
        f"{hardware(speed)}; {libraries}, Keras {timed['versions']['keras']}; "
        f"{result_date(speed_name, speed)}."
    )
    return "\n\n".join(
        [
            table(header, rows),
            # Both files were written in the same session (the study file
            # records no date of its own).
            source(study_name, study, base, date=study.get("date", speed["date"])),
            speed_line,
        ]
    )


# --- CRAM classification ------------------------------------------------------


CLUE_SHORT = {"oracle": "oracle clue", "saliency": "saliency clue", "none": "no clue"}
CLUES = {
    "oracle": "CRAM, oracle clue (ground-truth digit mask)",
    "saliency": "CRAM, learned saliency clue (CNN-DecNN, test IoU {iou:.2f})",
    "none": "CRAM, no clue (zeros, clue weight 0)",
}


def cram_cls(base):
    name = "cram_cls_budget.json"
    result = load(name)
    anchors = result["anchors"]
    rows = [
        [
            "RAM, 8 glimpses (Mnih et al. 2014, published)",
            pct(anchors["ram_8_glimpses_cluttered60"], 2),
            "",
            "",
        ],
        [
            "RAM's conv net (published)",
            pct(anchors["ram_convnet_cluttered60"], 2),
            "",
            "",
        ],
        [
            "ST-CNN (Jaderberg et al. 2015, published, its own 60x60 variant)",
            pct(anchors["stn_st_cnn_cluttered60"]),
            "",
            "",
        ],
    ]
    for clue in ordered(result["runs"], tuple(CLUES)):
        run = result["runs"][clue]
        per_seed = ", ".join(
            pct(v).replace(" %", "") for v in run["test_error_per_seed"]
        )
        wall = f"{run['wall_seconds']:.0f} s"
        if clue == "saliency":
            wall += f" (with {result['saliency_seconds']:.0f} s of saliency training)"
        rows.append(
            [
                CLUES[clue].format(iou=result["saliency_test_iou"]),
                f"{pct(run['test_error'])} ({per_seed})",
                run["epochs"],
                wall,
            ]
        )
    header = ["model", "test error (per seed)", "epochs", "wall time per run"]
    return table(header, rows) + "\n\n" + source(name, result, base)


def cram_cls_curves(base):
    name = "cram_cls_budget.json"
    result = load(name)
    rows = []
    for clue in ordered(result["runs"], tuple(CLUES)):
        run = result["runs"][clue]
        rows.append(
            [
                clue,
                *[pct(v) for v in run["valid_error_per_epoch"]],
                *[pct(v) for v in run["train_error_per_epoch"]],
            ]
        )
    epochs = range(1, result["protocol"]["epochs"] + 1)
    header = [
        "clue",
        *[f"validation, epoch {e}" for e in epochs],
        *[f"training, epoch {e}" for e in epochs],
    ]
    return (
        table(header, rows)
        + f"\n\nMean of seeds {', '.join(map(str, result['protocol']['seeds']))}; same source as above."
    )


# --- CRAM inpainting ------------------------------------------------------------

VARIANT_LABELS = {
    "cram": "CRAM (the paper's shared start)",
    "per_step": "CRAM, per-step starts",
    "spread": "CRAM, spread starts",
    "spread_no_clue": "CRAM, spread starts, clue weight 0",
    "cnn_encoder": "CNN encoder (no attention)",
    "cram_skip": "CRAM + context skip (`cram_skip`, beyond the paper)",
    "navier_stokes": "OpenCV Navier-Stokes",
    "telea": "OpenCV Telea",
    "mean_fill": "mean fill",
}
DIAGNOSTICS = [
    ("hole_psnr_glimpses_zeroed", 2),
    ("hole_psnr_context_zeroed", 2),
    ("windows.mean_scale", 3),
    ("windows.mean_pairwise_distance_px", 1),
    ("windows.ring_coverage", 2),
    ("train_recon_loss", 3),
]


def inpaint(name, base, ranges):
    result = load(name)
    stats = result["seed_stats"]
    order = [v for v in VARIANT_LABELS if v in result["variants"]] + [
        m for m in ("navier_stokes", "telea", "mean_fill") if m in result["methods"]
    ]
    best = max(
        (v for v in result["variants"]), key=lambda v: result["methods"][v]["hole_psnr"]
    )

    def cell(variant, key, digits):
        s = stats.get(variant, {}).get(key)
        if s is None:
            return "-"
        text = num(s["mean"], digits)
        if ranges:
            text += f" [{num(s['min'], digits)}, {num(s['max'], digits)}]"
        return text

    rows = []
    for variant in order:
        if variant in result["variants"]:
            psnr = cell(variant, "hole_psnr", 2)
            if variant == best:
                psnr = f"**{psnr}**"
            rows.append(
                [
                    VARIANT_LABELS[variant],
                    psnr,
                    *[cell(variant, key, d) for key, d in DIAGNOSTICS],
                ]
            )
        else:
            rows.append(
                [
                    VARIANT_LABELS[variant],
                    num(result["methods"][variant]["hole_psnr"], 2),
                    *[""] * len(DIAGNOSTICS),
                ]
            )
    psnr_header = "hole PSNR (dB), mean [min, max]" if ranges else "hole PSNR (dB)"
    header = [
        "model",
        psnr_header,
        "glimpses zeroed",
        "context zeroed",
        "mean scale",
        "mean pairwise distance (px)",
        "2-px ring covered",
        "train hole L1",
    ]
    walls = {
        v: sum(r["wall_seconds"] for r in result["runs"][v].values())
        / len(result["runs"][v])
        for v in result["variants"]
    }
    wall_text = "; ".join(
        f"{VARIANT_LABELS[v].split(' (')[0]} {duration(walls[v])}"
        for v in order
        if v in walls
    )
    seeds = ", ".join(map(str, result["seeds"]))
    facts = (
        f"{result['n_train']:,} training images, {result['n_test']:,} test images, "
        f"{result['epochs']} epochs, seed{'s' if len(result['seeds']) > 1 else ''} {seeds}; "
        f"wall time per run: {wall_text}."
    )
    summary = result["summary"]
    best_classical = VARIANT_LABELS[summary["best_classical"]].replace("OpenCV ", "")
    cram = stats["cram"]
    diffs = (
        f"CRAM minus the CNN encoder: {summary['cram_minus_cnn_encoder_db']:+.2f} dB; CRAM minus "
        f"the best classical method ({best_classical}): "
        f"{summary['cram_minus_best_classical_db']:+.2f} dB; zeroing CRAM's glimpses costs "
        f"{cram['hole_psnr']['mean'] - cram['hole_psnr_glimpses_zeroed']['mean']:.2f} dB, "
        f"zeroing its context network "
        f"{cram['hole_psnr']['mean'] - cram['hole_psnr_context_zeroed']['mean']:.2f} dB."
    )
    return (
        table(header, rows)
        + "\n\n"
        + diffs
        + "\n\n"
        + facts
        + "\n\n"
        + source(name, result, base)
    )


def inpaint_study(base):
    return inpaint("inpaint_study_mnist32.json", base, ranges=True)


def inpaint_svhn(base):
    return inpaint("inpaint_svhn1083.json", base, ranges=False)


def inpaint_mnist32(base):
    return inpaint("inpaint_mnist32.json", base, ranges=False)


# --- the sampler ------------------------------------------------------------------

SHAPES = {
    "rnn_spn": "RNN-SPN: 64 x 100x100x1 -> 50x50, affine",
    "cram": "CRAM: 64 x 32x32x3 -> 16x16, attention",
}


def inpaint_full(base):
    """The full-budget inpainting runs as far as they have got."""
    name = "inpaint_full_mnist32.json"
    result = load(name)
    rows = []
    order = sorted(result["status"], key=list(INPAINT_FULL_LABELS).index)
    for variant in order:
        for seed, state in result["status"][variant].items():
            run = result["runs"].get(variant, {}).get(seed)
            if run is None:
                continue
            psnr = run["val_hole_psnr"]
            rows.append(
                [
                    INPAINT_FULL_LABELS.get(variant, variant),
                    seed,
                    state,
                    f"{run['steps'][-1]:,}",
                    num(psnr[-1]),
                    num(max(psnr)),
                ]
            )
    body = table(
        [
            "model",
            "seed",
            "state",
            "steps",
            "validation hole PSNR, last epoch (dB)",
            "best epoch (dB)",
        ],
        rows,
    )
    gaps = [
        f"seed {seed}: {gap['db'][-1]:+.2f} dB after epoch {gap['epochs'][-1]}"
        for seed, gap in result["gap_db"].items()
    ]
    waiting = [
        f"{INPAINT_FULL_LABELS.get(v, v)} seed {s}"
        for v in order
        for s, state in result["status"][v].items()
        if state == "not started"
    ]
    lines = [body, ""]
    if gaps:
        lines.append("CRAM minus the CNN encoder: " + "; ".join(gaps) + ".")
        lines.append("")
    if waiting:
        lines.append("Not started yet: " + ", ".join(waiting) + ".")
        lines.append("")
    lines.append(source(name, result, base))
    return "\n".join(lines)


INPAINT_FULL_LABELS = {
    "cram": "CRAM",
    "cnn_encoder": "CNN encoder (no attention)",
    "cram_skip": "CRAM + context skip (`cram_skip`)",
}


def _newest_sampler_runs(count=2):
    runs = load("sampler_speed.json")["runs"]
    return [
        r for r in runs if "layer_native" in r["shapes"]["rnn_spn"]["ratio_to_torch"]
    ][-count:]


def sampler_speed(base):
    """The newest two runs, each cell 'first / second'."""
    runs = _newest_sampler_runs()

    def both(fn):
        return " / ".join(fn(r) for r in runs)

    rows = []
    for shape, label in SHAPES.items():

        def get(r, key, shape=shape):
            return r["shapes"][shape]["ratio_to_torch"][key]

        def graph(r, key, shape=shape):
            return r["shapes"][shape]["in_graph_x10"]["ratios_to_torch"][key]

        rows.append(
            [
                label,
                both(
                    lambda r, shape=shape: (
                        f"{r['shapes'][shape]['times_ms']['torch']['median']:.2f}"
                    )
                )
                + " ms",
                "**" + both(lambda r: ratio(get(r, "layer_native"))) + "**",
                "**"
                + both(lambda r: ratio(graph(r, "layer_native_x10_in_graph")))
                + "**",
                both(lambda r: ratio(get(r, "layer"))),
                both(lambda r: ratio(get(r, "layer_xla"))),
                both(lambda r: ratio(graph(r, "layer_x10_in_graph"))),
            ]
        )
    header = [
        "shape",
        "torch per call",
        "layer, compiled kernel",
        "compiled kernel, in graph",
        "layer, `keras.ops`",
        "`keras.ops`, XLA",
        "`keras.ops`, in graph",
    ]
    first, last = runs[0], runs[-1]
    return table(header, rows) + (
        "\n\nRatios are our time / torch's (`grid_sample(affine_grid(theta))`), forward + "
        "both gradients, float32; each cell gives the two newest runs. "
        + source(
            "sampler_speed.json",
            last,
            base,
            date=f"{first['started_utc'][:16].replace('T', ' ')} and "
            f"{last['started_utc'][11:16]} UTC",
        )
    )


def sampler_runs(base):
    """Every run in the file: the spread between runs is part of the result."""
    runs = load("sampler_speed.json")["runs"]
    rows = []
    for r in runs:
        row = [r["started_utc"][:16].replace("T", " "), hardware(r)]
        for shape in SHAPES:
            s = r["shapes"][shape]
            graph = s.get("in_graph_x10", {}).get("ratios_to_torch", {})
            row += [
                f"{s['times_ms']['torch']['median']:.2f} ms",
                ratio(s["ratio_to_torch"]["layer"]),
                ratio(graph.get("layer_x10_in_graph")),
                ratio(s["ratio_to_torch"].get("layer_native")),
                ratio(graph.get("layer_native_x10_in_graph")),
            ]
        rows.append(row)
    header = ["started (UTC)", "CPU"]
    for shape in ("RNN-SPN", "CRAM"):
        header += [
            f"{shape}: torch",
            f"{shape}: `keras.ops`",
            f"{shape}: `keras.ops` in graph",
            f"{shape}: compiled",
            f"{shape}: compiled in graph",
        ]
    return table(header, rows) + (
        "\n\nEach run measured the code of its date; '-' where the run had no such "
        "contender. Source: [`benchmarks/results/sampler_speed.json`]("
        + os.path.relpath(RESULTS / "sampler_speed.json", REPO / base).replace(
            os.sep, "/"
        )
        + "), written by `python benchmarks/sampler.py --append --output "
        "benchmarks/results/sampler_speed.json`; TensorFlow 2.21.0, torch 2.13.0 (CPU)."
    )


def separable_sweep(base):
    run = load("sampler_speed.json")["runs"][0]
    rows = []
    for item in run["separable_sweep"]:
        b, h, w, c, oh, ow = item["shape"]
        rows.append(
            [
                f"{b} x {h}x{w}x{c} -> {oh}x{ow}",
                f"{item['cost_per_output']:.0f}",
                f"{item['separable_ms']:.2f} ms",
                f"{item['gather_ms']:.2f} ms",
            ]
        )
    return table(
        ["B x H x W x C -> h x w", "cost per output", "separable", "gather"], rows
    ) + ("\n\n" + source("sampler_speed.json", run, base, date=run["started_utc"][:10]))


ATTEMPTS = {
    "library": "the library: four leading-axis slices of the gathered corners, lerps",
    "unstack": "`ops.unstack` of the corners instead of four slices",
    "split": "`ops.split` instead of four slices",
    "reduction": "bilinear weights as an outer product (4, N), output as one weighted sum",
    "pairs": "the image as rows of horizontal pixel pairs, two row gathers",
}


def sampler_attempts(base):
    name = "sampler_attempts.json"
    result = load(name)
    shapes = result["shapes"]
    rows = []
    for key, label in ATTEMPTS.items():
        cells = []
        for shape in ("rnn_spn", "cram"):
            if key == "library":
                cells.append(f"{shapes[shape]['times_ms'][key]['median']:.2f} ms")
            else:
                cells.append(ratio(shapes[shape]["ratio_to_library"][key]))
        rows.append([f"`{key}`", label, *cells])
    header = [
        "candidate",
        "what changed",
        "RNN-SPN shape (64 x 100x100x1 -> 50x50)",
        "CRAM images (64 x 32x32x3 -> 16x16)",
    ]
    return table(header, rows) + "\n\n" + source(name, result, base)


def fused_crop(base):
    name = "fused_crop_attempt.json"
    result = load(name)
    t = result["times_ms"]
    agree = result["agreement_with_library"]
    rows = [
        [
            "library (separable matmuls)",
            f"{t['library']['median']:.2f} ms",
            "1.00x",
            f"{t['library_forward']['median']:.2f} ms",
            "1.00x",
            "exact",
        ],
        [
            "`crop_and_resize`, exact gradients",
            f"{t['fused_exact']['median']:.2f} ms",
            ratio(t["fused_exact"]["ratio_to_library"]),
            f"{t['fused_exact_forward']['median']:.2f} ms",
            ratio(t["fused_exact_forward"]["ratio_to_library"]),
            f"exact ({agree['fused_exact/pixel_centres']['grad_params']:.0e})",
        ],
        [
            "`crop_and_resize`, TensorFlow's own gradients",
            f"{t['fused_tf_gradient']['median']:.2f} ms",
            ratio(t["fused_tf_gradient"]["ratio_to_library"]),
            "(the same forward)",
            "",
            f"**wrong** (relative error {agree['fused_tf_gradient/pixel_centres']['grad_params']:.1f})",
        ],
    ]
    header = [
        "path",
        "fwd + bwd",
        "ratio",
        "forward alone",
        "ratio",
        "params gradient at pixel centres",
    ]
    return table(header, rows) + "\n\n" + source(name, result, base)


def profile_steps(base):
    name = "profile_steps.json"
    result = load(name)
    labels = {
        "sampler_rnn_spn": "sampler, RNN-SPN shape",
        "sampler_cram": "sampler, CRAM shape (separable path)",
        "rnn_spn_step": "RNN-SPN training step",
        "cram_cls_step": "CRAM classifier training step",
        "inpaint_step": "CRAM inpainter training step",
    }
    rows = []
    for key, label in labels.items():
        r = result["results"][key]
        kernel = r["kernel_cpu_ms_per_call"]
        comps = {k: v for k, v in r["by_component_ms"].items() if k != "other"}
        if len(comps) > 1:
            top = sorted(comps.items(), key=lambda kv: -kv[1])[:5]
            where = ", ".join(f"{k} {100 * v / kernel:.0f} %" for k, v in top) + "; "
        else:
            where = ""
        kinds = sorted(r["by_kind_ms"].items(), key=lambda kv: -kv[1])[:3]
        where += ", ".join(f"{k} {100 * v / kernel:.0f} %" for k, v in kinds)
        rows.append(
            [
                f"{label} ({r['what']})",
                f"{r['wall_ms_per_call']:.1f} ms",
                f"{kernel:.0f}",
                f"{r['rest_ms_per_call']:.0f}",
                where,
            ]
        )
    header = [
        "target",
        "wall / call",
        "kernels (CPU-ms)",
        "rest (CPU-ms)",
        "where the kernel time goes",
    ]
    return table(header, rows) + "\n\n" + source(name, result, base)


# --- Shipped weights -----------------------------------------------------------


# --- the speed page ---------------------------------------------------------

SAMPLER_CONTENDERS = {
    "layer_native": "`SpatialTransformer`, compiled kernel (the default)",
    "fused_native": "`affine_sample`, compiled kernel",
    "layer": "`SpatialTransformer`, `keras.ops` path",
    "layer_xla": "`SpatialTransformer`, `keras.ops` path, XLA",
    "fused": "`affine_sample`, `keras.ops` path",
    "fused_xla": "`affine_sample`, `keras.ops` path, XLA",
    "ops": "`bilinear_sample(affine_grid(...))`, `keras.ops` path",
    "ops_xla": "`bilinear_sample(affine_grid(...))`, `keras.ops` path, XLA",
}
SAMPLER_IN_GRAPH = {
    "layer_native_x10_in_graph": "`SpatialTransformer`, compiled kernel, in graph",
    "layer_x10_in_graph": "`SpatialTransformer`, `keras.ops` path, in graph",
}
CPU_EXTENSIONS = (
    ("avx512f", "AVX-512"),
    ("avx512_bf16", "AVX512_BF16"),
    ("amx_bf16", "AMX-BF16"),
    ("avx2", "AVX2"),
)


def _cpu(result):
    """The machine with the vector extensions its result file records."""
    machine = result.get("machine", {})
    text = result.get("hardware") or machine.get("description", "")
    flags = result.get("cpu_flags") or machine.get("cpu_flags") or []
    found = [label for flag, label in CPU_EXTENSIONS if flag in flags]
    if "AVX-512" in found:
        found.remove("AVX2")
    text = re.sub(r" \([^)]*\)", "", text, count=1)
    extensions = ", ".join(found) if found else "no AVX2"
    return f"{text} (vector extensions: {extensions})"


def _speed_result(name):
    """A speed result file, or None where it is not there yet."""
    return load(name) if (RESULTS / name).exists() else None


def _has_gpu(result):
    text = result.get("hardware") or result.get("machine", {}).get("description", "")
    return bool(text) and "no GPU" not in text


def speed_sampler(base):
    """The newest sampler run: every contender against torch, per call and
    in graph, at both shapes."""
    run = [r for r in load("sampler_speed.json")["runs"] if not _has_gpu(r)][-1]
    shapes = run["shapes"]
    rows = [
        [
            "torch `grid_sample(affine_grid(theta))` (the reference), per call",
            *[f"{shapes[s]['times_ms']['torch']['median']:.2f} ms" for s in SHAPES],
        ]
    ]
    for key, label in SAMPLER_CONTENDERS.items():
        if all(key in shapes[s]["ratio_to_torch"] for s in SHAPES):
            cells = [ratio(shapes[s]["ratio_to_torch"][key]) for s in SHAPES]
            if key == "layer_native":
                cells = [f"**{c}**" for c in cells]
            rows.append([label + ", per call", *cells])
    for key, label in SAMPLER_IN_GRAPH.items():
        graphs = [(shapes[s].get("in_graph_x10") or {}) for s in SHAPES]
        if all(key in g.get("ratios_to_torch", {}) for g in graphs):
            cells = [ratio(g["ratios_to_torch"][key]) for g in graphs]
            if key == "layer_native_x10_in_graph":
                cells = [f"**{c}**" for c in cells]
            rows.append([label, *cells])
    header = ["contender (time / torch's)", *SHAPES.values()]
    return table(header, rows) + (
        "\n\nOne run, every ratio against torch measured in it: forward + both "
        "gradients, float32, median over alternating rounds; in graph: ten calls "
        "in one `tf.function` against ten torch calls. "
        + source(
            "sampler_speed.json",
            run,
            base,
            date=run["started_utc"][:16].replace("T", " ") + " UTC",
        ).replace(hardware(run), _cpu(run))
    )


TRAINING_ROWS = (
    ("rnn_spn", "RNN-SPN, d = 2", "sequences"),
    ("ffn_spn", "FFN-SPN, d = 2", "sequences"),
    ("conv", "CNN", "sequences"),
    ("cram_classifier", "CRAM classifier (60x60, 4 glimpses)", "images"),
    ("cram_inpainter", "CRAM inpainter (32x32x3, G + 2 D)", "images"),
)


TRAINING_RATIOS = {
    "rnn_spn: keras_xla / keras (alternating rounds)": (
        "RNN-SPN with XLA (`jit_compile=True`) against the default"
    ),
    "rnn_spn: keras_mixed_bfloat16 / keras": "RNN-SPN in `mixed_bfloat16` against float32",
}


def speed_training(base):
    """Training steps: ours against the PyTorch port and each setting
    against its own reference, all from one run."""
    name = "train_flops.json"
    result = load(name)
    res = result["results"]
    rows = []
    for key, label, unit in TRAINING_ROWS:
        ours = res.get(f"keras/{key}")
        if not ours or "per_second" not in ours:
            continue
        torch_eager = res.get(f"torch_eager/{key}", {}).get("per_second")
        rows.append(
            [
                label,
                f"{ours['batch']}",
                f"{1e3 * ours['median_step_seconds']:.0f} ms",
                f"{ours['per_second']:.0f} {unit}/s",
                ratio(ours["per_second"] / torch_eager) if torch_eager else "-",
            ]
        )
    header = [
        "model (float32)",
        "batch",
        "step",
        "throughput",
        "ours / PyTorch eager port (throughput)",
    ]
    lines = [table(header, rows)]
    others = [
        f"{TRAINING_RATIOS.get(label, label)}: **{ratio(value)}**"
        for label, value in sorted(result.get("ratios", {}).items())
        if "torch" not in label
    ]
    if others:
        lines.append(
            "Each setting against its reference, timed in alternating rounds in "
            "the same run (throughput ratios): " + "; ".join(others) + "."
        )
    lines.append(source(name, result, base).replace(hardware(result), _cpu(result)))
    return "\n\n".join(lines)


def speed_flops(base):
    """FLOPs per training step and what the step achieves against the peak."""
    name = "train_flops.json"
    result = load(name)
    res, peak = result["results"], result["peak"]
    rows = []
    for key, label, _ in TRAINING_ROWS:
        count = result["flops"].get(key)
        if not count:
            continue
        kinds = count["by_kind"]
        check = count.get("tensorflow_profiler_check", {}).get(
            "forward convolutions and matmuls", {}
        )
        for setting in ("keras", "torch_eager"):
            timed = res.get(f"{setting}/{key}", {})
            if "gflops_per_second" not in timed:
                continue
            rows.append(
                [
                    label if setting == "keras" else f"{label}, PyTorch eager port",
                    f"{count['batch']}",
                    f"{count['flops_per_step'] / 1e9:.1f}",
                    f"{kinds.get('convolution', 0) / 1e9:.1f} / "
                    f"{kinds.get('matmul', 0) / 1e9:.1f} / "
                    f"{(kinds.get('other arithmetic', 0) + kinds.get('sampler', 0)) / 1e9:.2f}",
                    f"{1e3 * timed['median_step_seconds']:.0f} ms",
                    f"{timed['gflops_per_second']:.0f}",
                    pct(timed.get("fraction_of_float32_peak")),
                    (
                        f"{check['tensorflow_profiler'] / 1e9:.2f} / "
                        f"{check['ours'] / 1e9:.2f}"
                        if check and setting == "keras"
                        else ""
                    ),
                ]
            )
    header = [
        "training step (float32)",
        "batch",
        "GFLOP per step",
        "convolutions / matmuls / other (GFLOP)",
        "step",
        "GFLOP/s",
        "of the float32 peak",
        "TensorFlow's profiler / ours, forward convolutions and matmuls (GFLOP)",
    ]
    lines = [table(header, rows)]
    clock = f"{peak['ghz']:.2f} GHz"
    derived = (
        f"Peak: {peak['float32_derivation'].replace('clock', clock)}"
        f" = **{peak['float32_gflops']:.0f} GFLOP/s** float32"
    )
    if peak.get("bfloat16_amx_gflops"):
        derived += (
            f"; bfloat16 on AMX: {peak['cores']} cores x {peak['ghz']:.2f} GHz x "
            f"{peak['bfloat16_amx_flops_per_cycle_per_core']} FLOPs per cycle = "
            f"{peak['bfloat16_amx_gflops']:.0f} GFLOP/s"
        )
    lines.append(derived + ".")
    lines.append(source(name, result, base).replace(hardware(result), _cpu(result)))
    return "\n\n".join(lines)


def speed_attempts(base):
    """What was tried for speed, with its measured effect."""
    name = "speed_attempts.json"
    result = load(name)
    rows = [
        [
            a["area"],
            a["what"],
            a["effect"],
            "yes" if a["adopted"] else "no",
        ]
        for a in result["attempts"]
    ]
    header = ["where", "what was tried", "measured effect", "kept"]
    return (
        table(header, rows)
        + "\n\n"
        + source(name, result, base).replace(hardware(result), _cpu(result))
    )


def speed_gpu(base):
    """The GPU section: the speed result files measured on a GPU machine."""
    found = []
    for name in ("sampler_speed.json", "train_flops.json"):
        result = _speed_result(name)
        if result is None:
            continue
        runs = result["runs"] if isinstance(result.get("runs"), list) else [result]
        found += [(name, run) for run in runs if _has_gpu(run)]
    if not found:
        return (
            "Not measured yet: no speed result file was written on a machine "
            "with a GPU."
        )
    rows = [
        [f"`{name}`", _cpu(run), (run.get("started_utc") or run.get("date", ""))[:10]]
        for name, run in found
    ]
    return table(["result file", "machine", "date"], rows)


def shipped_weights(base):
    """The trained models in cram_keras/weights, from their manifests."""
    rows, commands = [], []
    for path in sorted(WEIGHTS.glob("*.json")):
        with open(path, encoding="utf-8") as f:
            m = json.load(f)
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
        link = os.path.relpath(f"{WEIGHTS_LINK}/{path.name}", str(base)).replace(
            os.sep, "/"
        )
        weights = m["files"]["weights"]
        stored = f"{m['storage_dtype']}, {weights['bytes'] / 1e6:.1f} MB"
        check = m.get("storage_check") or {}
        if m["storage_dtype"] != "float32" and "float32_test_per_digit_error" in check:
            stored += (
                f" (float32 weights: {pct(check['float32_test_per_digit_error'], 2)} "
                "per-digit test error)"
            )
        rows.append(
            [
                f"`{m['name']}`",
                row_label(key),
                "-" if paper is None else f"{paper:.1f} %",
                pct(m["test_per_digit_error"], 2),
                pct(m["test_sequence_error"], 2),
                pct(m["valid_per_digit_error_at_best"], 2),
                state,
                stored,
                f"[`{path.name}`]({link})",
            ]
        )
        backend = {"jax": "JAX", "tensorflow": "TensorFlow"}.get(
            m["backend"], m["backend"]
        )
        test = m["test_set"]
        digits = {"idx": "the official MNIST test digits"}.get(
            test["origin"], f"MNIST test digits ({test['origin']})"
        )
        commands.append(
            f"`{m['name']}`: {test['sequences']:,} test sequences generated from "
            f"{digits}; trained by `{clean_command(m['training_command'])}` "
            f"({hardware(m)}, {backend})"
        )
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
    return (
        table(header, rows)
        + "\n\nErrors of the shipped weights (those of the best validation epoch), "
        "measured when they were shipped. " + "; ".join(commands) + "."
    )


# --- README and reproducing -------------------------------------------------------


def short_hardware(name, result):
    """'1 x NVIDIA H200, JAX' or 'AMD EPYC ..., 2 cores, TensorFlow'."""
    text = hardware(result)
    gpu = re.search(r"\d+ x NVIDIA [\w-]+", text)
    backend = (result.get("backend") or "tensorflow").split(" ")[0]
    backend = {"jax": "JAX", "tensorflow": "TensorFlow"}.get(backend, backend)
    where = gpu.group(0) if gpu else text.replace(", no GPU", "")
    return f"{where}, {backend}, {result_date(name, result)}"


def headline(base):
    gpu = load("rnn_spn_paper_gpu.json")
    cls = load("cram_cls_budget.json")

    def link(name):
        return f"[`{name}`]({os.path.relpath(RESULTS / name, REPO / base)})"

    rows = []
    for key in table1_order(gpu["models"]):
        m, flag = gpu["models"][key], re.sub(r"_d\d+$", "", key)
        rows.append(
            [
                f"RNN-SPN Table 1: {row_label(key)}",
                "per-digit test error",
                pct(m["paper_per_digit_error"]),
                pct(m["test_per_digit_error_at_best"], 2),
                f"paper protocol, `--model {flag}`, early-stopped at epoch {m['epochs_done']}; "
                f"{short_hardware('rnn_spn_paper_gpu.json', gpu)}",
                link("rnn_spn_paper_gpu.json"),
            ]
        )
    # Table 1 rows that ran on the CPU only (the GPU file has none of them).
    cpu = load("rnn_spn_paper.json")
    for key in table1_order(cpu["models"]):
        if key in gpu["models"]:
            continue
        m = cpu["models"][key]
        model, _, d = key.partition("_d")
        state = (
            f"early-stopped at epoch {m['epochs_done']}"
            if m["stopped_early"]
            else f"in progress: best of {m['epochs_done']} epochs so far"
        )
        rows.append(
            [
                f"RNN-SPN Table 1: {row_label(key)}",
                "per-digit test error",
                pct(m["paper_per_digit_error"]),
                pct(m["test_per_digit_error_at_best"], 2),
                f"paper protocol, `--model {model} --downsample {d}`, {state}; "
                f"{short_hardware('rnn_spn_paper.json', dict(cpu, **m))}",
                link("rnn_spn_paper.json"),
            ]
        )
    anchors = cls["anchors"]
    p = cls["protocol"]
    for clue in ("oracle", "saliency", "none"):
        run = cls["runs"][clue]
        paper = (
            f"not reported; RAM: {pct(anchors['ram_8_glimpses_cluttered60'], 2)}"
            if clue == "oracle"
            else "not reported"
        )
        rows.append(
            [
                f"CRAM classification, 60x60 cluttered MNIST, {CLUE_SHORT[clue]}",
                "test error",
                paper,
                pct(run["test_error"]),
                f"CPU budget, `--clue {clue}`: {p['epochs']} epochs on {p['n_train']:,} images, "
                f"seeds {', '.join(map(str, p['seeds']))}; "
                f"{short_hardware('cram_cls_budget.json', cls)}",
                link("cram_cls_budget.json"),
            ]
        )
    for name, label, paper in (
        ("inpaint_svhn1083.json", "CRAM inpainting, SVHN, 8x8 hole", "Fig. 7 only"),
        (
            "inpaint_mnist32.json",
            "CRAM inpainting, MNIST-32, 8x8 hole",
            "not in the paper",
        ),
    ):
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
                f"{', '.join(map(str, result['seeds']))}; {short_hardware(name, result)}",
                link(name),
            ]
        )
    full = load("inpaint_full_mnist32.json")
    cram, cnn = (full["runs"].get(v, {}).get("0") for v in ("cram", "cnn_encoder"))
    if cram and cnn:
        state = full["status"]["cram"]["0"]
        epochs = min(cram["epochs"][-1], cnn["epochs"][-1])
        rows.append(
            [
                "CRAM inpainting, MNIST-32, 8x8 hole, full budget",
                "validation hole PSNR",
                "not in the paper",
                f"{num(cram['val_hole_psnr'][epochs - 1])} dB (CNN encoder "
                f"{num(cnn['val_hole_psnr'][epochs - 1])}) after epoch {epochs}",
                f"paper settings, 60,000 images, seed 0, {state}; "
                f"{short_hardware('inpaint_full_mnist32.json', full)}",
                link("inpaint_full_mnist32.json"),
            ]
        )
    header = [
        "experiment",
        "metric",
        "paper",
        "ours",
        "setting; hardware, backend, date",
        "result file",
    ]
    return table(header, rows)


def wall_times(base):
    """What the committed runs took, as a guide to what a rerun takes."""
    rows = []
    gpu = load("rnn_spn_paper_gpu.json")
    for key in table1_order(gpu["models"]):
        m = gpu["models"][key]
        rows.append(
            [
                f"Table 1 protocol, {row_label(key)}",
                "one NVIDIA H200, JAX (three models at once)",
                f"{m['epochs_done']} epochs",
                minutes(m["train_wall_seconds"]),
                f"{m['train_wall_seconds'] / m['epochs_done']:.1f} s",
            ]
        )
    cpu = load("rnn_spn_paper.json")
    for key in table1_order(cpu["models"]):
        m = cpu["models"][key]
        rows.append(
            [
                f"Table 1 protocol, {row_label(key)}",
                hardware(cpu) + ", TensorFlow",
                f"{m['epochs_done']} epochs",
                duration(m["train_wall_seconds"]),
                f"{m['train_wall_seconds'] / m['epochs_done'] / 60:.1f} min",
            ]
        )
    cls = load("cram_cls_budget.json")
    rows.append(
        [
            "CRAM classification budget, all clues and seeds",
            hardware(cls) + ", TensorFlow",
            f"{len(cls['runs']) * len(cls['protocol']['seeds'])} runs of {cls['protocol']['epochs']} epochs",
            duration(cls["total_wall_seconds"]),
            "",
        ]
    )
    for name, label in (
        ("inpaint_svhn1083.json", "inpainting budget, SVHN subset"),
        ("inpaint_mnist32.json", "inpainting budget, MNIST 32x32"),
        ("inpaint_study_mnist32.json", "inpainting study, MNIST 32x32"),
    ):
        r = load(name)
        n_runs = sum(len(v) for v in r["runs"].values())
        rows.append(
            [
                label,
                hardware(r) + ", TensorFlow",
                f"{n_runs} runs of {r['epochs']} epochs",
                duration(r["wall_seconds"]),
                "",
            ]
        )
    return table(["job", "hardware", "size", "wall time", "per epoch"], rows)


def commands(base):
    """Every committed result file with its configuration and the command
    that reproduces it."""
    lines = []
    for path in sorted(RESULTS.glob("*.json")):
        result = load(path.name)
        if "runs" in result and isinstance(result["runs"], list):  # sampler_speed.json
            run = result["runs"][-1]
            how, where = f"`{clean_command(run['command'])}`", hardware(run)
        else:
            how, where = written_by(path.name, result, base), hardware(result)
        link = os.path.relpath(path, REPO / base).replace(os.sep, "/")
        lines.append(f"- [`{path.name}`]({link}) ({where}):\n  {how}")
    return "\n".join(lines)


RENDERERS = {
    "commands": commands,
    "configurations": configurations,
    "headline": headline,
    "rnn_spn_table1": rnn_spn_table1,
    "rnn_spn_gpu": rnn_spn_gpu,
    "rnn_spn_cpu": rnn_spn_cpu,
    "rnn_spn_init": rnn_spn_init,
    "rnn_spn_speed": rnn_spn_speed,
    "train_speed": train_speed,
    "bf16": bf16,
    "inpaint_bf16": inpaint_bf16,
    "cram_cls": cram_cls,
    "cram_cls_curves": cram_cls_curves,
    "inpaint_study": inpaint_study,
    "inpaint_svhn": inpaint_svhn,
    "inpaint_mnist32": inpaint_mnist32,
    "inpaint_full": inpaint_full,
    "sampler_speed": sampler_speed,
    "sampler_runs": sampler_runs,
    "separable_sweep": separable_sweep,
    "sampler_attempts": sampler_attempts,
    "fused_crop": fused_crop,
    "profile_steps": profile_steps,
    "wall_times": wall_times,
    "shipped_weights": shipped_weights,
    "speed_sampler": speed_sampler,
    "speed_training": speed_training,
    "speed_flops": speed_flops,
    "speed_attempts": speed_attempts,
    "speed_gpu": speed_gpu,
}


# --- the driver ---------------------------------------------------------------------


def document_paths():
    paths = [REPO / "README.md"] + sorted((REPO / "docs").glob("*.md"))
    return [p for p in paths if p.is_file()]


class RenderError(Exception):
    """A block that cannot be rendered (unknown name, or a result file that
    lacks what its renderer reads)."""


def render_text(text, base):
    """Returns (new text, names of the blocks found)."""
    names = []

    def replace(match):
        name = match.group("name")
        if name not in RENDERERS:
            raise RenderError(
                f"unknown render block {name!r} (known: {', '.join(RENDERERS)})"
            )
        names.append(name)
        try:
            body = RENDERERS[name](base).rstrip()
        except (KeyError, IndexError, TypeError, ValueError, OSError) as error:
            raise RenderError(
                f"block {name!r}: the result files do not hold what it shows "
                f"({type(error).__name__}: {error}); update its function in "
                "tools/render_docs.py"
            ) from error
        return f"{match.group(1)}{body}\n{match.group(4)}"

    return BLOCK.sub(replace, text), names


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--check",
        action="store_true",
        help="change nothing; exit 1 if any block differs from the result files",
    )
    parser.add_argument("--list", action="store_true", help="print the blocks per file")
    args = parser.parse_args(argv)
    stale = []
    for path in document_paths():
        text = path.read_text(encoding="utf-8")
        base = path.parent.relative_to(REPO)
        opened = re.findall(r"<!-- render:([a-z0-9_]+) -->", text)
        try:
            new, names = render_text(text, base)
        except RenderError as error:
            print(f"{path.relative_to(REPO)}: {error}", file=sys.stderr)
            return 2
        if len(names) != len(opened):
            unclosed = sorted(set(opened) - set(names))
            print(
                f"{path.relative_to(REPO)}: render block(s) without a closing marker: "
                f"{', '.join(unclosed)}",
                file=sys.stderr,
            )
            return 2
        if args.list:
            for name in names:
                print(f"{path.relative_to(REPO)}: {name}")
        if new != text:
            stale.append(path)
            if args.check:
                diff = difflib.unified_diff(
                    text.splitlines(),
                    new.splitlines(),
                    str(path.relative_to(REPO)),
                    "rendered from benchmarks/results",
                    lineterm="",
                    n=1,
                )
                print("\n".join(list(diff)[:60]))
            else:
                path.write_text(new, encoding="utf-8")
                print(f"rendered {path.relative_to(REPO)}")
    if args.check and stale:
        print(
            f"\n{len(stale)} file(s) differ from benchmarks/results; run "
            "`python tools/render_docs.py`.",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
