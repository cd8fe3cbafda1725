"""keras-tuner search over CRAM's number of glimpses and learning rate.

The search is a `keras_tuner.RandomSearch` over

    num_glimpses   integer in [1, 8]                     (uniform)
    learning_rate  float in [1e-5, 1e-3]                 (log-uniform; paper: 1e-4)

maximising the best validation accuracy of each trial. Every trial trains
for the same number of epochs, and the weights of its best validation epoch
are kept (keras-tuner's own checkpoint).

**Why random search, not Hyperband.** Hyperband ranks configurations by their
validation score after a few epochs and stops the worse ones. Both
hyperparameters searched here change how *fast* CRAM learns, not only how
well: a lower learning rate (the paper's 1e-4 included) and more glimpses
(longer back-propagation through the unrolled LSTMs) start slower, and the
paper's claim for the clue is itself about convergence speed. Successive
halving would prune those configurations for the very property under study.
The space is also small (8 glimpse counts x one log-scale rate), where random
search with equal budgets covers it well (Bergstra & Bengio, 2012), and
equal budgets give a trials table whose rows compare like with like.

The search is resumable as any keras-tuner search: the tuner is created with
`overwrite=False` and its project directory holds the oracle state and every
trial; rerunning the same search reloads it, skips finished trials, re-runs
an interrupted one from scratch and continues up to `max_trials` (which may
be raised between runs).

Example:

>>> hypermodel = GlimpseHyperModel(build_model, example_inputs=[x[:2], c[:2]])
>>> tuner = glimpse_search(hypermodel, "runs/cls", max_trials=16)
>>> tuner.search(train, validation_data=valid, epochs=5)
>>> rows = trials_table(tuner)
>>> write_trials_table(rows, "trials.csv", "trials.json")
>>> best_configuration(tuner)  # {"num_glimpses": ..., "learning_rate": ..., ...}
"""

import csv
import os
import time

import keras_tuner as kt
import numpy as np

from cram_keras.utils import atomic_path, read_json, write_json

OBJECTIVE = "val_accuracy"
GLIMPSE_RANGE = (1, 8)
LEARNING_RATE_RANGE = (1e-5, 1e-3)
TABLE_COLUMNS = (
    "trial_id",
    "status",
    "num_glimpses",
    "learning_rate",
    "best_val_error",
    "best_epoch",
    "epochs",
    "seconds",
)


class GlimpseHyperModel(kt.HyperModel):
    """Builds a compiled CRAM classifier for a number of glimpses and a rate.

    Args:
        build_model: callable `(num_glimpses, learning_rate) -> keras.Model`,
            compiled, with `"accuracy"` among its metrics.
        example_inputs: a small batch the model is called on after it is built,
            so that its weights exist and keras-tuner can load a trial's
            checkpoint into it (`tuner.get_best_models()`).
        glimpse_range: `(min, max)` number of glimpses, inclusive (`(1, 8)`).
        learning_rate_range: `(min, max)` Adam learning rate, sampled on a log
            scale (`(1e-5, 1e-3)`).
    """

    def __init__(
        self,
        build_model,
        example_inputs=None,
        glimpse_range=GLIMPSE_RANGE,
        learning_rate_range=LEARNING_RATE_RANGE,
        name="cram",
    ):
        super().__init__(name=name)
        low, high = _check_range("glimpse_range", glimpse_range, integer=True)
        if low < 1:
            raise ValueError(
                "`glimpse_range` must start at 1 or more glimpses. "
                f"Received: glimpse_range={glimpse_range!r}"
            )
        lr_low, lr_high = _check_range("learning_rate_range", learning_rate_range)
        if lr_low <= 0:
            raise ValueError(
                "`learning_rate_range` must be positive (it is sampled on a log "
                f"scale). Received: learning_rate_range={learning_rate_range!r}"
            )
        self.build_model = build_model
        self.example_inputs = example_inputs
        self.glimpse_range = (low, high)
        self.learning_rate_range = (lr_low, lr_high)

    def build(self, hp):
        num_glimpses = hp.Int("num_glimpses", *self.glimpse_range)
        if self.learning_rate_range[0] == self.learning_rate_range[1]:
            learning_rate = hp.Fixed("learning_rate", self.learning_rate_range[0])
        else:
            learning_rate = hp.Float(
                "learning_rate", *self.learning_rate_range, sampling="log"
            )
        model = self.build_model(num_glimpses, learning_rate)
        if self.example_inputs is not None:
            model(self.example_inputs, training=False)
        return model


class _RecordingRandomSearch(kt.RandomSearch):
    """`RandomSearch` that also records, per trial, its wall time and the
    validation value of every epoch (keras-tuner's oracle keeps only the best
    epoch's) in `<project>/trial_records.json`."""

    def run_trial(self, trial, *args, **kwargs):
        start = time.perf_counter()
        histories = super().run_trial(trial, *args, **kwargs)
        objective = self.oracle.objective.name
        per_epoch = [
            [float(v) for v in h.history.get(objective, [])]
            for h in histories
            if hasattr(h, "history")
        ]
        records = trial_records(self.project_dir)
        records[trial.trial_id] = {
            "seconds": time.perf_counter() - start,
            # Mean over executions (one by default), epoch by epoch.
            "per_epoch": [float(np.mean(v)) for v in zip(*per_epoch, strict=False)],
        }
        write_json(os.path.join(self.project_dir, "trial_records.json"), records)
        return histories


