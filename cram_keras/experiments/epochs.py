"""The epoch loop of a run: one ``fit`` call per epoch with an
epoch-seeded training order (so a resumed run trains on the same batches as
an uninterrupted one), TensorBoard, a NaN guard that names the epoch and
step, the experiment's learning-rate rule, early stopping, and an atomic
checkpoint commit of weights, optimizer state, log rows and wall clock;
``log.csv`` is rewritten from the committed rows, so it holds each
completed epoch exactly once. The model is built inside the distribution
strategy's scope and restored from the newest intact epoch checkpoint.
"""

import math
import sys
import time

import keras
import numpy as np

from cram_keras.experiments.run_dir import CHECKPOINT_DIR, LOG_FILE, write_log_csv
from cram_keras.training import callbacks, workarounds
from cram_keras.training.checkpoint import EpochCheckpoints
from cram_keras.training.progress import EpochProgress, EpochTimer, ProgressBar
from cram_keras.utils import epoch_seed

# Bookkeeping columns of log.csv that the epoch line leaves out (it shows
# the epoch's time itself).
_NOT_IN_EPOCH_LINE = (
    "epoch",
    "train_seconds",
    "train_samples_per_second",
    "learning_rate",
)


def train_epochs(experiment, run, *, verbose=None, stop_after=None, restore=True):
    """Builds ``run.model`` and trains it epoch by epoch; returns the summary
    for metrics.json, only ``{"_paused_at": epochs done}`` when it stopped at
    ``stop_after`` epochs before the run finished. ``restore``: resume from
    the newest checkpoint (else start from the initial weights)."""
    config, distribution = run.config, run.distribution
    checkpoints = EpochCheckpoints(run.path(CHECKPOINT_DIR), write=run.is_chief)
    keras.utils.set_random_seed(int(config.seed))  # the initial weights
    with distribution.scope():
        model = run.model = experiment.build_model(run)
        _ensure_built(model, experiment.example_batch(run))
    workarounds.prepare_for_fit(model, distribution)
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
    monitor = experiment.monitor_for(config)
    patience = getattr(config, "patience", None) if monitor else None
    interactive = sys.stdout.isatty() if verbose is None else verbose == 1
    valid = experiment.valid_dataset(run)
    samples = experiment.samples_per_epoch(run)
    loop_start = time.perf_counter()
    epoch = first_epoch
    limit = config.epochs if stop_after is None else min(config.epochs, stop_after)
    progress = EpochProgress(config.epochs, until=limit)
    progress.start()
    while not finished and epoch < limit:
        keras.utils.set_random_seed(epoch_seed(config.seed, epoch))
        rate = experiment.learning_rate(run, epoch)
        if rate is not None:
            model.optimizer.learning_rate = rate
        timer = EpochTimer()
        history = model.fit(
            experiment.train_dataset(run, epoch),
            validation_data=valid,
            initial_epoch=epoch,
            epochs=epoch + 1,
            callbacks=[
                timer,
                *_run_callbacks(run, epoch if record else 0, interactive),
                *experiment.epoch_callbacks(run),
            ],
            shuffle=False,  # the epoch's dataset is already in its epoch order
            verbose=0,  # `progress` reports the run's epochs
        )
        workarounds.sync_replica_variables(model, distribution)
        seconds = timer.seconds()
        row = {"epoch": epoch}
        for key, values in history.history.items():
            if values:
                row[key] = float(workarounds.python_scalar(values[-1]))
        row["train_seconds"] = seconds
        row["train_samples_per_second"] = samples / seconds if seconds > 0 else None
        if rate is not None:
            row["learning_rate"] = float(rate)
        rows.append(row)

        improved = _early_stopping(experiment, monitor, row, early, patience)
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
            write_log_csv(run.path(LOG_FILE), rows)
        progress.epoch_end(
            epoch,
            {k: v for k, v in row.items() if k not in _NOT_IN_EPOCH_LINE},
            last=finished,
            stops_within=None if patience is None else patience - early["wait"],
        )
        epoch += 1

    if not finished:
        return {"_paused_at": len(rows)}
    workarounds.restore_best_weights(
        model, checkpoints, record, distribution, log=run.log
    )
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
    return summary


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


def _run_callbacks(run, last_good, interactive):
    """The callbacks every run's epoch has besides its timer."""
    found = [
        callbacks.NaNGuard(run.path(CHECKPOINT_DIR), last_good),
        callbacks.CrashPoints(),
    ]
    if interactive:
        found.append(ProgressBar(run.config.epochs))
    found.append(workarounds.SyncReplicaVariables(run.distribution))
    tensorboard = (
        callbacks.tensorboard(run.path("tensorboard")) if run.is_chief else None
    )
    if tensorboard is not None:
        found.append(tensorboard)
    return found


def _early_stopping(experiment, monitor, row, early, patience):
    """Updates ``early`` (best value and epoch, epochs without improvement,
    the epoch it stopped at) from the epoch's ``row`` and the ``monitor``ed
    value in it; returns whether that value improved."""
    if not monitor:
        return False
    if monitor not in row:
        raise KeyError(
            f"{experiment.name} monitors {monitor!r}, which is "
            f"not among the logged values {sorted(row)}."
        )
    value, best = row[monitor], early["best"]
    if math.isfinite(value) and (
        best is None
        or (value > best if experiment.monitor_mode == "max" else value < best)
    ):
        early.update(best=value, best_epoch=row["epoch"], wait=0)
        return True
    early["wait"] += 1
    if patience is not None and early["wait"] >= patience:
        early["stopped_epoch"] = row["epoch"]
    return False
