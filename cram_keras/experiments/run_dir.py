"""The run directory: what a run keeps there, and what a run that starts
finds there.

A run owns ``config.json`` (its resolved config and the data it used),
``checkpoints/`` (`cram_keras.training.checkpoint`), ``log.csv`` (one row
per committed epoch, rewritten from the checkpoint's rows), ``metrics.json``
(written last: its presence means done) and, for a search, ``tuner/``.
Before anything is read or written the directory is taken for this process
(`hold_run_dir`), then `inspect_run_dir` decides whether the run is new,
resumed or finished.
"""

import contextlib
import contextvars
import csv
import dataclasses
import io
import json
import os
import shutil

from cram_keras.experiments.config import config_diff, config_to_dict, field_default
from cram_keras.experiments.errors import RunDirectoryBusy, UsageError
from cram_keras.training import run_lock
from cram_keras.training.checkpoint import EpochCheckpoints
from cram_keras.utils import CACHE_VARIABLE, atomic_path, existing_part, read_json

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


# What the refusal of a run directory that holds another config's work tells
# the user to do: the scripts' flags, or those of the caller that chose the
# directory (the study driver: `remedy`).
_REMEDY = contextvars.ContextVar(
    "remedy", default="choose another --output-dir, or pass --overwrite to discard it"
)


@contextlib.contextmanager
def remedy(text):
    """Within it, a run directory with another config's work is refused
    with ``"Rerun with the same flags to resume it, <text>."``."""
    token = _REMEDY.set(text)
    try:
        yield
    finally:
        _REMEDY.reset(token)


def check_output_dir(path, flag="--output-dir"):
    """A directory we can create: no regular file on the way."""
    probe = existing_part(path)
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


def check_cache_variable():
    """``$CRAM_KERAS_CACHE``, where set, must be a folder that can be created
    and written: the generated data sets, the compiled kernel and JAX's
    compiled steps go there, whatever ``--cache-dir`` says about the first.
    The folder is created here (as the first of them would create it), so
    that what the system refuses is said now, not in the middle of a run."""
    value = os.environ.get(CACHE_VARIABLE)
    if not value:
        return
    probe = existing_part(value)
    if os.path.exists(probe) and not os.path.isdir(probe):
        reason = f"{probe!r} is a regular file"
    else:
        try:
            os.makedirs(value, exist_ok=True)
        except OSError as error:
            reason = f"it cannot be created ({error.strerror})"
        else:
            if os.access(value, os.W_OK):
                return
            reason = "it is not writable"
    raise UsageError(
        f"{CACHE_VARIABLE} must name a folder that can be created and written "
        f"(the cache of generated data sets, the compiled kernel and JAX's "
        f"compiled steps), but {reason}. Received: {CACHE_VARIABLE}={value!r}. "
        f"Set it to another folder, or unset it for ~/.cache/cram_keras."
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
            f"({details}). Rerun with the same flags to resume it, "
            f"{_REMEDY.get()}."
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


def load_config(config_cls, directory):
    """The Config stored in ``directory/config.json`` (run keys dropped)."""
    stored = read_json(os.path.join(directory, CONFIG_FILE))
    return config_cls(**{k: v for k, v in stored.items() if k not in RUN_KEYS})


def write_log_csv(path, rows):
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


@contextlib.contextmanager
def hold_run_dir(directory, distribution, log):
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