def glimpse_search(
    hypermodel,
    directory,
    project_name="tuner",
    max_trials=16,
    seed=0,
    objective=OBJECTIVE,
):
    """A resumable `RandomSearch` (see the module docstring) for `hypermodel`.

    Args:
        hypermodel: a `GlimpseHyperModel`.
        directory: the run directory; the project lives in
            `directory/project_name`.
        project_name: name of the project folder (`"tuner"`).
        max_trials: number of trials in all, counting those of earlier runs.
        seed: seed of the random search.
        objective: logged value to maximise (`"val_accuracy"`).

    Returns:
        The tuner; call `tuner.search(train, validation_data=valid,
        epochs=E, ...)` to run (or resume) the search.
    """
    if (
        isinstance(max_trials, bool)
        or not isinstance(max_trials, int)
        or max_trials < 1
    ):
        raise ValueError(
            f"`max_trials` must be a positive integer. Received: max_trials={max_trials!r}"
        )
    return _RecordingRandomSearch(
        hypermodel,
        objective=kt.Objective(objective, direction="max"),
        max_trials=max_trials,
        seed=seed,
        directory=os.fspath(directory),
        project_name=project_name,
        overwrite=False,
    )


def trial_records(project_dir):
    """`{trial_id: {"seconds", "per_epoch"}}` of the finished trials of a project."""
    path = os.path.join(project_dir, "trial_records.json")
    if not os.path.exists(path):
        return {}
    return read_json(path)


def trials_table(tuner, objective=OBJECTIVE):
    """One row per trial, in the order they started.

    Each row has the `TABLE_COLUMNS` (errors are `1 - objective`, i.e.
    `1 - accuracy`; epochs 0-indexed; `None` where a trial has no value yet)
    plus `val_error_per_epoch` (a list) and, for a failed trial, `message`.
    """
    oracle = tuner.oracle
    records = trial_records(tuner.project_dir)
    order = list(oracle.start_order) + sorted(
        set(oracle.trials) - set(oracle.start_order)
    )
    rows = []
    for trial_id in order:
        trial = oracle.trials[trial_id]
        values = trial.hyperparameters.values
        record = records.get(trial_id, {})
        history = [1.0 - v for v in record.get("per_epoch", [])]
        best_epoch = None
        if history:
            best_epoch = int(min(range(len(history)), key=history.__getitem__))
        row = {
            "trial_id": trial_id,
            "status": str(trial.status),
            "num_glimpses": values.get("num_glimpses"),
            "learning_rate": values.get("learning_rate"),
            # The oracle's score (what it ranks by) is the best epoch's value.
            "best_val_error": (
                1.0 - float(trial.score)
                if trial.score is not None
                else (min(history) if history else None)
            ),
            "best_epoch": best_epoch,
            "epochs": len(history),
            "seconds": record.get("seconds"),
            "val_error_per_epoch": history,
        }
        if trial.message:
            row["message"] = trial.message
        rows.append(row)
    return rows


def write_trials_table(rows, csv_path, json_path):
    """Writes `rows` as CSV (the `TABLE_COLUMNS`) and as JSON (everything)."""
    with atomic_path(csv_path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=TABLE_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow(
                {k: "" if row[k] is None else row[k] for k in TABLE_COLUMNS}
            )
    write_json(json_path, {"trials": rows})


def best_configuration(tuner, objective=OBJECTIVE):
    """The best finished trial: its hyperparameters and validation error.

    Raises:
        RuntimeError: no trial has finished with a value of `objective`
            (every trial failed: their messages are in `trials_table`).
    """
    completed = [
        row
        for row in trials_table(tuner, objective)
        if row["status"] == "COMPLETED" and row["best_val_error"] is not None
    ]
    if not completed:
        raise RuntimeError(
            f"No trial of the search in {tuner.project_dir} completed with a "
            f"value of {objective!r}; see the 'message' of each trial in the "
            "trials table."
        )
    best = min(completed, key=lambda row: row["best_val_error"])
    return {
        "trial_id": best["trial_id"],
        "num_glimpses": best["num_glimpses"],
        "learning_rate": best["learning_rate"],
        "best_val_error": best["best_val_error"],
        "best_epoch": best["best_epoch"],
    }


def load_trial_model(tuner, trial_id):
    """The model of trial `trial_id` with the weights of its best epoch."""
    return tuner.load_model(tuner.oracle.get_trial(trial_id))


def _check_range(name, value, integer=False):
    kinds = (int,) if integer else (int, float)
    if (
        not isinstance(value, (list, tuple))
        or len(value) != 2
        or any(isinstance(v, bool) or not isinstance(v, kinds) for v in value)
        or value[0] > value[1]
    ):
        kind = "integers" if integer else "numbers"
        raise ValueError(
            f"`{name}` must be a pair (low, high) of {kind} with low <= high. "
            f"Received: {name}={value!r}"
        )
    return value[0], value[1]


__all__ = [
    "GlimpseHyperModel",
    "best_configuration",
    "glimpse_search",
    "load_trial_model",
    "trials_table",
    "write_trials_table",
]
