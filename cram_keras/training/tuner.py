"""keras-tuner random searches over CRAM's settings.

Two kinds of search share the trials table and the choice of the best trial:

* `glimpse_search`: each trial is one `model.fit` of a compiled classifier
  (`GlimpseHyperModel`), scored by its best validation epoch (below);
* `RunSearch`: each trial is a whole training run of an experiment in its
  own run directory (`train_trial(trial_id, values) -> results`), for models
  that are not one `fit` with a validation metric (the inpainting GAN). A
  killed search resumes the interrupted trial: keras-tuner keeps its id and
  values, so it finds its run directory again, and the run resumes from its
  last epoch checkpoint.

The glimpse search is a `keras_tuner.RandomSearch` over

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

`run_glimpse_search` and `run_search` hold their directory for the whole
search (`cram_keras.training.run_lock`): a second search started on the
same directory is refused before it writes anything.

The search is resumable as any keras-tuner search: the tuner is created with
`overwrite=False` and its project directory holds the oracle state and every
trial; rerunning the same search reloads it, skips finished trials, re-runs
an interrupted one from scratch and continues up to `max_trials` (which may
be raised between runs).

Both searches are seeded: `search_seed(seed)` is the oracle's seed, so the
same seed samples the same values (keras-tuner itself would draw a random
seed for seed 0).

Example:

>>> hypermodel = GlimpseHyperModel(build_model, example_inputs=[x[:2], c[:2]])
>>> tuner = glimpse_search(hypermodel, "runs/cls", max_trials=16)
>>> tuner.search(train, validation_data=valid, epochs=5)
>>> rows = trials_table(tuner)
>>> write_trials_table(rows, "trials.csv", "trials.json")
>>> best_configuration(tuner)  # {"num_glimpses": ..., "learning_rate": ..., ...}

A search whose trials are runs:

>>> space = search_space({"glimpses": (1, 8), "learning_rate": (1e-5, 1e-3)},
...                      log=("learning_rate",))
>>> search = RunSearch(train_trial, space, "valid_psnr", "runs/x", max_trials=8)
>>> search.search()
>>> rows = run_trials_table(search)
>>> write_trials_table(rows, "trials.csv", "trials.json", table_columns(search))
>>> best_row(rows, "valid_psnr", "max")
"""

import contextlib
import csv
import os
import time

import keras
import keras_tuner as kt
import numpy as np

from cram_keras.training import run_lock
from cram_keras.training.checkpoint import CRASH_ENV, optimizer_state_skipped
from cram_keras.utils import (
    atomic_path,
    check_positive_int,
    check_range,
    read_json,
    write_json,
)

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
        low, high = check_range("glimpse_range", glimpse_range, integer=True)
        if low < 1:
            raise ValueError(
                "`glimpse_range` must start at 1 or more glimpses. "
                f"Received: glimpse_range={glimpse_range!r}"
            )
        check_range("learning_rate_range", learning_rate_range)
        lr_low, lr_high = learning_rate_range
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
        seed: seed of the random search (see `search_seed`).
        objective: logged value to maximise (`"val_accuracy"`).

    Returns:
        The tuner; call `tuner.search(train, validation_data=valid,
        epochs=E, ...)` to run (or resume) the search.
    """
    check_positive_int("max_trials", max_trials)
    return _RecordingRandomSearch(
        hypermodel,
        objective=kt.Objective(objective, direction="max"),
        max_trials=max_trials,
        seed=search_seed(seed),
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
    rows = []
    for trial_id in trial_order(oracle):
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


def trial_order(oracle):
    """The ids of an oracle's trials in the order they started."""
    return list(oracle.start_order) + sorted(
        set(oracle.trials) - set(oracle.start_order)
    )


def write_trials_table(rows, csv_path, json_path, columns=TABLE_COLUMNS):
    """Writes `rows` as CSV (`columns`, by default the glimpse search's
    `TABLE_COLUMNS`; empty where a row has no value) and as JSON
    (`{"trials": rows}`, every key)."""
    with atomic_path(csv_path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: "" if row.get(k) is None else row[k] for k in columns})
    write_json(json_path, {"trials": rows})


def best_row(rows, key, direction, where="the search"):
    """The completed row of a trials table with the best `key` (`direction`
    "max" or "min"; the first such row on a tie).

    Raises:
        RuntimeError: no trial has completed with a value of `key` (every
            trial failed: their messages are in the table).
    """
    if direction not in ("max", "min"):
        raise ValueError(
            f"`direction` must be 'max' or 'min'. Received: direction={direction!r}"
        )
    completed = [
        row for row in rows if row["status"] == "COMPLETED" and row.get(key) is not None
    ]
    if not completed:
        raise RuntimeError(
            f"No trial of {where} completed with a value of {key!r}; see the "
            "'message' of each trial in the trials table."
        )
    pick = max if direction == "max" else min
    return pick(completed, key=lambda row: row[key])


