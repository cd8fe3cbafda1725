"""RNN-SPN Table 1: dropout rates and downsample factors chosen on the
validation set (configuration ``rnn_spn/dropout_search``), as the paper says
they were ("down-sampling factors and dropout rates optimized on the
validation set"; it reports neither the grid nor the values chosen).

For each model family (``rnn_spn``, ``ffn_spn``, ``conv``) every setting of a
grid trains on a short protocol and the validation set alone picks one.

Grid (the configuration's GRID; ``--rates``, ``--placements``,
``--downsample``, ``--models``):

* dropout rate p: 0, 0.1, 0.2, 0.3, 0.4, 0.5;
* dropout placement: ``code`` (the released code's layers) and ``paper``
  (the appendix's), see ``dropout_placement`` in
  `cram_keras.experiments.rnn_spn_config.Config`; p = 0 is one trial, since no
  dropout acts then wherever the layers are;
* downsample factor d (the two SPNs only): 1, 2, 3, 4, the rows of Table 1.

With the defaults: 44 trials for each SPN, 11 for the CNN.

Protocol of a trial: the paper's (the released code's) training setting,
everything at its `Config` default but the grid's fields and the
configuration's SETTINGS: 60,000 training sequences, batch 100, RMSprop
5e-4 with two-stage clipping, the released learning-rate rule, the dropout
ramp over the first 5 epochs, seed 0 (the same for every trial), validation
on the 10,000 validation sequences after every epoch; trained for
EPOCHS_PER_TRIAL (``--epochs``, 20) epochs only. Each trial is its own run
directory, ``<runs-dir>/<model>/<trial>``, trained with the runner's
``stop_after_epochs``: the run pauses after those epochs and never reaches
its final step, so the test set is never evaluated (its epoch limit is kept
above ``--epochs`` and its early-stopping patience at least ``--epochs``,
so that it cannot finish). Only the validation curve of each trial is read.

Selection rule, per family: the trial with the lowest validation per-digit
error at its best epoch (the minimum over its epochs); ties (equal to 6
decimals, i.e. the same number of misclassified validation digits) go to
the lower dropout rate, then to the earlier trial in grid order (placement
code before paper, smaller d first).

A check of the search's precision (the configuration's DTYPE_CHECK, e.g.
``"float32"`` for a search run under ``mixed_bfloat16``): once a family is
complete, its two best trials by the selection rule train again, the same
way, under that dtype policy (``<runs-dir>/<model>_<policy>/<trial>``), and
the result file records both curves and whether the rule, applied to the two
under that policy, picks the same trial (``dtype_check``). The choice stays
the search's own; the check says whether it stands.

Resumable: rerunning the same command skips finished trials, continues an
interrupted one from its last committed epoch (the runner's checkpoints),
and a larger ``--epochs`` extends every trial. The result file is rewritten
after every trial, and it alone is enough to continue: a trial it records
as done (all its epochs) counts without its run directory when the file
was written by the same search (its settings, backend and epochs per
trial), so that a search whose runs folder is lost (a new machine, a
cleaned disk) loses at most the trial that was training. Such a trial
keeps its record as it was, with ``from_result_file``: the date, commit and
hardware of the file it came from:

    python run_study.py rnn_spn/dropout_search --data-dir MNIST_DIR

``--report`` only rewrites the result file from the run directories.

Several processes (on one GPU, say) share the grid with ``--shard K/N``:
the trials are numbered from 0 over the families of ``--models`` in that
order, each family's in grid order (its ``grid`` list in the result file),
and trial i belongs to shard ``i % N == K``. A shard trains only its
trials, and its result file (give each shard its own ``--output``) lists
only them, so it never chooses. ``--report`` reads every trial found in the
run directories, whichever shard trained it, and chooses once all of a
family's are done:

    python run_study.py rnn_spn/dropout_search --data-dir MNIST_DIR \\
        --shard 0/2 --output shard-0.json &
    python run_study.py rnn_spn/dropout_search --data-dir MNIST_DIR \\
        --shard 1/2 --output shard-1.json &
    wait; python run_study.py rnn_spn/dropout_search --data-dir MNIST_DIR --report

A trial directory brought back from another machine with its logs only (its
newest checkpoint record, without the weights files) counts with the epochs
that record holds: a trial done that way is not trained again, and one that
needs more epochs starts over.

The result file: the grid, the protocol, the rule, per trial its settings
and validation curves (per-digit and sequence error, loss; training loss),
per family the chosen setting and the command that trains it on the full
protocol, and the hardware, backend, commit, command and configuration of
the search. It holds no test-set number.
"""

