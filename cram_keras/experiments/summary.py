"""What a run prints (stdout): first the run directory, the backend,
strategy and hardware, then the data (its source and the sizes of the
splits used); one line per epoch with its time and an ETA
(`cram_keras.training.progress.EpochProgress`); at the end the headline
scores and where each output is. Notes go to stderr (`note`)."""

import os
import sys

from cram_keras.experiments.run_dir import (
    CHECKPOINT_DIR,
    CONFIG_FILE,
    LOG_FILE,
    METRICS_FILE,
    TUNER_DIR,
)
from cram_keras.training.progress import format_seconds


def say(text):
    """A line of the run's own report (stdout; notes go to stderr)."""
    print(text, flush=True)


def note(message):
    """A note of a run (stderr): what it resumes, skips or takes over."""
    print(message, file=sys.stderr, flush=True)


def split_sizes(data):
    """``{split: examples}`` of the data the run uses, for its first
    lines, from ``data.splits`` (``{split: (images, ...)}``
    or ``{split: {"images": ...}}``) or ``data.x_train`` / ``x_valid`` /
    ``x_test``; ``{}`` where there is neither."""
    sizes = {}
    splits = getattr(data, "splits", None)
    if isinstance(splits, dict):
        for name, value in splits.items():
            if isinstance(value, dict):
                value = value.get("images")
            elif isinstance(value, (tuple, list)):
                value = value[0] if value else None
            if hasattr(value, "__len__"):
                sizes[name] = len(value)
        return sizes
    for name in ("train", "valid", "test"):
        value = getattr(data, f"x_{name}", None)
        if hasattr(value, "__len__"):
            sizes[name] = len(value)
    return sizes


def setup_line(backend, distribution, hardware):
    """``backend: tensorflow; strategy: default (1 replica); hardware: ...``"""
    parts = [f"backend: {backend or '?'}"]
    if isinstance(distribution, dict):
        replicas = distribution.get("replicas", 1)
        workers = distribution.get("workers", 1)
        text = f"{replicas} replica{'s' if replicas != 1 else ''}"
        if workers != 1:
            text += f" on {workers} workers"
        parts.append(f"strategy: {distribution.get('strategy', '?')} ({text})")
    if hardware:
        parts.append(f"hardware: {hardware}")
    return "; ".join(parts)


def data_lines(source, sizes):
    """``data: <what was loaded> (<path>)`` and ``splits: train N, ...``."""
    lines = []
    if isinstance(source, dict):
        text = source.get("description") or source.get("name") or "?"
        if source.get("path"):
            text += f" ({source['path']})"
        lines.append(f"data: {text}")
    if sizes:
        lines.append(
            "splits: " + ", ".join(f"{name} {size:,}" for name, size in sizes.items())
        )
    return lines


def _number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def headline_lines(metrics):
    """The lines of the final summary that give a run's result: the test
    errors (``test_*error`` in percent), a ``methods`` table of hole PSNR /
    SSIM (``{method: {"hole_psnr", "ssim"}}``, the inpainter and its
    baselines), the winner of a search (``best_trial`` of ``trials``) and
    the best epoch."""
    lines = []
    errors = sorted(
        (k, v)
        for k, v in metrics.items()
        if k.startswith("test_") and k.endswith("error") and _number(v)
    )
    if errors:
        lines.append(
            ", ".join(f"{k.replace('_', ' ')} {100 * v:.2f} %" for k, v in errors)
        )
    methods = metrics.get("methods")
    if isinstance(methods, dict) and methods:
        where = []
        if _number(metrics.get("n_test")):
            where.append(f"{metrics['n_test']:,} test images")
        if metrics.get("mask"):
            where.append(f"{metrics['mask']} mask")
        lines.append(
            "hole PSNR / SSIM" + (f" ({', '.join(where)})" if where else "") + ":"
        )
        first = metrics.get("method")
        names = sorted(methods, key=lambda name: (name != first, name))
        width = max(len(name) for name in names)
        for name in names:
            scores = methods[name] if isinstance(methods[name], dict) else {}
            psnr, ssim = scores.get("hole_psnr"), scores.get("ssim")
            psnr = f"{psnr:6.2f} dB" if _number(psnr) else "     ? dB"
            ssim = f"{ssim:.3f}" if _number(ssim) else "?"
            lines.append(f"  {name:<{width}}  {psnr}  {ssim}")
    if metrics.get("best_trial") is not None:
        text = f"search: trial {metrics['best_trial']} is the best"
        if _number(metrics.get("trials")):
            text += f" of {metrics['trials']}"
        if metrics.get("best_trial_directory"):
            text += f" (its run: {metrics['best_trial_directory']})"
        lines.append(text)
    elif _number(metrics.get("best_epoch")) and _number(metrics.get("epochs")):
        text = (
            f"best validation epoch: {metrics['best_epoch'] + 1} of {metrics['epochs']}"
        )
        if metrics.get("stopped_early"):
            text += " (stopped early)"
        lines.append(text)
    return lines


