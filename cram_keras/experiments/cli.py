"""The command line of every training script, generated from its Config.

Each Config field declared with ``option(..., flag=True)`` becomes a flag
(``learning_rate`` -> ``--learning-rate``) with the field's help text and
default; every field can be set with ``--set key=value`` (repeatable,
type-checked, unknown keys rejected with the valid ones listed). The common
flags are the same in every script:

    --config NAME      a named configuration (configs/<experiment>/NAME.py;
                       NAME:VARIANT for one variant of a study)
    --smoke            seconds-long run on tiny data (bundled, offline)
    --output-dir DIR   the run directory (default: runs/<experiment>/<name>)
    --overwrite        discard a previous run in --output-dir
    --strategy NAME    auto | default | mirrored | multiworker | tpu
    --deterministic    TensorFlow op determinism (bit-exact resume)
    --set KEY=VALUE    any Config field
    --debug            show tracebacks of user errors

Exit codes: 0 success; 2 a usage or config error (bad flag or value, a run
directory of another config, a run directory busy with another running
process, a backend the experiment cannot train on); 1 a data error
(missing, truncated or mismatched files) or a diverged training; 130
interrupted (Ctrl-C) and 143 terminated (SIGTERM, a plain ``kill``): the
run stops as at Ctrl-C, its completed epochs saved and its run directory
released, and rerunning the same command resumes it. User errors print one
paragraph (``error: ...``) and no traceback unless ``--debug``.

Environment: every script (and run_study.py) sets two variables before
TensorFlow loads, unless the caller set them. ``TF_ENABLE_ONEDNN_OPTS=1``:
TensorFlow leaves its oneDNN CPU kernels off on CPUs without AVX-512, where
they make training steps 1.3-1.6x faster (AMD EPYC, 2 cores:
benchmarks/results/rnn_spn_speed.json); 0 keeps them off.
``TF_CPP_MIN_LOG_LEVEL=3``: TensorFlow's C++ logs, fatal ones only. Level 2
would still print, before the run's first line, errors that need no
action: "failed call to cuInit" on a machine with CUDA libraries and no
usable GPU (the run says which devices it uses), and oneDNN's int32
fallback on CPUs without AVX-512. Failures that stop a run reach Python as
exceptions, and fatal C++ lines still print.
"""

import argparse
import contextlib
import dataclasses
import os
import signal
import sys
import threading

from cram_keras.experiments import named
from cram_keras.experiments.config import (
    add_set_flag,
    base_type,
    check_finite_fields,
    field_default,
    field_help,
    parse_assignments,
    parse_value,
)

EXIT_USAGE = 2
EXIT_DATA = 1


def _flag(name):
    return "--" + name.replace("_", "-")


def _default_text(value, choices=None):
    if value is None:
        # Where "none" is a value of its own (--clue none), None reads "unset".
        return "unset" if choices and "none" in choices else "none"
    if isinstance(value, list):
        return ",".join(str(v) for v in value)
    return str(value)


def add_config_flags(parser, config_cls, smoke_overrides=None):
    """Adds one flag per flagged field of ``config_cls`` to ``parser``."""
    group = parser.add_argument_group(
        f"{config_cls.__module__.rsplit('.', 1)[-1]} settings"
    )
    for field in dataclasses.fields(config_cls):
        meta = field.metadata or {}
        if not meta.get("flag", False):
            continue
        kind, _ = base_type(field.type)
        default = field_default(field)
        help_text = field_help(field)
        choices = [c for c in meta.get("choices") or () if c is not None]
        default_note = f"(default: {_default_text(default, choices)}"
        if smoke_overrides and field.name in smoke_overrides:
            smoke = _default_text(smoke_overrides[field.name], choices)
            default_note += f"; --smoke: {smoke}"
        default_note += ")"
        help_text = f"{help_text} {default_note}".strip().replace("%", "%%")
        if kind is bool and default is False:
            group.add_argument(
                _flag(field.name),
                dest=field.name,
                action="store_const",
                const=True,
                default=None,
                help=help_text,
            )
            continue

        def convert(text, field=field):
            try:
                return parse_value(field, text)
            except ValueError as err:
                raise argparse.ArgumentTypeError(str(err)) from None

        group.add_argument(
            _flag(field.name),
            dest=field.name,
            type=convert,
            default=None,
            choices=None,
            metavar=meta.get("metavar")
            or (
                "{" + ",".join(map(str, choices)) + "}"
                if choices
                else field.name.upper()
            ),
            help=help_text,
        )