import argparse
import dataclasses
import json
import os
import shlex
import statistics

import keras

from cram_keras.experiments import rnn_spn
from cram_keras.experiments.run_dir import (
    CHECKPOINT_DIR,
    CONFIG_FILE,
    METRICS_FILE,
    load_config,
    read_log,
)
from cram_keras.studies.driver import recorded_path
from cram_keras.training.checkpoint import EpochCheckpoints
from cram_keras.training.progress import format_seconds
from cram_keras.utils import read_json

MODELS = ("rnn_spn", "ffn_spn", "conv")
PLACEMENTS = ("code", "paper")
# Errors equal to this many decimals are a tie (one validation digit in
# 30,000 is 3.3e-5).
TIE_DECIMALS = 6

PROTOCOL = (
    "per trial: the paper's training setting (Config defaults: 60k/10k "
    "sequences, batch 100, RMSprop 5e-4, two-stage clipping, released LR rule, "
    "dropout ramp, seed 0) with the configuration's settings (this file's "
    "settings, e.g. its dtype policy) but the grid's dropout rate, dropout "
    "placement and downsample factor, trained for epochs_per_trial epochs; "
    "validation per-digit error after every epoch; the test set is never "
    "evaluated"
)
SELECTION_RULE = (
    "per model: lowest validation per-digit error at the trial's best epoch "
    f"(minimum over its epochs); ties (equal to {TIE_DECIMALS} decimals) to the "
    "lower dropout rate, then to the earlier trial in grid order"
)


DTYPE_CHECK_RULE = (
    "per model, once its trials are done: its two best trials by the selection "
    "rule train again under {policy}, the same way; the choice stands if the "
    "rule picks the same trial of the two under {policy}"
)
# A trial's settings (grid_trials).
GRID_FIELDS = ("name", "dropout", "dropout_placement", "downsample")


def add_arguments(group):
    # The grid's axes and the trial length; not given: the configuration's.
    for flag, kind, text in (
        (
            "--models",
            _names(MODELS),
            "families, comma-separated, in order (default: the GRID's, all three)",
        ),
        ("--epochs", int, "epochs per trial (default: EPOCHS_PER_TRIAL, 20)"),
        (
            "--rates",
            _floats,
            "dropout rates in [0, 1) (default: the GRID's, 0,0.1,0.2,0.3,0.4,0.5)",
        ),
        (
            "--placements",
            _names(PLACEMENTS),
            "dropout placements (default: the GRID's, code,paper)",
        ),
        (
            "--downsample",
            _floats,
            "downsample factors of the SPNs (default: the GRID's, 1,2,3,4)",
        ),
    ):
        group.add_argument(flag, type=kind, default=None, help=text)
    group.add_argument(
        "--report",
        action="store_true",
        help="only rewrite the result file from the run directories (every "
        "trial found, whatever --shard says)",
    )
    group.add_argument(
        "--shard",
        type=_shard,
        default=None,
        metavar="K/N",
        help="train only the trials i (numbered over every family of --models, "
        "from 0) with i %% N == K, e.g. 0/4 .. 3/4 in four processes",
    )


def run(study):
    """The search (or, with ``--report``, only its result file)."""
    from cram_keras.studies.driver import StudyError

    args = study.args
    grid = study.named.extra["GRID"]
    for key in ("models", "rates", "placements", "downsample"):
        if getattr(args, key) is None:
            setattr(args, key, list(grid[key]))
    if args.epochs is None:
        args.epochs = study.named.extra["EPOCHS_PER_TRIAL"]
    if args.epochs < 1:
        raise StudyError(
            f"--epochs must be a positive whole number. Received: {args.epochs}"
        )
    bad = [r for r in args.rates if not 0.0 <= r < 1.0]
    if bad:
        raise StudyError(f"--rates must lie in [0, 1). Received: {bad}")
    results = search(study)
    for model, entry in results["models"].items():
        chosen = entry["chosen"]
        state = chosen["trial"] if chosen else "incomplete"
        print(f"{model}: {state}", flush=True)
    return 0