# What each output of a run is, by name (a folder with a trailing "/").
_OUTPUTS = {
    METRICS_FILE: "every score, per-epoch curves, speed and hardware",
    "model.keras": "the trained model (import cram_keras; keras.models.load_model)",
    "figures/": "a figure per epoch",
    "saved_model/": "TensorFlow SavedModel, for serving without cram_keras",
    "tensorboard/": "TensorBoard logs: tensorboard --logdir {path}",
    "trials.csv": "the search's trials, one row each (also trials.json)",
    "best_config.json": "the best trial's settings",
    "trials/": "one run per trial",
    f"{TUNER_DIR}/": "keras-tuner's state of the search",
    "saliency/": "the saliency network's run",
    LOG_FILE: "one row per epoch",
    f"{CHECKPOINT_DIR}/": "epoch checkpoints (a rerun resumes from them)",
    CONFIG_FILE: "the settings and the data used",
}
_FIGURE_SUFFIXES = (".png", ".gif", ".pdf", ".svg")


def run_outputs(directory):
    """``[(name, what it is)]`` of what ``directory`` holds: metrics.json,
    the model, the figures, then the rest; folders end in "/"."""
    try:
        entries = sorted(os.listdir(directory))
    except OSError:
        return []
    present = {}
    for name in entries:
        if name.startswith(".") or name == "workers":
            continue
        if name == "trials.json" and "trials.csv" in entries:
            continue  # named with trials.csv
        key = name + "/" if os.path.isdir(os.path.join(directory, name)) else name
        present[key] = name
    known = [key for key in _OUTPUTS if key in present]
    figures = [key for key in present if key.endswith(_FIGURE_SUFFIXES)]
    others = [key for key in present if key not in _OUTPUTS and key not in figures]
    results = [key for key in known if key in (METRICS_FILE, "model.keras")]
    ordered = results + figures + [k for k in known if k not in results] + others
    return [
        (
            key,
            ("figure" if key in figures else _OUTPUTS.get(key, "")).format(
                path=os.path.join(os.path.abspath(directory), present[key])
            ),
        )
        for key in ordered
    ]


def print_summary(directory, metrics, nested, distribution, earlier=False):
    """The run's last lines: the time, the headline scores, and where each
    output is (a run inside another: one line). ``earlier``: the run had
    finished before this process started."""
    wall = metrics.get("wall_seconds")
    took = f" in {format_seconds(wall)}" if _number(wall) else ""
    if earlier:
        took = " earlier" + took
    if nested:
        say(f"finished {os.path.abspath(directory)}{took}")
        return
    if not distribution.is_chief:
        say(
            f"worker {distribution.worker_index} finished{took}; the chief writes "
            f"the run to {os.path.abspath(directory)}"
        )
        return
    say(f"Finished{took}. Results:")
    for line in headline_lines(metrics):
        say("  " + line)
    say(f"Outputs in {os.path.abspath(directory)}:")
    rows = run_outputs(directory)
    width = max((len(name) for name, _ in rows), default=0)
    for name, what in rows:
        say(f"  {name:<{width}}  {what}".rstrip())


def print_finished(directory, metrics, nested, distribution):
    """What a run that had finished before this process started prints:
    that it is complete, how it ran, and its summary."""
    say(
        f"run directory: {os.path.abspath(directory)} is complete (trained "
        "earlier; --overwrite trains it again)"
    )
    if not nested:
        say(
            setup_line(
                metrics.get("backend"),
                metrics.get("distribution"),
                metrics.get("hardware"),
            )
        )
        for line in data_lines(metrics.get("data_source"), {}):
            say(line)
    print_summary(directory, metrics, nested, distribution, earlier=True)