def best_configuration(tuner, objective=OBJECTIVE):
    """The best finished trial: its hyperparameters and validation error.

    Raises:
        RuntimeError: no trial has finished with a value of `objective`
            (every trial failed: their messages are in `trials_table`).
    """
    best = best_row(
        trials_table(tuner, objective),
        "best_val_error",
        "min",
        where=f"the search in {tuner.project_dir}",
    )
    return {
        "trial_id": best["trial_id"],
        "num_glimpses": best["num_glimpses"],
        "learning_rate": best["learning_rate"],
        "best_val_error": best["best_val_error"],
        "best_epoch": best["best_epoch"],
    }


def load_trial_model(tuner, trial_id):
    """The model of trial `trial_id` with the weights of its best epoch.

    Its optimizer starts afresh: the model is built for evaluation, with an
    optimizer that has no variables yet, so the checkpoint's optimizer state
    is not loaded (Keras' warning that says so is not shown).
    """
    with optimizer_state_skipped():
        return tuner.load_model(tuner.oracle.get_trial(trial_id))


def _hold_search(directory):
    """A search directory belongs to one process at a time
    (`cram_keras.training.run_lock`; a run of the runner already holds its
    own, which it may take again): a second search there is refused with
    `run_lock.DirectoryBusy` before it writes anything."""
    return run_lock.hold(
        os.fspath(directory),
        what="search directory",
        flag="directory",
        overwrite_flag=None,
    )


def run_glimpse_search(
    build_model,
    train,
    valid,
    directory,
    *,
    example_inputs,
    glimpse_range,
    learning_rate_range,
    max_trials,
    seed,
    epochs,
    best_config,
):
    """Runs (or resumes) a glimpse search in the run directory `directory`
    and returns the best trial's model (its best epoch's weights), the
    `best_configuration` and a summary for metrics.json.

    `build_model(num_glimpses, learning_rate)` makes a compiled classifier
    (`GlimpseHyperModel`); every trial trains `epochs` epochs on `train`,
    scored on `valid`, logging to `directory/tensorboard`. Writes
    `trials.csv`, `trials.json` and `best_config.json`: the
    `best_configuration` with `config`, `best_config(best)` (the run's
    config with the winning values).
    """
    with _hold_search(directory):
        hypermodel = GlimpseHyperModel(
            build_model,
            example_inputs=example_inputs,
            glimpse_range=tuple(glimpse_range),
            learning_rate_range=tuple(learning_rate_range),
        )
        tuner = glimpse_search(
            hypermodel, directory, "tuner", max_trials=max_trials, seed=seed
        )
        tuner.search(
            train,
            validation_data=valid,
            epochs=epochs,
            callbacks=[
                keras.callbacks.TensorBoard(os.path.join(directory, "tensorboard"))
            ],
            shuffle=False,  # the dataset shuffles itself
            verbose=2,
        )
        rows = trials_table(tuner)
        write_trials_table(
            rows,
            os.path.join(directory, "trials.csv"),
            os.path.join(directory, "trials.json"),
        )
        best = best_configuration(tuner)
        write_json(
            os.path.join(directory, "best_config.json"),
            dict(best, config=best_config(best)),
        )
        model = load_trial_model(tuner, best["trial_id"])
        row = next(r for r in rows if r["trial_id"] == best["trial_id"])
        summary = {
            "epochs": row["epochs"],
            "best_epoch": row["best_epoch"],
            "valid_error_per_epoch": row["val_error_per_epoch"],
            "trials": len(rows),
            "best_trial": best["trial_id"],
        }
        return model, best, summary


# === Searches whose trials are runs ===


def search_seed(seed):
    """The oracle seed of a search seeded `seed` (an integer >= 0): the same
    for the same `seed`, and never 0, which keras-tuner would replace with a
    random seed."""
    state = np.random.SeedSequence(int(seed)).generate_state(1)[0]
    return int(state % (2**31 - 2)) + 1


