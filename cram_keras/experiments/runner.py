"""The one run machinery behind every training script.

An experiment module supplies only what differs (an `Experiment` subclass:
its Config, data, model, metrics and figures); `run_experiment` owns the
rest, the same for every script:

1. the backend check (one line naming the backends the experiment trains on);
2. the run directory, first taken for this process (`run_lock`: another
   process running in it is refused with `RunDirectoryBusy`, exit code 2,
   before anything is read or written; a lock left by a killed run is
   taken over); then a finished run returns its metrics at once; a
   directory whose config differs is refused if it holds work (a completed
   epoch, a finished run, or trials of a search in ``tuner/``; the message
   names the differing fields and the two ways out: ``--output-dir`` or
   ``--overwrite``) and reused otherwise, so a failed first attempt never
   blocks the corrected command. ``max_trials`` is not part of a run's
   identity: raising it continues a finished search;
3. the data, loaded and checked against the config *before* anything is
   written, so a bad input leaves no half-written run directory;
4. ``config.json`` (the resolved config and the data actually used);
5. the model, built inside the distribution strategy's scope, and restored
   from the newest intact epoch checkpoint (`EpochCheckpoints`);
6. the epoch loop: one ``fit`` call per epoch with an epoch-seeded training
   order (so a resumed run trains on the same batches as an uninterrupted
   one), TensorBoard, a NaN guard that names the epoch and step, the
   experiment's learning-rate rule, early stopping, and an atomic
   checkpoint commit of weights, optimizer state, log rows and wall clock;
   ``log.csv`` is rewritten from the committed rows, so it holds each
   completed epoch exactly once;
7. after training (also after a kill during any of these steps, by
   rerunning the same command): the best weights where the experiment
   monitors a validation metric, the experiment's post-training step,
   evaluation, ``model.keras``, figures, the optional SavedModel, and
   ``metrics.json`` last, written atomically: its presence means done.

What a run prints (stdout): first the run directory, the backend,
strategy and hardware, then the data (its source and the sizes of the
splits used); one line per epoch with its time and an ETA
(`cram_keras.training.callbacks.EpochProgress`); at the end the headline
scores and where each output is. Notes go to stderr.

Under MultiWorkerMirroredStrategy every worker runs all of it (the
collective steps must match) and only the chief writes and holds the run
directory; the other workers write just
``workers/worker-<i>/final.weights.h5``, and stop with the chief when it
cannot take the directory.
"""

import contextlib
import csv
import dataclasses
import io
import json
import math
import os
import shutil
import sys
import time

import keras
import numpy as np

from cram_keras.experiments.config import config_diff, config_to_dict, field_default
from cram_keras.training import run_lock
from cram_keras.training.callbacks import EpochProgress, format_seconds
from cram_keras.training.checkpoint import EpochCheckpoints, crash_point
from cram_keras.training.distribute import Distribution, python_scalar
from cram_keras.utils import atomic_path, epoch_seed, read_json, write_json

# Files and folders a run owns (removed by --overwrite or when a directory
# without a completed epoch is reused with a new config).
CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.json"
LOG_FILE = "log.csv"
CHECKPOINT_DIR = "checkpoints"
# keras-tuner's project of a search (--tune): its trials are work.
TUNER_DIR = "tuner"
# Keys of config.json that describe the run, not the config.
RUN_KEYS = ("data_source",)
# Settings that say how far a search goes, not what it trains: a run in
# which they differ is the same run (raising max_trials continues a search).
EXTENT_SETTINGS = ("max_trials",)


class UsageError(ValueError):
    """A bad flag, config or run directory (exit code 2)."""


class RunDirectoryBusy(UsageError, run_lock.DirectoryBusy):
    """Another running process holds the run directory (exit code 2): one
    paragraph naming it (`cram_keras.training.run_lock`)."""

    def __init__(self, message, directory=None, holder=None):
        run_lock.DirectoryBusy.__init__(self, message, directory, holder)


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite (exit code 1)."""


@dataclasses.dataclass
class Run:
    """What an experiment's hooks get to know about the run."""

    directory: str
    config: object
    distribution: Distribution
    smoke: bool = False
    log: object = print

    @property
    def is_chief(self):
        return self.distribution.is_chief

    def path(self, *names):
        return os.path.join(self.directory, *names)

    def write_json(self, name, payload):
        if self.is_chief:
            write_json(self.path(name), payload)

    def evaluate(self, model, dataset):
        """``model.evaluate(dataset)`` as a dict of floats."""
        scores = model.evaluate(dataset, return_dict=True, verbose=0)
        return {k: float(python_scalar(v)) for k, v in scores.items()}


