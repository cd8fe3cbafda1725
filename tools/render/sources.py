"""The result files and where each came from.

Each results block ends with a source line (`source`): the result file, the
named configuration it came from (`configs/`) with the command that runs it
(or, for a speed benchmark, the command that wrote it), the hardware, the
backend and library versions, and the date. Commands are shown as a user
runs them (`clean_command`).

Every path is taken from `REPO` and `RESULTS` when a function runs, so that
the documents of another tree can be rendered by setting the two.
"""

import ast
import functools
import json
import os
import pathlib
import re

from .cells import paragraphs

REPO = pathlib.Path(__file__).resolve().parents[2]
RESULTS = REPO / "benchmarks" / "results"

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

BACKEND_NAMES = {"jax": "JAX", "tensorflow": "TensorFlow"}

CPU_EXTENSIONS = (
    ("avx512f", "AVX-512"),
    ("avx512_bf16", "AVX512_BF16"),
    ("amx_bf16", "AMX-BF16"),
    ("avx2", "AVX2"),
)


# --- files and links ----------------------------------------------------------


def load(name):
    with open(RESULTS / name, encoding="utf-8") as f:
        return json.load(f)


def result_exists(name):
    return (RESULTS / name).exists()


def result_names():
    return [path.name for path in sorted(RESULTS.glob("*.json"))]


def repo_path(*parts):
    return REPO.joinpath(*parts)


def relative(path, base):
    """``path`` as a link from the document folder ``base`` (of REPO)."""
    return os.path.relpath(path, REPO / base).replace(os.sep, "/")


def link(label, target):
    return f"[`{label}`]({target})"


def result_link(name, base, full=False):
    """A link to result file ``name``, labelled with its path in the
    repository (``full``) or its name."""
    label = f"benchmarks/results/{name}" if full else name
    return link(label, relative(RESULTS / name, base))


def configuration_link(name, base):
    return link(name, relative(REPO / "configs" / f"{name}.py", base))


# --- what a result file records ---------------------------------------------------


def machine_description(result):
    return result.get("hardware") or result.get("machine", {}).get("description", "")


def hardware(result):
    """The machine, with its widest vector extension where the description
    names none."""
    text = machine_description(result)
    flags = result.get("cpu_flags")
    if flags and "(" not in text.split(",")[0]:
        widest = (
            "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else None
        )
        if widest:
            text = text.replace(",", f" ({widest}),", 1)
    return text


def cpu(result):
    """The machine with the vector extensions its result file records."""
    machine = result.get("machine", {})
    flags = result.get("cpu_flags") or machine.get("cpu_flags") or []
    found = [label for flag, label in CPU_EXTENSIONS if flag in flags]
    if "AVX-512" in found:
        found.remove("AVX2")
    text = re.sub(r" \([^)]*\)", "", machine_description(result), count=1)
    extensions = ", ".join(found) if found else "no AVX2"
    return f"{text} (vector extensions: {extensions})"


def has_gpu(result):
    text = machine_description(result)
    return bool(text) and "no GPU" not in text


def backend_name(backend):
    return BACKEND_NAMES.get(backend, backend)


def versions(result):
    found = dict(result.get("versions", {}))
    for key in ("tensorflow", "keras"):
        if isinstance(result.get(key), str):
            found.setdefault(key, result[key])
    parts = []
    for key, label in (
        ("tensorflow", "TensorFlow"),
        ("keras", "Keras"),
        ("jax", "JAX"),
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


# --- what wrote it ------------------------------------------------------------------


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
        command = configuration_header(config)["Command"]
    return f"configuration {configuration_link(config, base)}: `{command}`"


def source(name, result, base, date=None, machine=hardware):
    """The source line under a table: file, command, hardware (as
    ``machine`` describes it), backend, date."""
    backend = backend_name(result.get("backend") or "TensorFlow")
    extra = versions(result)
    if extra and not extra.startswith("TensorFlow"):
        backend = f"{backend}; {extra}"
    elif extra:
        backend = extra
    return (
        f"Source: {result_link(name, base, full=True)}, "
        f"written by {written_by(name, result, base)}; {machine(result)}; "
        f"{backend}; {date or result_date(name, result)}."
    )


def sourced(name, machine=hardware):
    """Makes ``render(result)``, the text of a block drawn from result file
    ``name``, a renderer: ``renderer(base)`` loads the file and ends the
    block with its source line."""

    def decorate(render):
        @functools.wraps(render)
        def renderer(base):
            result = load(name)
            return paragraphs(
                render(result), source(name, result, base, machine=machine)
            )

        return renderer

    return decorate
