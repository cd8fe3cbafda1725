"""The one run machinery behind every training script.

An experiment module supplies only what differs (an `Experiment` subclass:
its Config and hooks, `cram_keras.experiments.experiment`);
`run_experiment` owns the rest, the same for every script:

1. the backend check (one line naming the backends the experiment trains on);
2. the run directory (`cram_keras.experiments.run_dir`), first taken for
   this process (another process running in it is refused with
   `RunDirectoryBusy`, exit code 2, before anything is read or written; a
   lock left by a killed run is taken over); then a finished run returns
   its metrics at once; a directory whose config differs is refused if it
   holds work (a completed epoch, a finished run, or trials of a search in
   ``tuner/``; the message names the differing fields and the two ways out:
   ``--output-dir`` or ``--overwrite``) and reused otherwise, so a failed
   first attempt never blocks the corrected command. ``max_trials`` is not
   part of a run's identity: raising it continues a finished search;
3. the data, loaded and checked against the config *before* anything is
   written, so a bad input leaves no half-written run directory;
4. ``config.json`` (the resolved config and the data actually used);
5. the experiment's stage before the model (e.g. a saliency network);
6. the epoch loop (`cram_keras.experiments.epochs`), or the experiment's
   own training (a search);
7. after training (also after a kill during any of these steps, by
   rerunning the same command): the best weights where the experiment
   monitors a validation metric, the experiment's post-training step,
   evaluation, ``model.keras``, figures, the optional SavedModel, and
   ``metrics.json`` last, written atomically: its presence means done.

What a run prints: `cram_keras.experiments.summary`.

Under MultiWorkerMirroredStrategy every worker runs all of it (the
collective steps must match) and only the chief writes and holds the run
directory; the other workers write just
``workers/worker-<i>/final.weights.h5``, and stop with the chief when it
cannot take the directory.
"""

import os
import shutil
import time

from cram_keras.experiments import summary as report
from cram_keras.experiments.config import config_to_dict
from cram_keras.experiments.epochs import train_epochs
from cram_keras.experiments.errors import UsageError
from cram_keras.experiments.experiment import Run, check_backend
from cram_keras.experiments.run_dir import (
    CONFIG_FILE,
    METRICS_FILE,
    hold_run_dir,
    inspect_run_dir,
)
from cram_keras.training.checkpoint import crash_point
from cram_keras.training.distribute import Distribution
from cram_keras.training.hardware_notes import run_notes
from cram_keras.training.precision import dtype_policy_scope
from cram_keras.utils import atomic_path, check_int, read_json, write_json

# Runs of run_experiment in progress in this process (a search runs its
# trials inside its own run): a run inside another prints less.
_RUNS_IN_PROGRESS = 0


# What a paused run of a training script tells the user.
PAUSE_HINT = (
    "run the same command again (without --stop-after-epochs, or with a larger "
    "value) to continue."
)


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
    pause_hint=None,
):
    """Trains, evaluates and writes one run of ``experiment``; returns its
    metrics dict. See the module docstring for every step.

    ``stop_after_epochs``: train only until this many epochs of the run are
    committed, then return ``None`` without evaluating (the run stays
    resumable; a later call without it, or with a larger value, continues).
    For training in stretches, e.g. a campaign over several sessions.
    ``pause_hint``: what the line that says the run paused tells the user to
    do next (default: the training script's flags).
    """
    run = Run(
        output_dir,
        config,
        distribution or Distribution("default"),
        smoke=smoke,
        log=log or report.note,
    )
    backend = check_backend(experiment)
    if getattr(config, "export", False) and backend != "tensorflow":
        raise UsageError(
            "--export writes a TensorFlow SavedModel and needs "
            f"KERAS_BACKEND=tensorflow. Received: KERAS_BACKEND={backend!r}. Drop "
            "--export (model.keras is written on every backend) or switch backends."
        )
    if stop_after_epochs is not None:
        try:
            check_int("stop_after_epochs", stop_after_epochs, low=1)
        except ValueError:
            raise UsageError(
                "--stop-after-epochs must be a positive whole number of epochs. "
                f"Received: {stop_after_epochs!r}."
            ) from None
    global _RUNS_IN_PROGRESS
    nested = _RUNS_IN_PROGRESS > 0  # e.g. a trial of a search
    _RUNS_IN_PROGRESS += 1
    try:
        with hold_run_dir(output_dir, run.distribution, run.log):
            return _run(
                experiment,
                run,
                backend,
                overwrite=overwrite,
                verbose=verbose,
                stop_after_epochs=stop_after_epochs,
                pause_hint=pause_hint or PAUSE_HINT,
                nested=nested,
            )
    finally:
        _RUNS_IN_PROGRESS -= 1