class Experiment:
    """The parts of an experiment that differ between the three scripts.

    Subclasses set the class attributes and override the hooks; the
    defaults below are what a plain supervised ``fit`` needs.
    """

    name = None  # "rnn_spn": runs/<name>/<run name>
    Config = None  # the frozen dataclass of every setting
    title = ""  # one line for --help
    examples = ""  # the script's usage examples for --help
    backends = ("tensorflow",)
    monitor = None  # e.g. "val_digit_accuracy": early stopping and best weights
    monitor_mode = "max"
    smoke_overrides = {}
    speed_key = "train_samples_per_second"  # its name in metrics.json
    name_fields = ("seed",)  # Config fields that run_name() spells out

    # === Config ===

    def add_arguments(self, parser):
        """Flags of this script beyond the Config's (e.g. --eval-only)."""

    def run_without_training(self, args, config):
        """Handles such a flag and returns an exit code, or None to train."""
        return None

    def smoke_config(self, **overrides):
        values = dict(self.smoke_overrides)
        values.update({k: v for k, v in overrides.items() if v is not None})
        return self.Config(**values)

    def run_name(self, config):
        raise NotImplementedError

    def patience(self, config):
        return getattr(config, "patience", None)

    # === Data ===

    def load_data(self, config, log, smoke=False):
        """Everything the run needs from disk; nothing is written yet.
        ``smoke``: the bundled samples unless the config names a data source."""
        raise NotImplementedError

    def data_source(self, data):
        """What was actually loaded (recorded in config.json and metrics.json)."""
        return getattr(data, "source", None)

    def split_sizes(self, config, data):
        """``{split: examples}`` of the data the run uses, for its first
        lines. The default reads ``data.splits`` (``{split: (images, ...)}``
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

    def check_inputs(self, config, data):
        """Raises `UsageError` for a config that cannot run on ``data``."""

    def prepare(self, run, data):
        """A stage before the model (e.g. a saliency network); resumable."""

    def train_dataset(self, config, data, epoch):
        raise NotImplementedError

    def valid_dataset(self, config, data):
        return None

    def samples_per_epoch(self, config, data):
        raise NotImplementedError

    # === Model and training ===

    def build_model(self, config, data):
        """The compiled model (called inside the strategy's scope)."""
        raise NotImplementedError

    def example_batch(self, config, data):
        """A small ``(x, y)`` batch that builds the compiled loss and metrics
        before ``fit`` (a distributed first batch cannot), or None."""
        return None

    def learning_rate(self, config, epoch):
        """The learning rate of ``epoch``, or None to leave it alone."""
        return None

    def epoch_callbacks(self, run, data):
        return []

    def custom_training(self, run, data, distribution):
        """Returns ``(model, summary)`` to replace the epoch loop (e.g. a
        hyperparameter search), or None for the standard loop."""
        return None

    def summarize_log(self, rows):
        """Per-epoch curves for metrics.json from the committed log rows."""
        return {}

    def after_training(self, model, run, data):
        """Post-training step on the final weights (must be repeatable: a
        rerun after a kill starts it again from the same checkpoint)."""

    # === Results ===

    def evaluate(self, model, run, data):
        raise NotImplementedError

    def headline(self, metrics):
        """The lines of the final summary that give a run's result.

        The default shows the test errors (``test_*error`` in percent), a
        ``methods`` table of hole PSNR / SSIM (``{method: {"hole_psnr",
        "ssim"}}``, the inpainter and its baselines), the winner of a
        search (``best_trial`` of ``trials``) and the best epoch."""
        return headline_lines(metrics)

    def write_outputs(self, model, run, data, metrics):
        """Figures (called on the chief only)."""

    def export(self, model, run, data, path):
        raise NotImplementedError


def check_backend(experiment):
    """The Keras backend, if ``experiment`` trains on it (else `UsageError`)."""
    backend = keras.backend.backend()
    if backend not in experiment.backends:
        script = os.path.basename(sys.argv[0] or "") or experiment.name
        if not script.startswith("train_"):
            script = experiment.name
        raise UsageError(
            f"{script} trains on {' or '.join(experiment.backends)} only. "
            f"Received: KERAS_BACKEND={backend!r}. Set KERAS_BACKEND="
            f"{experiment.backends[0]} (or unset it)."
        )
    return backend


def jit_compile_for_backend(flag, run_eagerly=False):
    """`jit_compile` for ``model.compile``: ``flag`` on TensorFlow (XLA, off
    by default since it is slower on CPU for these models); always on for
    JAX, where `jax.jit` is the only compiled path (without it every op of
    the step is dispatched one by one: about 6x slower even on CPU for the
    RNN-SPN smoke run, far more on a GPU), unless the step runs eagerly."""
    if run_eagerly:
        return False
    return True if keras.backend.backend() == "jax" else bool(flag)


def check_batch_size(batch_size, available, what, remedy):
    """`UsageError` when one global batch needs more examples than there are."""
    if batch_size > available:
        raise UsageError(
            f"--batch-size {batch_size} is larger than the {available} {what}. {remedy}"
        )


# === The run directory ===


def check_output_dir(path, flag="--output-dir"):
    """A directory we can create: no regular file on the way."""
    probe = os.path.abspath(path)
    while probe and not os.path.exists(probe):
        parent = os.path.dirname(probe)
        if parent == probe:
            break
        probe = parent
    if os.path.exists(probe) and not os.path.isdir(probe):
        raise UsageError(
            f"{flag} must be a directory, but {probe!r} is a regular file. "
            f"Received: {flag} {path!r}. Choose another {flag}."
        )
    if os.path.isdir(probe) and not os.access(probe, os.W_OK):
        raise UsageError(
            f"{flag} {path!r} cannot be created: {probe!r} is not writable. "
            f"Choose another {flag}."
        )


def _clear_run_dir(directory):
    for name in os.listdir(directory):
        if name == run_lock.LOCK_NAME:
            continue  # this process's hold on the directory
        path = os.path.join(directory, name)
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        else:
            os.remove(path)


def search_trials(directory):
    """The trial folders (``trial_<id>``) of the keras-tuner search in
    ``directory/tuner``, sorted; ``[]`` without one."""
    tuner = os.path.join(directory, TUNER_DIR)
    try:
        names = os.listdir(tuner)
    except OSError:
        return []
    return sorted(
        name
        for name in names
        if name.startswith("trial_") and os.path.isdir(os.path.join(tuner, name))
    )


def inspect_run_dir(directory, config, overwrite=False, log=print, clear=True):
    """Decides what to do with ``directory`` before any data loads.

    Returns ``"finished"`` (metrics.json of this config exists), ``"resume"``
    (the same config) or ``"new"``; raises `UsageError` for a directory that
    holds work (completed epochs, a finished run, or trials of a search in
    ``tuner/``) of another config, without ``overwrite``. Nothing is
    written here except what ``overwrite`` or a reuse removes.

    The `EXTENT_SETTINGS` (``max_trials``) do not make a config another: a
    search whose ``max_trials`` changed is resumed, and a finished search
    whose ``max_trials`` is now larger than its number of trials continues
    (its metrics.json, rewritten when the search ends, is removed; every
    trial is kept).

    ``clear``: whether this process removes a run that ``overwrite`` or a
    reuse discards (the chief; another worker of the cluster leaves the
    directory to it, and with ``overwrite`` trains anew whatever it finds).
    """
    check_output_dir(directory)
    if overwrite and not clear:
        return "new"
    config_path = os.path.join(directory, CONFIG_FILE)
    if not os.path.isfile(config_path):
        if os.path.isdir(directory) and overwrite:
            _clear_run_dir(directory)
        return "new"
    current = config_to_dict(config)
    try:
        previous = {
            k: v for k, v in read_json(config_path).items() if k not in RUN_KEYS
        }
    except (OSError, ValueError):
        previous = {}
    if previous:
        # A setting added to the Config after this run started: the run was
        # trained with what its default reproduces (new settings default to
        # the earlier behaviour), so it is not a difference.
        defaults = _field_defaults(config)
        previous = {
            **{k: defaults[k] for k in current if k not in previous and k in defaults},
            **previous,
        }
    differing = config_diff(previous, current)
    extent = [d for d in differing if d[0] in EXTENT_SETTINGS]
    differing = [d for d in differing if d[0] not in EXTENT_SETTINGS]
    checkpoints = EpochCheckpoints(os.path.join(directory, CHECKPOINT_DIR))
    metrics_path = os.path.join(directory, METRICS_FILE)
    finished = os.path.isfile(metrics_path)
    trials = search_trials(directory)
    work = []
    if finished:
        work.append("a finished run")
    elif checkpoints.has_completed_epoch():
        work.append("completed epochs")
    if trials:
        work.append(
            f"a search with {len(trials)} trial{'s' if len(trials) != 1 else ''} "
            f"({TUNER_DIR}/)"
        )
    if overwrite:
        log(f"note: --overwrite: removing the previous run in {directory}.")
        _clear_run_dir(directory)
        return "new"
    if not differing:
        if not (extent and trials):
            return "finished" if finished else "resume"
        change = ", ".join(f"{k}: {a!r} -> {b!r}" for k, a, b in extent)
        more = current.get("max_trials") is None or current["max_trials"] > len(trials)
        if finished and not more:
            return "finished"
        if clear:
            log(
                f"note: {directory}: {change}; continuing its search of "
                f"{len(trials)} trial{'s' if len(trials) != 1 else ''} (every "
                "trial is kept)."
            )
            if finished:
                # Written again when the continued search ends.
                os.remove(metrics_path)
        return "resume"
    details = ", ".join(f"{k}: {a!r} -> {b!r}" for k, a, b in differing[:8])
    if len(differing) > 8:
        details += f", and {len(differing) - 8} more"
    if work:
        raise UsageError(
            f"{directory} holds {' and '.join(work)} with a different config "
            f"({details}). Rerun with the same flags to resume it, choose another "
            "--output-dir, or pass --overwrite to discard it."
        )
    if clear:
        log(
            f"note: {directory} holds no completed epoch; reusing it with the new "
            f"config ({details})."
        )
        _clear_run_dir(directory)
    return "new"


def _field_defaults(config):
    """``{field: default}`` of a Config dataclass, in config.json form."""
    values = {f.name: field_default(f) for f in dataclasses.fields(config)}
    return json.loads(json.dumps(values, default=list))


@contextlib.contextmanager
def dtype_policy_scope(config):
    """Builds and trains under ``config.dtype_policy`` where the experiment
    has that setting (e.g. ``"mixed_bfloat16"``); restores the global policy
    afterwards."""
    policy = getattr(config, "dtype_policy", None)
    if policy is None:
        yield
        return
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(policy)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def load_config(config_cls, directory):
    """The Config stored in ``directory/config.json`` (run keys dropped)."""
    stored = read_json(os.path.join(directory, CONFIG_FILE))
    return config_cls(**{k: v for k, v in stored.items() if k not in RUN_KEYS})


def _write_log_csv(path, rows):
    keys = sorted({k for row in rows for k in row} - {"epoch"})
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=["epoch", *keys], lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow(row)
    with atomic_path(path) as tmp:
        with open(tmp, "w") as f:
            f.write(buffer.getvalue())
            f.flush()
            os.fsync(f.fileno())


def read_log(directory):
    """The committed per-epoch rows of a run (from its newest checkpoint)."""
    record = EpochCheckpoints(os.path.join(directory, CHECKPOINT_DIR)).latest(
        log=lambda _: None
    )
    return [] if record is None else list(record.get("log", []))


# === Callbacks ===


class _NaNGuard(keras.callbacks.Callback):
    """Stops training at the first non-finite loss, naming epoch and step."""

    def __init__(self, run, last_good):
        super().__init__()
        self.run = run
        self.last_good = last_good
        self.epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        for key, value in (logs or {}).items():
            if "loss" not in key:
                continue
            try:
                value = float(python_scalar(value))
            except (TypeError, ValueError):
                continue
            if not math.isfinite(value):
                kept = (
                    f"the checkpoint of epoch {self.last_good} in "
                    f"{self.run.path(CHECKPOINT_DIR)} is intact and a rerun "
                    "resumes from it"
                    if self.last_good
                    else "no epoch had completed, so no checkpoint was written"
                )
                raise TrainingDiverged(
                    f"training diverged: {key} became {value} at epoch "
                    f"{self.epoch + 1}, step {batch + 1}; {kept}. Lower the "
                    "learning rate (--set learning_rate=...) or change --seed."
                )


class _CrashPoints(keras.callbacks.Callback):
    """``batch:<epoch>``: a kill after the first batch of an epoch (tests)."""

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if batch == 0:
            crash_point(f"batch:{self.epoch}")

    def on_test_begin(self, logs=None):
        crash_point(f"validation:{self.epoch}")


class _SyncReplicaVariables(keras.callbacks.Callback):
    """Before each validation, the replicas' own copies of the batch-norm
    moving statistics become their mean (`Distribution.sync_replica_variables`),
    so that every replica validates the weights the checkpoint will hold."""

    def __init__(self, distribution):
        super().__init__()
        self.distribution = distribution

    def on_test_begin(self, logs=None):
        self.distribution.sync_replica_variables(self.model)


class _ProgressBar(keras.callbacks.Callback):
    """On a terminal, ``Epoch e/E`` of the whole run (Keras' own header would
    say ``e/e``, since the runner calls ``fit`` once per epoch) and a
    progress bar of the epoch's steps; `EpochProgress` then prints the
    epoch's line."""

    def __init__(self, epochs):
        super().__init__()
        self.epochs = epochs
        self.bar = None

    def on_epoch_begin(self, epoch, logs=None):
        print(f"Epoch {epoch + 1}/{self.epochs}", flush=True)
        self.bar = keras.utils.Progbar(target=None, unit_name="step")

    def on_train_batch_end(self, batch, logs=None):
        values = [
            (k, float(python_scalar(v))) for k, v in (logs or {}).items() if "loss" in k
        ]
        self.bar.update(batch + 1, values=values)

    def on_epoch_end(self, epoch, logs=None):
        print(flush=True)


class _EpochTimer(keras.callbacks.Callback):
    """Training seconds of the epoch (validation excluded)."""

    def __init__(self):
        super().__init__()
        self.start = self.train_end = None

    def on_epoch_begin(self, epoch, logs=None):
        self.start, self.train_end = time.perf_counter(), None

    def on_test_begin(self, logs=None):
        if self.start is not None and self.train_end is None:
            self.train_end = time.perf_counter()

    def seconds(self):
        end = self.train_end if self.train_end is not None else time.perf_counter()
        return end - self.start


def _tensorboard_callback(run):
    import importlib.util

    if not run.is_chief or importlib.util.find_spec("tensorboard") is None:
        return None
    if keras.backend.backend() != "tensorflow":
        if importlib.util.find_spec("tensorflow") is None:
            return None
    return keras.callbacks.TensorBoard(run.path("tensorboard"), write_graph=False)


# Bookkeeping columns of log.csv that the epoch line leaves out (it shows
# the epoch's time itself).
_NOT_IN_EPOCH_LINE = (
    "epoch",
    "train_seconds",
    "train_samples_per_second",
    "learning_rate",
)


# === Early stopping ===


def _improved(value, best, mode):
    if not math.isfinite(value):
        return False
    if best is None:
        return True
    return value > best if mode == "max" else value < best


# === What a run prints ===


def _say(text):
    """A line of the run's own report (stdout; notes go to stderr)."""
    print(text, flush=True)


def _setup_line(backend, distribution, hardware):
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


def _data_lines(source, sizes):
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
    """`Experiment.headline`'s default (see there)."""
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


def _print_summary(experiment, directory, metrics, nested, distribution, earlier=False):
    """The run's last lines: the time, the headline scores, and where each
    output is (a run inside another: one line). ``earlier``: the run had
    finished before this process started."""
    wall = metrics.get("wall_seconds")
    took = f" in {format_seconds(wall)}" if _number(wall) else ""
    if earlier:
        took = " earlier" + took
    if nested:
        _say(f"finished {os.path.abspath(directory)}{took}")
        return
    if not distribution.is_chief:
        _say(
            f"worker {distribution.worker_index} finished{took}; the chief writes "
            f"the run to {os.path.abspath(directory)}"
        )
        return
    _say(f"Finished{took}. Results:")
    for line in experiment.headline(metrics):
        _say("  " + line)
    _say(f"Outputs in {os.path.abspath(directory)}:")
    rows = run_outputs(directory)
    width = max((len(name) for name, _ in rows), default=0)
    for name, what in rows:
        _say(f"  {name:<{width}}  {what}".rstrip())


# === The run ===

# Runs of run_experiment in progress in this process (a search runs its
# trials inside its own run): a run inside another prints less.
_RUNS_IN_PROGRESS = 0


def _ensure_built(model, example):
    """Builds the optimizer(s), so that a checkpoint's optimizer state loads,
    and the compiled loss and metrics from ``example`` (under a strategy, Keras
    cannot build them from the first, distributed, batch)."""
    optimizer = getattr(model, "optimizer", None)
    if optimizer is not None and not optimizer.built:
        optimizer.build(model.trainable_variables)
    if example is not None:
        x, y = example
        y_pred = model(x, training=False)
        model.compute_loss(x=x, y=y, y_pred=y_pred)
        model.compute_metrics(x, y, y_pred)
        model.reset_metrics()


def _set_learning_rate(model, rate):
    optimizer = model.optimizer
    optimizer.learning_rate = rate


def run_experiment(
    experiment,
    config,
    output_dir,
    distribution=None,
    *,
    overwrite=False,
    smoke=False,
    verbose=None,
    log=None,
    stop_after_epochs=None,
):
    """Trains, evaluates and writes one run of ``experiment``; returns its
    metrics dict. See the module docstring for every step.

    ``stop_after_epochs``: train only until this many epochs of the run are
    committed, then return ``None`` without evaluating (the run stays
    resumable; a later call without it, or with a larger value, continues).
    For training in stretches, e.g. a campaign over several sessions.
    """
    log = log or (lambda message: print(message, file=sys.stderr, flush=True))
    distribution = distribution or Distribution("default")
    backend = check_backend(experiment)
    if getattr(config, "export", False) and backend != "tensorflow":
        raise UsageError(
            "--export writes a TensorFlow SavedModel and needs "
            f"KERAS_BACKEND=tensorflow. Received: KERAS_BACKEND={backend!r}. Drop "
            "--export (model.keras is written on every backend) or switch backends."
        )
    if stop_after_epochs is not None and (
        isinstance(stop_after_epochs, bool)
        or not isinstance(stop_after_epochs, int)
        or stop_after_epochs < 1
    ):
        raise UsageError(
            "--stop-after-epochs must be a positive whole number of epochs. "
            f"Received: {stop_after_epochs!r}."
        )
    global _RUNS_IN_PROGRESS
    nested = _RUNS_IN_PROGRESS > 0  # e.g. a trial of a search
    _RUNS_IN_PROGRESS += 1
    try:
        with _hold_run_dir(output_dir, distribution, log):
            return _run(
                experiment,
                config,
                output_dir,
                distribution,
                backend,
                overwrite=overwrite,
                smoke=smoke,
                verbose=verbose,
                log=log,
                stop_after_epochs=stop_after_epochs,
                nested=nested,
            )
    finally:
        _RUNS_IN_PROGRESS -= 1


@contextlib.contextmanager
def _hold_run_dir(directory, distribution, log):
    """The run directory belongs to one process at a time (`run_lock`): the
    chief takes it before anything is read or written, and a busy one is
    refused (`RunDirectoryBusy`). Under MultiWorkerMirroredStrategy every
    worker learns whether the chief could (a collective), so that the
    others stop with it instead of waiting for it."""
    check_output_dir(directory)
    lock = failure = None
    if distribution.is_chief:
        try:
            lock = run_lock.acquire(directory, log=log)
        except run_lock.DirectoryBusy as err:
            failure = RunDirectoryBusy(str(err), err.directory, err.holder)
        except Exception as err:  # noqa: BLE001  Raised below, on every worker.
            failure = err
    if not distribution.all_agree(failure is None):
        if failure is not None:
            raise failure
        raise RunDirectoryBusy(
            f"the chief of this cluster could not take the run directory "
            f"{directory} (its message says why: another process holds it, or it "
            "cannot be written); this worker stops with it.",
            directory,
        )
    try:
        yield
    finally:
        if lock is not None:
            lock.release()


def _run(
    experiment,
    config,
    output_dir,
    distribution,
    backend,
    *,
    overwrite,
    smoke,
    verbose,
    log,
    stop_after_epochs,
    nested,
):
    state = inspect_run_dir(
        output_dir, config, overwrite, log, clear=distribution.is_chief
    )
    if state == "finished":
        metrics = read_json(os.path.join(output_dir, METRICS_FILE))
        _say(
            f"run directory: {os.path.abspath(output_dir)} is complete (trained "
            "earlier; --overwrite trains it again)"
        )
        if not nested:
            _say(
                _setup_line(
                    metrics.get("backend"),
                    metrics.get("distribution"),
                    metrics.get("hardware"),
                )
            )
            for line in _data_lines(metrics.get("data_source"), {}):
                _say(line)
        _print_summary(
            experiment, output_dir, metrics, nested, distribution, earlier=True
        )
        return metrics

    from cram_keras.platform_info import describe

    _say(
        f"run directory: {os.path.abspath(output_dir)} "
        f"({'resuming' if state == 'resume' else 'new run'})"
    )
    if not nested:
        _say(_setup_line(backend, distribution.describe(), describe()))
    start = time.perf_counter()
    data = experiment.load_data(config, log, smoke)
    experiment.check_inputs(config, data)
    source = experiment.data_source(data)
    source = source.to_dict() if hasattr(source, "to_dict") else source
    for line in _data_lines(source, experiment.split_sizes(config, data)):
        _say(line)

    run = Run(output_dir, config, distribution, smoke=smoke, log=log)
    if run.is_chief:
        os.makedirs(output_dir, exist_ok=True)
        write_json(
            run.path(CONFIG_FILE),
            dict(config_to_dict(config), data_source=source),
        )
    experiment.prepare(run, data)
    with dtype_policy_scope(config):
        custom = None
        with distribution.scope():
            custom = experiment.custom_training(run, data, distribution)
        if custom is not None:
            if stop_after_epochs is not None:
                log(
                    f"note: {experiment.name} trains this configuration in its own "
                    "loop; --stop-after-epochs does not apply and is ignored."
                )
            model, summary = custom
        else:
            model, summary = _train(
                experiment,
                run,
                data,
                distribution,
                verbose,
                start,
                stop_after_epochs,
                # Another worker resumes only what the chief resumes: with
                # --overwrite it may look before the chief has cleared the
                # directory.
                restore=run.is_chief or state == "resume",
            )
            if "_paused_at" in summary:
                log(
                    f"paused: {output_dir} has {summary['_paused_at']} of {config.epochs} "
                    "epochs; run the same command again (without --stop-after-epochs, "
                    "or with a larger value) to continue."
                )
                return None

        crash_point("after_fit")
        experiment.after_training(model, run, data)
        crash_point("after_training")
        metrics = experiment.evaluate(model, run, data)
        crash_point("after_evaluate")
        metrics.update(summary)
        metrics.update(
            backend=backend,
            distribution=distribution.describe(),
            data_source=source,
            hardware=describe(),
        )
        if run.is_chief:
            with atomic_path(run.path("model.keras")) as tmp:
                model.save(tmp)
            experiment.write_outputs(model, run, data, metrics)
            crash_point("after_outputs")
            if getattr(config, "export", False):
                _export(experiment, model, run, data)
                crash_point("after_export")
        else:
            worker_dir = run.path("workers", f"worker-{distribution.worker_index}")
            os.makedirs(worker_dir, exist_ok=True)
            with atomic_path(os.path.join(worker_dir, "final.weights.h5")) as tmp:
                model.save_weights(tmp)
        metrics["wall_seconds"] = summary.get("train_wall_seconds", 0.0) + (
            time.perf_counter()
            - start
            - summary.get("_this_process_train_seconds", 0.0)
        )
        metrics.pop("_this_process_train_seconds", None)
        if run.is_chief:
            write_json(run.path(METRICS_FILE), metrics)
        _print_summary(experiment, output_dir, metrics, nested, distribution)
        return metrics


def _export(experiment, model, run, data):
    final = run.path("saved_model")
    tmp = run.path(".saved_model.tmp")
    if os.path.exists(tmp):
        shutil.rmtree(tmp)
    experiment.export(model, run, data, tmp)
    if os.path.exists(final):
        shutil.rmtree(final)
    os.replace(tmp, final)


def _train(
    experiment, run, data, distribution, verbose, start, stop_after=None, restore=True
):
    """The epoch loop; returns ``(model, summary)``, the summary only
    ``{"_paused_at": epochs done}`` when it stopped at ``stop_after`` epochs
    before the run finished. ``restore``: resume from the newest checkpoint
    (else start from the initial weights)."""
    config = run.config
    checkpoints = EpochCheckpoints(run.path(CHECKPOINT_DIR), write=run.is_chief)
    keras.utils.set_random_seed(int(config.seed))  # the initial weights
    with distribution.scope():
        model = experiment.build_model(config, data)
        _ensure_built(model, experiment.example_batch(config, data))
    distribution.prepare_model(model)
    record = (
        checkpoints.latest(load=model.load_weights, log=run.log) if restore else None
    )
    if record is not None:
        if record.get("finished"):
            run.log(f"note: training in {run.directory} had finished; evaluating.")
        else:
            run.log(
                f"note: resuming {run.directory} after epoch {record['epoch'] + 1} "
                f"of {config.epochs}."
            )
    rows = list(record.get("log", [])) if record else []
    early = dict(
        (record or {}).get(
            "early_stopping",
            {"best": None, "best_epoch": None, "wait": 0, "stopped_epoch": None},
        )
    )
    train_seconds_before = float((record or {}).get("train_wall_seconds", 0.0))
    first_epoch = 0 if record is None else record["epoch"] + 1
    finished = bool(record and record.get("finished"))
    patience = experiment.patience(config) if experiment.monitor else None
    interactive = sys.stdout.isatty() if verbose is None else verbose == 1
    valid = experiment.valid_dataset(config, data)
    samples = experiment.samples_per_epoch(config, data)
    loop_start = time.perf_counter()
    epoch = first_epoch
    limit = config.epochs if stop_after is None else min(config.epochs, stop_after)
    progress = EpochProgress(config.epochs, until=limit)
    progress.start()
    while not finished and epoch < limit:
        keras.utils.set_random_seed(epoch_seed(config.seed, epoch))
        rate = experiment.learning_rate(config, epoch)
        if rate is not None:
            _set_learning_rate(model, rate)
        timer = _EpochTimer()
        callbacks = [
            timer,
            _NaNGuard(run, epoch if record else 0),
            _CrashPoints(),
        ]
        if interactive:
            callbacks.append(_ProgressBar(config.epochs))
        if distribution.replicas > 1:
            callbacks.append(_SyncReplicaVariables(distribution))
        tensorboard = _tensorboard_callback(run)
        if tensorboard is not None:
            callbacks.append(tensorboard)
        callbacks += experiment.epoch_callbacks(run, data)
        history = model.fit(
            experiment.train_dataset(config, data, epoch),
            validation_data=valid,
            initial_epoch=epoch,
            epochs=epoch + 1,
            callbacks=callbacks,
            shuffle=False,  # the epoch's dataset is already in its epoch order
            verbose=0,  # `progress` reports the run's epochs
        )
        # Also without a validation pass: the checkpoint holds the replicas'
        # mean statistics, which every worker then has.
        distribution.sync_replica_variables(model)
        seconds = timer.seconds()
        row = {"epoch": epoch}
        for key, values in history.history.items():
            if values:
                row[key] = float(python_scalar(values[-1]))
        row["train_seconds"] = seconds
        row["train_samples_per_second"] = samples / seconds if seconds > 0 else None
        if rate is not None:
            row["learning_rate"] = float(rate)
        rows.append(row)

        improved = False
        if experiment.monitor:
            if experiment.monitor not in row:
                raise KeyError(
                    f"{experiment.name} monitors {experiment.monitor!r}, which is "
                    f"not among the logged values {sorted(row)}."
                )
            value = row[experiment.monitor]
            if _improved(value, early["best"], experiment.monitor_mode):
                early.update(best=value, best_epoch=epoch, wait=0)
                improved = True
            else:
                early["wait"] += 1
                if patience is not None and early["wait"] >= patience:
                    early["stopped_epoch"] = epoch
        finished = epoch + 1 >= config.epochs or early["stopped_epoch"] is not None
        train_wall = train_seconds_before + time.perf_counter() - loop_start
        record = checkpoints.commit(
            epoch,
            model.save_weights,
            {
                "log": rows,
                "early_stopping": early,
                "train_wall_seconds": train_wall,
                "finished": finished,
            },
            best_improved=improved,
            previous=record,
        )
        if run.is_chief:
            _write_log_csv(run.path(LOG_FILE), rows)
        progress.epoch_end(
            epoch,
            {k: v for k, v in row.items() if k not in _NOT_IN_EPOCH_LINE},
            last=finished,
        )
        epoch += 1

    if not finished:
        return model, {"_paused_at": len(rows)}
    if distribution.workers > 1:
        # Only the chief writes checkpoints, so only its records name the
        # best weights: the other workers wait until it has committed the
        # last epoch and read its record, so that every worker restores the
        # same weights.
        distribution.barrier()
        if not run.is_chief:
            record = checkpoints.latest(log=run.log)
    if experiment.monitor and record is not None and record.get("best_weights"):
        model.load_weights(checkpoints.path(record, "best_weights"))
    speeds = [
        r["train_samples_per_second"] for r in rows if r.get("train_samples_per_second")
    ]
    steady = speeds[1:] or speeds
    summary = {
        "epochs": len(rows),
        "best_epoch": early.get("best_epoch"),
        "stopped_early": early.get("stopped_epoch") is not None,
        experiment.speed_key: float(np.median(steady)) if steady else None,
        "train_wall_seconds": train_seconds_before + time.perf_counter() - loop_start,
        "_this_process_train_seconds": time.perf_counter() - loop_start,
    }
    summary.update(experiment.summarize_log(rows))
    del start
    return model, summary