def search_space(ranges, log=()):
    """`keras_tuner.HyperParameters` with one hyperparameter per entry
    `name: (low, high)` of `ranges` (inclusive bounds): two integers sample
    an integer uniformly, numbers a float uniformly, or log-uniformly for
    the names in `log`; `low == high` fixes the value.

    Raises:
        ValueError: a range that is not `(low, high)` with `low <= high`, or
            a log range that is not positive.
    """
    hp = kt.HyperParameters()
    for name, value in ranges.items():
        integer = isinstance(value, (list, tuple)) and all(
            isinstance(v, int) and not isinstance(v, bool) for v in value
        )
        check_range(f"{name}_range", value, integer=integer)
        low, high = value
        if name in log and low <= 0:
            raise ValueError(
                f"`{name}_range` must be positive (it is sampled on a log scale). "
                f"Received: {name}_range={value!r}"
            )
        if low == high:
            hp.Fixed(name, low)
        elif integer and name not in log:
            hp.Int(name, low, high)
        else:
            hp.Float(
                name,
                float(low),
                float(high),
                sampling="log" if name in log else "linear",
            )
    return hp


@contextlib.contextmanager
def trial_crash_points(trial_id):
    """Inside trial `trial_id` of a `RunSearch`, the crash point
    `trial:<trial_id>:<name>` (`cram_keras.training.checkpoint.crash_point`)
    is the point `<name>` of the trial's run, e.g. `trial:1:batch:0` kills
    trial 1 after its first batch. A point without the prefix fires outside
    the trials only."""
    value = os.environ.get(CRASH_ENV)
    if value is None:
        yield
        return
    prefix = f"trial:{trial_id}:"
    os.environ[CRASH_ENV] = value[len(prefix) :] if value.startswith(prefix) else ""
    try:
        yield
    finally:
        os.environ[CRASH_ENV] = value


class _SearchStopped(kt.errors.FatalError):
    """Carries an error of a trial that stops the whole search."""

    def __init__(self, error):
        super().__init__(str(error))
        self.error = error


class RunSearch(kt.RandomSearch):
    """A seeded, resumable random search whose trials are training runs.

    keras-tuner samples the values and keeps the oracle's state in
    `directory/project_name`; each trial calls `train_trial`, which trains
    the trial's run (or resumes it, or finds it finished) and returns its
    results. What a rerun of the same search does:

    * a completed or failed trial is not run again;
    * an interrupted trial (killed, or stopped by an error) is run again
      with the same trial id and the same values (keras-tuner 1.4 re-queues
      the trials that were running when its state was saved; the state is
      saved when the search starts, so this holds for the first trial too):
      `train_trial` finds the same run directory and the run resumes from
      its last epoch checkpoint;
    * the search then continues up to `max_trials`, counting the trials of
      earlier runs.

    Args:
        train_trial: `(trial_id, values) -> results`, `values` a dict of the
            hyperparameters' values, `results` a JSON-serialisable dict with
            the `objective`'s value (and whatever the trials table shows:
            `"epochs"`, `"seconds"`).
        space: the `keras_tuner.HyperParameters` searched (`search_space`).
        objective: the key of the objective in `results`.
        directory: the run directory; the project lives in
            `directory/project_name`.
        project_name: name of the project folder (`"tuner"`).
        direction: `"max"` (default) or `"min"`: the better objective.
        max_trials: number of trials in all, counting those of earlier runs.
        seed: seed of the random search (`search_seed`).
        failed_errors: exception types that fail one trial (recorded as
            FAILED with its message; the search goes on), e.g. a diverged
            training. Any other exception stops the search and is raised as
            it is; the trial stays to be resumed by the next run.
    """

    def __init__(
        self,
        train_trial,
        space,
        objective,
        directory,
        project_name="tuner",
        direction="max",
        max_trials=16,
        seed=0,
        failed_errors=(),
    ):
        check_positive_int("max_trials", max_trials)
        self.train_trial = train_trial
        self.failed_errors = tuple(failed_errors)
        super().__init__(
            hypermodel=None,
            objective=kt.Objective(objective, direction=direction),
            max_trials=max_trials,
            seed=search_seed(seed),
            hyperparameters=space,
            allow_new_entries=False,
            directory=os.fspath(directory),
            project_name=project_name,
            overwrite=False,
        )

    def on_search_begin(self):
        # Saved before the first trial, so that a search killed during it
        # reloads (and resumes that trial) instead of starting anew.
        super().on_search_begin()
        self.save()

    def search(self, *args, **kwargs):
        try:
            super().search(*args, **kwargs)
        except _SearchStopped as stopped:
            raise stopped.error from None

    def run_trial(self, trial, *args, **kwargs):
        try:
            with trial_crash_points(trial.trial_id):
                results = self.train_trial(
                    trial.trial_id, dict(trial.hyperparameters.values)
                )
        except self.failed_errors as err:
            raise kt.errors.FailedTrialError(f"{type(err).__name__}: {err}") from err
        except Exception as err:  # noqa: BLE001  Stops the search, re-raised there.
            raise _SearchStopped(err) from err
        objective = self.oracle.objective.name
        if results.get(objective) is None:
            raise _SearchStopped(
                KeyError(
                    f"The results of trial {trial.trial_id} have no {objective!r}. "
                    f"Received: {sorted(results)}"
                )
            )
        records = trial_records(self.project_dir)
        records[trial.trial_id] = dict(results)
        write_json(os.path.join(self.project_dir, "trial_records.json"), records)
        return {objective: float(results[objective])}