def grid_trials(model, rates, placements, downsample):
    """The trials of one family in grid order: ``[{name, dropout,
    dropout_placement, downsample}]``. Rate 0 is one trial per d (placement
    None: no dropout acts)."""
    factors = [None] if model == "conv" else list(downsample)
    trials = []
    for d in factors:
        suffix = "" if d is None else f"_d{d:g}"
        for rate in sorted(set(rates)):
            if rate == 0:
                trials.append(
                    dict(name=f"p0{suffix}", dropout=0.0, dropout_placement=None,
                         downsample=d)
                )  # fmt: skip
                continue
            for placement in placements:
                trials.append(
                    dict(name=f"{placement}_p{rate:g}{suffix}", dropout=float(rate),
                         dropout_placement=placement, downsample=d)
                )  # fmt: skip
    return trials


def trial_config(base, model, trial, epochs):
    """The run's Config: ``base`` with the trial's settings, an epoch limit
    above ``epochs`` and a patience of at least ``epochs`` (so the run pauses
    and cannot finish, which would evaluate the test set)."""
    values = dict(
        model=model,
        dropout=trial["dropout"],
        dropout_placement=trial["dropout_placement"] or "code",
        epochs=max(base.epochs, epochs + 1),
        patience=max(base.patience, epochs),
    )
    if trial["downsample"] is not None:
        values["downsample"] = trial["downsample"]
    return dataclasses.replace(base, **values)


def run_dir_for(runs_dir, model, trial):
    return os.path.join(runs_dir, model, trial["name"])


def committed_rows(run_dir):
    """The per-epoch rows of a trial: those of its newest intact checkpoint
    (where it resumes), else (a run directory brought back with its logs
    only) those of its newest checkpoint record that parses."""
    rows = read_log(run_dir)
    if rows:
        return rows
    record = EpochCheckpoints(os.path.join(run_dir, CHECKPOINT_DIR)).newest_record()
    return [] if record is None else list(record.get("log", []))


def run_trial(config, run_dir, epochs, smoke=False):
    """Trains the trial until ``epochs`` epochs are committed (nothing if
    they are); returns its committed log rows."""
    if len(committed_rows(run_dir)) < epochs:
        result = rnn_spn.train_and_evaluate(
            config,
            run_dir,
            stop_after_epochs=epochs,
            smoke=smoke,
            verbose=0,
            pause_hint=(
                "the trial is done (a larger --epochs of the search extends it)."
            ),
        )
        if result is not None:
            raise RuntimeError(
                f"{run_dir} finished training, so the runner evaluated its test "
                "set; the search must stop before the run's epoch limit and "
                "early stopping."
            )
    _check_run(config, run_dir)
    return committed_rows(run_dir)


def _check_run(config, run_dir):
    if os.path.exists(os.path.join(run_dir, METRICS_FILE)):
        raise RuntimeError(
            f"{run_dir} holds {METRICS_FILE}: the run finished and was evaluated "
            "on the test set. Search trials must not; use a fresh --runs-dir."
        )
    stored = load_config(rnn_spn.Config, run_dir)
    if stored != config:
        raise RuntimeError(
            f"{run_dir} holds a run of another config. Use another --runs-dir, "
            "or the same flags as the search that made it."
        )


def trial_record(trial, rows, epochs, run_dir, runs_dir=None):
    """A trial's settings and validation curves (its first ``epochs`` rows)."""
    rows = rows[:epochs]
    valid = [1.0 - r["val_digit_accuracy"] for r in rows]
    best = min(range(len(valid)), key=valid.__getitem__) if valid else None
    return dict(
        trial,
        run_dir=recorded_path(run_dir, runs_dir),
        epochs_done=len(rows),
        valid_per_digit_error=valid,
        valid_sequence_error=[1.0 - r["val_sequence_accuracy"] for r in rows],
        valid_loss=[r["val_loss"] for r in rows],
        train_loss=[r["loss"] for r in rows],
        best_epoch=None if best is None else best + 1,
        best_valid_per_digit_error=None if best is None else valid[best],
        train_seconds=sum(r.get("train_seconds") or 0.0 for r in rows),
        epoch_seconds=[r.get("train_seconds") or 0.0 for r in rows],
    )


