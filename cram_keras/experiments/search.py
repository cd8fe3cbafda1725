"""A search whose trials are runs (``--tune``): keras-tuner samples the
settings (`cram_keras.training.tuner.run_search`), every trial trains as an
ordinary run of a trial experiment in ``trials/<id>`` (resumable, scored
like any run), and the winner's model is restored from its run, not
trained again. An experiment's `custom_training` returns `search_runs`.
"""

import dataclasses
import time

from cram_keras.experiments.config import config_to_dict
from cram_keras.experiments.errors import UsageError
from cram_keras.experiments.experiment import Run, check_one_worker_search
from cram_keras.experiments.run_dir import CHECKPOINT_DIR
from cram_keras.experiments.runner import run_experiment
from cram_keras.training.callbacks import TrainingDiverged
from cram_keras.training.checkpoint import EpochCheckpoints


def search_runs(run, trial, ranges, objective, *, log_scale=()):
    """Runs (or resumes) the search of ``run``, whose Config has ``tune``,
    ``max_trials`` and ``seed``: each trial is a run of the experiment
    ``trial`` with the Config fields of ``ranges`` (``{field: [low, high]}``,
    those in ``log_scale`` sampled on a log scale) set to its values and
    ``tune`` off, and the trial whose metrics.json has the highest
    ``objective`` wins. A diverged trial counts as failed.

    Returns ``(model, summary)`` (`Experiment.custom_training`): the winning
    trial's model with the weights and optimizer state of its last epoch,
    and its values, trial, objective, epochs and the search's wall time.
    Writes trials.csv, trials.json and best_config.json.
    """
    from cram_keras.training import tuner as tuning

    config = run.config
    check_one_worker_search(run.distribution)
    start = time.perf_counter()

    def trial_config(values):
        return dataclasses.replace(config, tune=False, **values)

    def train_trial(trial_id, values):
        metrics = run_experiment(
            trial,
            trial_config(values),
            run.path(tuning.trial_directory(trial_id)),
            run.distribution,
            smoke=run.smoke,
            log=run.log,
        )
        return {
            objective: metrics[objective],
            "epochs": metrics["epochs"],
            "seconds": metrics["wall_seconds"],
        }

    best, values, rows = tuning.run_search(
        train_trial,
        ranges,
        objective,
        run.directory,
        log=log_scale,
        max_trials=config.max_trials,
        seed=config.seed,
        failed_errors=(TrainingDiverged,),
        best_config=lambda values: config_to_dict(trial_config(values)),
        write=run.is_chief,
    )
    trial_dir = tuning.trial_directory(best["trial_id"])
    # The winner's final weights and optimizer state, from its last epoch.
    winner = Run(run.path(trial_dir), trial_config(values), run.distribution)
    winner.data = run.data
    model = trial.build_model(winner)
    checkpoints = EpochCheckpoints(winner.path(CHECKPOINT_DIR), write=False)
    if checkpoints.latest(load=model.load_weights, log=run.log) is None:
        raise RuntimeError(
            f"Trial {best['trial_id']} completed, but {winner.directory} holds "
            "no epoch checkpoint to restore it from."
        )
    summary = dict(
        values,
        best_trial=best["trial_id"],
        best_trial_directory=trial_dir,
        trials=len(rows),
        epochs=best["epochs"],
        train_wall_seconds=sum(row["seconds"] or 0.0 for row in rows),
        _this_process_train_seconds=time.perf_counter() - start,
    )
    summary[objective] = best[objective]
    return model, summary


def held_out_count(n, fraction):
    """How many of ``n`` training images `held_out` holds out: the nearest
    whole number to ``fraction * n``, at least one."""
    return max(1, int(round(fraction * n)))


def held_out(items, fraction, *, purpose="--tune", field="tune_valid_fraction"):
    """``(kept, held_out)``: the last ``fraction`` of ``items`` (at least one)
    held out as validation images (to score the trials of a search, or for
    early stopping); the model trains on the others. ``purpose`` and
    ``field`` name the flag and the config field in the error."""
    n_valid = held_out_count(len(items), fraction)
    if n_valid >= len(items):
        raise UsageError(
            f"{purpose} holds out {n_valid} of the {len(items)} training images as "
            "validation images, which leaves none to train on. Lower "
            f"{field} (--set {field}=...) or raise --n-train."
        )
    return items[:-n_valid], items[-n_valid:]