def _run(
    experiment,
    run,
    backend,
    *,
    overwrite,
    verbose,
    stop_after_epochs,
    pause_hint,
    nested,
):
    config, distribution = run.config, run.distribution
    state = inspect_run_dir(
        run.directory, config, overwrite, run.log, clear=run.is_chief
    )
    if state == "finished":
        metrics = read_json(run.path(METRICS_FILE))
        report.print_finished(run.directory, metrics, nested, distribution)
        return metrics

    from cram_keras.platform_info import describe

    report.say(
        f"run directory: {os.path.abspath(run.directory)} "
        f"({'resuming' if state == 'resume' else 'new run'})"
    )
    if not nested:
        report.say(report.setup_line(backend, distribution.describe(), describe()))
    if run.is_chief and not nested:
        for note in run_notes(getattr(config, "dtype_policy", None), backend):
            run.log(note)
    start = time.perf_counter()
    run.data = experiment.load_data(run)
    experiment.check_inputs(run)
    source = getattr(run.data, "source", None)
    source = source.to_dict() if hasattr(source, "to_dict") else source
    for line in report.data_lines(source, report.split_sizes(run.data)):
        report.say(line)

    if run.is_chief:
        os.makedirs(run.directory, exist_ok=True)
        write_json(
            run.path(CONFIG_FILE), dict(config_to_dict(config), data_source=source)
        )
    experiment.prepare(run)
    with dtype_policy_scope(config):
        with distribution.scope():
            custom = experiment.custom_training(run)
        if custom is not None:
            if stop_after_epochs is not None:
                run.log(
                    f"note: {experiment.name} trains this configuration in its own "
                    "loop; --stop-after-epochs does not apply and is ignored."
                )
            run.model, summary = custom
        else:
            summary = train_epochs(
                experiment,
                run,
                verbose=verbose,
                stop_after=stop_after_epochs,
                # Another worker resumes only what the chief resumes: with
                # --overwrite it may look before the chief has cleared the
                # directory.
                restore=run.is_chief or state == "resume",
            )
            if "_paused_at" in summary:
                run.log(
                    f"paused: {run.directory} has {summary['_paused_at']} of "
                    f"{config.epochs} epochs; {pause_hint}"
                )
                return None

        crash_point("after_fit")
        experiment.after_training(run)
        crash_point("after_training")
        metrics = experiment.evaluate(run)
        crash_point("after_evaluate")
        metrics.update(summary)
        metrics.update(
            backend=backend,
            distribution=distribution.describe(),
            data_source=source,
            hardware=describe(),
        )
        _write_outputs(experiment, run, metrics)
        metrics["wall_seconds"] = summary.get("train_wall_seconds", 0.0) + (
            time.perf_counter()
            - start
            - summary.get("_this_process_train_seconds", 0.0)
        )
        metrics.pop("_this_process_train_seconds", None)
        if run.is_chief:
            write_json(run.path(METRICS_FILE), metrics)
        report.print_summary(run.directory, metrics, nested, distribution)
        return metrics


def _write_outputs(experiment, run, metrics):
    """The chief: ``model.keras``, the experiment's figures and, with
    ``export``, the SavedModel; another worker: its final weights."""
    if not run.is_chief:
        worker = run.path("workers", f"worker-{run.distribution.worker_index}")
        os.makedirs(worker, exist_ok=True)
        with atomic_path(os.path.join(worker, "final.weights.h5")) as tmp:
            run.model.save_weights(tmp)
        return
    with atomic_path(run.path("model.keras")) as tmp:
        run.model.save(tmp)
    experiment.write_outputs(run, metrics)
    crash_point("after_outputs")
    if getattr(run.config, "export", False):
        final, tmp = run.path("saved_model"), run.path(".saved_model.tmp")
        if os.path.exists(tmp):
            shutil.rmtree(tmp)
        experiment.export(run, tmp)
        if os.path.exists(final):
            shutil.rmtree(final)
        os.replace(tmp, final)
        crash_point("after_export")