def choose(records):
    """The selection rule over complete trial records (grid order): the
    record with the lowest ``best_valid_per_digit_error``; ties to the lower
    ``dropout``, then to the earlier record."""
    return ranked(records)[0] if records else None


def train_command(model, record, data_dir, ramp_epochs):
    """The full-protocol command of the chosen setting; a ``data_dir`` (the
    official MNIST files, a folder of this machine) as ``MNIST_DIR``."""
    words = ["python", "train_rnn_spn.py", "--model", model]
    if record["downsample"] is not None:
        words += ["--downsample", f"{record['downsample']:g}"]
    if data_dir:
        words += ["--data-dir", "MNIST_DIR"]
    words += ["--set", f"dropout={record['dropout']:g}"]
    if record["dropout_placement"]:
        words += ["--set", f"dropout_placement={record['dropout_placement']}"]
    if ramp_epochs != rnn_spn.Config().dropout_ramp_epochs:
        words += ["--set", f"dropout_ramp_epochs={ramp_epochs}"]
    return shlex.join(words)


def search(study):
    """Runs (or, with ``--report``, only reads) every trial; writes and
    returns the result dict."""
    args = study.args
    base = study.config()
    ramp_epochs = base.dropout_ramp_epochs
    data_dir = study.locations.get("data_dir")
    results = dict(
        search="RNN-SPN Table 1: dropout and downsample factor on the validation set",
        protocol=PROTOCOL,
        selection_rule=SELECTION_RULE,
        epochs_per_trial=args.epochs,
        grid={},
        models={},
        data_source=None,
        backend=keras.backend.backend(),
        # The command that trains the trials, also in a file that --report
        # wrote: the one a user reruns to continue.
        command=shlex.join(w for w in shlex.split(study.command) if w != "--report"),
    )
    shard = None if args.report else args.shard
    recorded = RecordedTrials(
        study.output, study.provenance()["settings"], results["backend"], args.epochs
    )
    check_policy = study.named.extra.get("DTYPE_CHECK")
    if check_policy == base.dtype_policy:
        check_policy = None  # the search already ran under it
    if check_policy:
        try:  # a valid policy, before any run
            dataclasses.replace(base, dtype_policy=check_policy)
        except ValueError as err:
            from cram_keras.studies.driver import StudyError

            raise StudyError(f"{study.name}: DTYPE_CHECK: {err}") from None
        results["dtype_check_rule"] = DTYPE_CHECK_RULE.format(policy=check_policy)
    if shard is not None:
        results["shard"] = f"{shard[0]}/{shard[1]}"
    index = -1  # of the trial, over every family's grid
    grid_size = sum(
        len(grid_trials(m, args.rates, args.placements, args.downsample))
        for m in args.models
    )
    progress = SearchProgress(
        sum(1 for i in range(grid_size) if shard is None or i % shard[1] == shard[0])
    )
    for model in args.models:
        trials = grid_trials(model, args.rates, args.placements, args.downsample)
        results["grid"][model] = dict(
            rates=sorted(set(args.rates)),
            placements=list(args.placements),
            downsample=None if model == "conv" else list(args.downsample),
            trials=[t["name"] for t in trials],
        )
        entry = results["models"][model] = dict(trials=[], complete=False, chosen=None)
        for trial in trials:
            index += 1
            if shard is not None and index % shard[1] != shard[0]:
                continue
            run_dir = run_dir_for(study.runs_dir, model, trial)
            config = trial_config(base, model, trial, args.epochs)
            # One line per trial, read by benchmarks/rnn_spn_gpu_fill.py.
            record = trial_or_record(
                study, recorded, config, run_dir, trial, model, args.epochs
            )
            if record is None:
                continue
            if results["data_source"] is None:
                results["data_source"] = portable_source(
                    recorded.data_source_of(run_dir)
                )
            entry["trials"].append(record)
            if not args.report:
                progress.trial_done(entry["trials"][-1], args.epochs)
            _choose_if_complete(
                entry, model, trials, args.epochs, data_dir, ramp_epochs
            )
            study.write(results)
        _choose_if_complete(entry, model, trials, args.epochs, data_dir, ramp_epochs)
        if check_policy and shard is None and entry["complete"]:
            entry["dtype_check"] = dtype_check(
                study, recorded, base, model, entry, check_policy, args.epochs
            )
            study.write(results)
    study.write(results)
    return results