def trial_directory(trial_id):
    """The run directory of trial `trial_id` of a `RunSearch`, relative to
    the search's run directory."""
    return os.path.join("trials", trial_id)


def run_search(
    train_trial,
    ranges,
    objective,
    directory,
    *,
    log=(),
    max_trials,
    seed,
    failed_errors=(),
    best_config,
    write=True,
):
    """Runs (or resumes) a `RunSearch` over `ranges` (`search_space`, `log`
    sampled on a log scale) maximising `objective`, its project in
    `directory/tuner`, and returns `(best, values, rows)`: the best completed
    row, its hyperparameters' values and the trials table.

    `train_trial(trial_id, values)` trains the trial's run, by convention in
    `trial_directory(trial_id)`. With `write` (the chief), writes
    `trials.csv`, `trials.json` and `best_config.json`: the best trial's
    id, run directory, values and objective, and `best_config(values)`.
    """
    # Another worker (``write`` False) leaves the directory to the chief.
    with _hold_search(directory) if write else contextlib.nullcontext():
        search = RunSearch(
            train_trial,
            search_space(ranges, log=log),
            objective,
            directory,
            "tuner",
            max_trials=max_trials,
            seed=seed,
            failed_errors=failed_errors,
        )
        search.search(verbose=1)
        rows = run_trials_table(search)
        best = best_row(rows, objective, "max", where=f"the search in {directory}")
        values = {name: best[name] for name in hyperparameter_names(search)}
        if write:
            write_trials_table(
                rows,
                os.path.join(directory, "trials.csv"),
                os.path.join(directory, "trials.json"),
                table_columns(search),
            )
            write_json(
                os.path.join(directory, "best_config.json"),
                {
                    "trial_id": best["trial_id"],
                    "run_directory": trial_directory(best["trial_id"]),
                    "values": values,
                    objective: best[objective],
                    "config": best_config(values),
                },
            )
        return best, values, rows


def hyperparameter_names(search):
    """The names of the hyperparameters a search samples, in declared order."""
    return [hp.name for hp in search.oracle.hyperparameters.space]


def table_columns(search):
    """The CSV columns of a `RunSearch`'s trials table."""
    objective = search.oracle.objective.name
    return (
        "trial_id",
        "status",
        *hyperparameter_names(search),
        objective,
        "epochs",
        "seconds",
    )


def run_trials_table(search):
    """One row per trial of a `RunSearch`, in the order they started.

    Each row has the `table_columns`: `trial_id`, `status`, the value of
    each hyperparameter, the objective (`None` until the trial completed),
    and the `epochs` and `seconds` its `train_trial` reported (`None` for a
    trial without results); and `message` for a failed trial.
    """
    oracle = search.oracle
    objective = oracle.objective.name
    records = trial_records(search.project_dir)
    names = hyperparameter_names(search)
    rows = []
    for trial_id in trial_order(oracle):
        trial = oracle.trials[trial_id]
        values = trial.hyperparameters.values
        record = records.get(trial_id, {})
        row = {"trial_id": trial_id, "status": str(trial.status)}
        row.update({name: values.get(name) for name in names})
        row[objective] = None if trial.score is None else float(trial.score)
        row["epochs"] = record.get("epochs")
        row["seconds"] = record.get("seconds")
        if trial.message:
            row["message"] = trial.message
        rows.append(row)
    return rows


__all__ = [
    "GlimpseHyperModel",
    "RunSearch",
    "best_configuration",
    "best_row",
    "glimpse_search",
    "hyperparameter_names",
    "load_trial_model",
    "run_glimpse_search",
    "run_search",
    "run_trials_table",
    "search_seed",
    "search_space",
    "table_columns",
    "trial_crash_points",
    "trial_directory",
    "trial_order",
    "trials_table",
    "write_trials_table",
]