def build_parser(experiment):
    parser = argparse.ArgumentParser(
        description=(experiment.title + "\n\n" + experiment.examples).strip(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=(
            "Exit codes: 0 done; 2 usage or config error, or a run directory "
            "busy with another process; 1 data error or diverged training; 130 "
            "interrupted, 143 terminated (SIGTERM). Rerunning the same command "
            "resumes an interrupted run. Every setting of the config can also be "
            "given with --set key=value. Environment: on TensorFlow (CPU) the sampler "
            "uses a compiled kernel, built on first use with g++ (same values, "
            "faster; without a compiler it says so and uses keras.ops); "
            "CRAM_KERAS_NATIVE_SAMPLER=0 turns it off, =1 makes a failed build "
            "an error (see cram_keras.ops.native_sampler)."
        ),
    )
    from cram_keras.training.distribute import STRATEGIES

    common = parser.add_argument_group("run")
    common.add_argument(
        "--config",
        default=None,
        metavar="NAME",
        help=f"a named configuration, configs/{experiment.name}/NAME.py "
        "(NAME:VARIANT: one variant of a study); flags and --set change it "
        "further (default: none, the paper setting)",
    )
    common.add_argument(
        "--smoke",
        action="store_true",
        help="a seconds-long end-to-end run: tiny data (the bundled samples unless "
        "--data-dir is given) and tiny networks",
    )
    common.add_argument(
        "--output-dir",
        default=None,
        metavar="DIR",
        help="run directory; rerunning with the same flags resumes it "
        f"(default: runs/{experiment.name}/<a name from the settings>)",
    )
    common.add_argument(
        "--overwrite",
        action="store_true",
        help="discard a previous run with another config in --output-dir",
    )
    common.add_argument(
        "--strategy",
        choices=STRATEGIES,
        default="auto",
        help="tf.distribute strategy: auto (multiworker when TF_CONFIG is set, "
        "mirrored with more than one GPU, else default), default, mirrored, "
        "multiworker (needs TF_CONFIG), tpu (default: auto)",
    )
    common.add_argument(
        "--deterministic",
        action="store_true",
        help="make TensorFlow ops deterministic (slower; a resumed run then "
        "matches an uninterrupted one exactly)",
    )
    add_set_flag(
        common,
        "set any config field, e.g. --set clip_norm=5 (repeatable; "
        "lists as 16,32,64; none or null for unset)",
    )
    common.add_argument(
        "--debug", action="store_true", help="show the traceback of user errors"
    )
    common.add_argument(
        "--stop-after-epochs",
        type=int,
        default=None,
        metavar="N",
        help="train until the run has N epochs, then exit 0 without evaluating; "
        "the same command without it (or with a larger N) continues the run",
    )
    add_config_flags(parser, experiment.Config, experiment.smoke_overrides)
    experiment.add_arguments(parser)
    return parser


def resolve_config(experiment, args):
    """The Config from ``--config``, flags, ``--set`` and ``--smoke``, each
    over the one before (UsageError if bad)."""
    fields = [f.name for f in dataclasses.fields(experiment.Config)]
    flags = {name: getattr(args, name, None) for name in fields}
    from cram_keras.experiments.errors import UsageError

    try:
        values = {}
        if getattr(args, "config", None):
            values.update(named.script_overrides(args.config, experiment.name))
            if args.smoke:  # The smoke sizes over the configuration's.
                values = {
                    k: v
                    for k, v in values.items()
                    if k not in experiment.smoke_overrides
                }
        values.update({k: v for k, v in flags.items() if v is not None})
        values.update(parse_assignments(experiment.Config, args.assignments))
        if args.smoke:
            config = experiment.smoke_config(**values)
        else:
            config = experiment.Config(**values)
        check_finite_fields(config)
    except ValueError as err:
        raise UsageError(str(err)) from None
    return config


def script(experiment_module):
    """The ``main(argv=None) -> exit code`` of a training script.

    ``experiment_module``: the module under ``cram_keras.experiments`` whose
    ``EXPERIMENT`` the script runs. A backend that Keras cannot load (say
    ``KERAS_BACKEND=torch`` without torch) is reported in one line (exit 2).
    """

    def script_main(argv=None):
        import importlib

        import cram_keras

        if cram_keras.KERAS_IMPORT_ERROR is not None:
            return _error(
                "Keras cannot load KERAS_BACKEND="
                f"{os.environ.get('KERAS_BACKEND')!r} "
                f"({cram_keras.KERAS_IMPORT_ERROR}); the scripts train on "
                "tensorflow (all) or jax (train_rnn_spn.py, train_cls.py).",
                EXIT_USAGE,
            )
        _load_tensorflow()
        module = importlib.import_module(f"cram_keras.experiments.{experiment_module}")
        return main(module.EXPERIMENT, argv)

    return script_main


def _load_tensorflow():
    """Loads TensorFlow now, where it is installed, with its start-up logs
    held to TF_CPP_MIN_LOG_LEVEL (`cram_keras._startup_logs`). On the
    TensorFlow backend ``import cram_keras`` has loaded it already; on the
    others a run loads it anyway (``keras.utils.set_random_seed`` seeds
    TensorFlow too, and the data pipelines and strategies use it), and its
    start-up lines would otherwise appear in the middle of the run."""
    import importlib.util

    if "tensorflow" in sys.modules or importlib.util.find_spec("tensorflow") is None:
        return
    from cram_keras._startup_logs import filtered_startup_logs

    with filtered_startup_logs():
        import tensorflow  # noqa: F401


# Settings that change where files go, not the experiment, and how far a
# search goes (a larger --max-trials continues the same search).
_NOT_IN_NAME = ("cache_dir", "max_trials")


def default_run_name(experiment, config, smoke=False):
    """``<experiment.run_name(config)>[_smoke][_<hash>]``: the hash (6 hex
    digits of the sorted non-default settings) tells apart runs that differ
    in anything else, so a changed setting gets its own directory."""
    import hashlib
    import json

    base = experiment.smoke_config() if smoke else experiment.Config()
    changed = {
        f.name: getattr(config, f.name)
        for f in dataclasses.fields(config)
        if f.name not in _NOT_IN_NAME + tuple(experiment.name_fields)
        and getattr(config, f.name) != getattr(base, f.name)
    }
    name = experiment.run_name(config) + ("_smoke" if smoke else "")
    if changed:
        text = json.dumps(changed, sort_keys=True, default=str)
        name += "_" + hashlib.sha1(text.encode()).hexdigest()[:6]
    return name


def _error(message, code):
    print(f"error: {message}", file=sys.stderr)
    return code


def exit_code(err):
    """The exit code of an error that a run reports in one paragraph
    without a traceback: `EXIT_USAGE` for a bad flag, config, run directory
    or strategy, `EXIT_DATA` for data that cannot be read, a diverged
    training or an unreadable checkpoint; None for anything else (a bug,
    shown with its traceback). The scripts and the study driver share it."""
    from cram_keras.data.errors import DatasetError
    from cram_keras.experiments.errors import UsageError
    from cram_keras.training.callbacks import TrainingDiverged
    from cram_keras.training.checkpoint import CheckpointError
    from cram_keras.training.distribute import StrategyError

    if isinstance(err, (UsageError, StrategyError)):
        return EXIT_USAGE
    if isinstance(err, (DatasetError, TrainingDiverged, CheckpointError)):
        return EXIT_DATA
    return None


def main(experiment, argv=None):
    """Parses ``argv``, runs the experiment, returns the exit code."""
    parser = build_parser(experiment)
    args = parser.parse_args(argv)
    from cram_keras.experiments.experiment import check_backend
    from cram_keras.experiments.run_dir import check_output_dir
    from cram_keras.experiments.runner import run_experiment
    from cram_keras.training.distribute import resolve_strategy

    try:
        with sigterm_interrupts():
            config = resolve_config(experiment, args)
            backend = check_backend(experiment)
            prepare_caches(backend)
            _prepare_native_sampler()
            for name in ("cache_dir",):
                if getattr(config, name, None):
                    check_output_dir(
                        getattr(config, name), "--" + name.replace("_", "-")
                    )
            special = experiment.run_without_training(args, config)
            if special is not None:
                return special
            distribution = resolve_strategy(args.strategy)
            if args.deterministic:
                _make_deterministic(backend)
            output_dir = args.output_dir or os.path.join(
                "runs",
                experiment.name,
                default_run_name(experiment, config, args.smoke),
            )
            run_experiment(
                experiment,
                config,
                output_dir,
                distribution,
                overwrite=args.overwrite,
                smoke=args.smoke,
                stop_after_epochs=args.stop_after_epochs,
            )
    except KeyboardInterrupt as err:
        return interrupted(err)
    except Exception as err:
        interrupt = interruption_of(err)
        if interrupt is not None:
            return interrupted(interrupt)
        code = exit_code(err)
        if code is None or args.debug:
            raise
        return _error(err, code)
    return 0


class Terminated(KeyboardInterrupt):
    """A SIGTERM (a plain ``kill``), raised where the program is."""


@contextlib.contextmanager
def sigterm_interrupts():
    """Within it, a SIGTERM stops the program as Ctrl-C does: `Terminated`
    (a KeyboardInterrupt) is raised in the main thread, so that every
    ``finally`` runs (the run directory is released, a checkpoint is either
    committed or not there). A second SIGTERM ends the process at once.
    Outside the main thread nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def terminate(signum, frame):
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        raise Terminated()

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def interruption_of(err):
    """The Ctrl-C or SIGTERM (a KeyboardInterrupt) that ``err`` was raised
    while handling, or None. An interrupt arrives wherever the program is;
    arriving inside one of TensorFlow's context managers, it can make that
    manager's exit raise an error of its own ("Exiting device scope without
    proper scope nesting"), which then replaces the interrupt. The run was
    interrupted all the same, and says so."""
    seen = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, KeyboardInterrupt):
            return err
        seen.add(id(err))
        err = err.__context__
    return None


def interrupted(err):
    """Says how to continue a run stopped by Ctrl-C or SIGTERM; returns its
    exit code (130, or 143 for SIGTERM)."""
    print(
        "interrupted: completed epochs are saved; rerun the same command to resume.",
        file=sys.stderr,
    )
    return 128 + (signal.SIGTERM if isinstance(err, Terminated) else signal.SIGINT)


def prepare_caches(backend):
    """The cache folder of ``$CRAM_KERAS_CACHE`` checked
    (`run_dir.check_cache_variable`), and on JAX, JAX's persistent
    compilation cache in it (`cram_keras.training.compile_cache`); a bad
    setting of either is a usage error. The scripts and run_study.py."""
    from cram_keras.experiments.errors import UsageError
    from cram_keras.experiments.run_dir import check_cache_variable
    from cram_keras.training import compile_cache

    check_cache_variable()
    try:
        compile_cache.enable_jax_compilation_cache(backend)
    except compile_cache.CompileCacheError as err:
        raise UsageError(str(err)) from None


def _prepare_native_sampler():
    """With CRAM_KERAS_NATIVE_SAMPLER=1, builds and loads the compiled sampler
    now, so that a missing compiler or a wrong backend is refused before
    anything is written."""
    from cram_keras.experiments.errors import UsageError
    from cram_keras.ops import native_sampler

    try:
        if native_sampler.is_enabled():
            native_sampler.use_native_sampler()
            print(
                "note: sampling with the compiled TensorFlow kernel "
                f"({native_sampler.library_path()})",
                file=sys.stderr,
            )
    except native_sampler.NativeSamplerError as err:
        raise UsageError(str(err)) from None


def _make_deterministic(backend):
    if backend == "tensorflow":
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()