class SearchProgress:
    """After each trial, one line: the trials done of those this process
    runs, and the time the rest should take. Per trial: the median epoch of
    the complete trials so far times the epochs of a trial (an epoch that
    ran beside other work, or paused, moves a median little); for records
    without their epochs' times (written before they kept them), the mean
    of their training times."""

    def __init__(self, total):
        self.total, self.done = total, 0
        self.epoch_seconds, self.trial_seconds = [], []

    def trial_done(self, record, epochs):
        self.done += 1
        if record["epochs_done"] >= epochs and record["train_seconds"] > 0:
            if record.get("epoch_seconds"):
                self.epoch_seconds += record["epoch_seconds"][:epochs]
            else:
                self.trial_seconds.append(record["train_seconds"])
        left = self.total - self.done
        line = f"search: {self.done} of {self.total} trials done"
        per_trial = self.per_trial(epochs)
        if left and per_trial:
            line += (
                f"; about {format_seconds(left * per_trial)} to go "
                f"({format_seconds(per_trial)} per trial)"
            )
        print(line, flush=True)

    def per_trial(self, epochs):
        if self.epoch_seconds:
            return epochs * statistics.median(self.epoch_seconds)
        if self.trial_seconds:
            return sum(self.trial_seconds) / len(self.trial_seconds)
        return None


class RecordedTrials:
    """The done trials of the result file that an earlier run of the same
    search wrote (its settings, backend and epochs per trial equal this
    one's; any other file gives none): ``(model, dtype policy or None,
    trial name) -> record``."""

    def __init__(self, path, settings, backend, epochs):
        self.records, self.data_source = {}, None
        try:
            stored = read_json(path)
        except (OSError, ValueError):
            return
        same = (
            isinstance(stored, dict)
            and stored.get("settings") == json.loads(json.dumps(settings))
            and stored.get("backend") == backend
            and stored.get("epochs_per_trial") == epochs
        )
        if not same:
            return
        self.data_source = stored.get("data_source")
        origin = {k: stored.get(k) for k in ("date", "commit", "hardware")}
        for model, entry in (stored.get("models") or {}).items():
            check = entry.get("dtype_check") or {}
            for policy, trials in (
                (None, entry.get("trials") or []),
                (check.get("dtype_policy"), check.get("trials") or []),
            ):
                for record in trials:
                    if record.get("epochs_done") == epochs:
                        record.setdefault("from_result_file", origin)
                        self.records[(model, policy, record.get("name"))] = record

    def get(self, model, trial, policy=None):
        """The recorded trial with ``trial``'s settings, else None."""
        record = self.records.get((model, policy, trial["name"]))
        if record is None or any(record.get(k) != trial[k] for k in GRID_FIELDS):
            return None
        return record

    def data_source_of(self, run_dir):
        """The data source that ``run_dir``'s config records, else the
        file's."""
        path = os.path.join(run_dir, CONFIG_FILE)
        if os.path.isfile(path):
            return read_json(path).get("data_source")
        return self.data_source


def trial_or_record(
    study, recorded, config, run_dir, trial, model, epochs, policy=None
):
    """A trial's record: from its run directory (trained to ``epochs``
    first, unless ``--report``), or, where that holds fewer epochs than a
    done record of the earlier result file, that record (None: neither)."""
    line = f"{model} {trial['name']}" + (f" under {policy}" if policy else "")
    record = recorded.get(model, trial, policy)
    if record is not None and len(committed_rows(run_dir)) < epochs:
        print(f"search: {line}: done, as the result file records it", flush=True)
        return record
    rows = trial_rows(study, config, run_dir, epochs, line)
    if rows is None:
        return None
    settings = {k: trial[k] for k in GRID_FIELDS}
    return trial_record(settings, rows, epochs, run_dir, study.runs_dir)


def trial_rows(study, config, run_dir, epochs, line):
    """A trial's committed log rows: trained to ``epochs`` first (after the
    line ``search: <line>``), or with ``--report`` read as they are (None
    where the trial has no run directory)."""
    if study.args.report:
        if not os.path.isfile(os.path.join(run_dir, CONFIG_FILE)):
            return None
        _check_run(config, run_dir)
        return committed_rows(run_dir)
    print(f"search: {line}", flush=True)
    return run_trial(config, run_dir, epochs, smoke=study.smoke)


def ranked(records):
    """``records`` in the selection rule's order, best first."""
    order = sorted(
        range(len(records)),
        key=lambda i: (
            round(records[i]["best_valid_per_digit_error"], TIE_DECIMALS),
            records[i]["dropout"],
            i,
        ),
    )
    return [records[i] for i in order]


def dtype_check(study, recorded, base, model, entry, policy, epochs):
    """The family's two best trials again under the dtype ``policy``: their
    records in grid order and whether the rule picks the same trial among
    them (None until both have their epochs)."""
    done = [t for t in entry["trials"] if t["epochs_done"] >= epochs]
    best = {t["name"] for t in ranked(done)[:2]}
    records = []
    for trial in (t for t in done if t["name"] in best):  # grid order
        settings = {k: trial[k] for k in GRID_FIELDS}
        config = dataclasses.replace(
            trial_config(base, model, settings, epochs), dtype_policy=policy
        )
        run_dir = os.path.join(study.runs_dir, f"{model}_{policy}", trial["name"])
        record = trial_or_record(
            study, recorded, config, run_dir, settings, model, epochs, policy
        )
        if record is not None:
            records.append(record)
    complete = len(records) == len(best) and all(
        r["epochs_done"] >= epochs for r in records
    )
    picked = choose(records)["name"] if complete else None
    return dict(
        dtype_policy=policy,
        trials=records,
        complete=complete,
        picks=picked,
        agrees=None if picked is None else picked == entry["chosen"]["trial"],
    )


def _choose_if_complete(entry, model, trials, epochs, data_dir, ramp_epochs):
    """Applies the selection rule once every trial of ``model`` is done."""
    done = [t for t in entry["trials"] if t["epochs_done"] >= epochs]
    entry["complete"] = len(done) == len(trials)
    entry["chosen"] = None
    if entry["complete"]:
        chosen = choose(done)
        entry["chosen"] = dict(
            trial=chosen["name"],
            dropout=chosen["dropout"],
            dropout_placement=chosen["dropout_placement"],
            downsample=chosen["downsample"],
            best_epoch=chosen["best_epoch"],
            best_valid_per_digit_error=chosen["best_valid_per_digit_error"],
            train_command=train_command(model, chosen, data_dir, ramp_epochs),
        )


def portable_source(source):
    """A run's data source as a result file records it: its local folder or
    file, wherever a field names it, written as MNIST_DIR (the official
    files, as the recorded commands write them) or DIR (anything else, such
    as the bundled sample inside the installed package)."""
    if not source or not source.get("path"):
        return source
    path = source["path"]
    stand_in = "MNIST_DIR" if source.get("origin") == "idx" else "DIR"
    return {
        key: value.replace(path, stand_in) if isinstance(value, str) else value
        for key, value in source.items()
    }


def _floats(text):
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"a comma-separated list of numbers: {text!r}"
        ) from None
    if not values:
        raise argparse.ArgumentTypeError("at least one value")
    return values


def _shard(text):
    k, sep, n = text.partition("/")
    if sep and k.isdigit() and n.isdigit() and int(k) < int(n):
        return int(k), int(n)
    raise argparse.ArgumentTypeError(
        f"K/N with whole numbers 0 <= K < N, e.g. 0/4. Received: {text!r}"
    )


def _names(choices):
    def parse(text):
        values = [v.strip() for v in text.split(",") if v.strip()]
        bad = [v for v in values if v not in choices]
        if bad or not values:
            raise argparse.ArgumentTypeError(
                f"a comma-separated list from {', '.join(choices)}: {text!r}"
            )
        return values

    return parse
