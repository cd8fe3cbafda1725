"""The study driver: ``python run_study.py NAME [options]``.

NAME is a study configuration, ``configs/<experiment>/<name>.py`` with a
``PROTOCOL`` (see `cram_keras.experiments.named`): its variants, each over
its seeds, on top of its settings. The protocol, a module of
`cram_keras.studies`, trains the runs and writes the result file; the
driver gives it what every study shares:

    --data-dir DIR     the data (MNIST IDX files, SVHN .mat files)
    --cache-dir DIR    where generated data sets are cached
    --runs-dir DIR     the run directories (default runs/studies/NAME);
                       one per run, so a stopped study continues when rerun
    --output FILE      the result file (default: the configuration's OUTPUT)
    --set KEY=VALUE    any Config field, for every run (repeatable)
    --variants A,B     these variants only, in this order
    --smoke            the runner's smoke sizes and the bundled data; its
                       runs, result file and figures in runs/studies/NAME_smoke

and its own options after them (``run_study.py NAME --help``). Every
result file records the configuration's name, the day it was written, the
resolved settings, the variants and seeds, the commit, the command and the
hardware.

A SIGTERM (a plain ``kill``) stops a study as Ctrl-C does (exit 143; 130
for Ctrl-C): the run that trains keeps its completed epochs and releases
its directory, and rerunning the command continues.

Safe to run twice at once: the driver holds its result file for the
whole study (`cram_keras.training.run_lock`), so a second driver writing
the same file stops with a message (exit 2) before anything is written,
and the runner holds each run directory while it trains. The processes of
the Table 1 campaign share one runs folder by design, one row each, and
write no result file until ``--report`` (``writes_output``).
"""

import argparse
import datetime
import importlib
import os
import re
import shlex
import sys

from cram_keras.experiments import named as named_configs
from cram_keras.experiments.cli import (
    exit_code,
    interrupted,
    interruption_of,
    prepare_caches,
    sigterm_interrupts,
)
from cram_keras.experiments.config import add_set_flag, parse_assignments
from cram_keras.training import run_lock
from cram_keras.utils import unwritable_reason

EXIT_USAGE = 2
# What a study's run directory that holds another config's work asks for
# (a study has no --output-dir or --overwrite of its own).
RUN_DIR_REMEDY = (
    "choose another --runs-dir, or delete that directory to train the run anew"
)


class StudyError(ValueError):
    """A study that cannot run as asked (one line, exit 2)."""


class Study:
    """One invocation of a study: the configuration and the driver's
    options, resolved."""

    def __init__(self, named, args, argv):
        self.named = named
        self.name = named.name
        self.args = args
        self.smoke = args.smoke
        config_cls = named.module().Config
        try:
            self.changes = parse_assignments(config_cls, args.assignments)
        except ValueError as err:
            raise StudyError(str(err)) from None
        self.locations = {
            key: getattr(args, key)
            for key in named_configs.LOCATION_FIELDS
            if getattr(args, key, None)
        }
        default = named.extra.get("DEFAULT_VARIANTS") or list(named.variants)
        self.variants = _names(args.variants, named.variants) or list(default)
        self.seeds = list(named.seeds) or [None]
        # A smoke run's runs, result file and figures go beside each other,
        # away from the configuration's (those of its real runs).
        self.runs_dir = args.runs_dir or os.path.join(
            "runs", "studies", *self.name.split("/")
        ) + ("_smoke" if self.smoke else "")
        if not getattr(args, "report", False):  # a report only reads them
            from cram_keras.experiments.run_dir import check_output_dir

            check_output_dir(self.runs_dir, "--runs-dir")
        self.output = args.output or self._own(named.output)
        self.command = shlex.join(["python", "run_study.py", *portable(argv)])

    def config(self, variant=None, seed=None, **changes):
        """The Config of one run (``variant``, ``seed``), with ``--set``,
        the data folders and ``changes``."""
        return self.named.resolve(
            variant,
            seed,
            {**self.changes, **changes, **self.locations},
            smoke=self.smoke,
        )

    def run_dir(self, variant, seed=None):
        name = variant if seed is None else f"{variant}_seed{seed}"
        return os.path.join(self.runs_dir, name)

    def figure(self, key):
        """A figure's path: ``--figure KEY=PATH``, else the configuration's
        FIGURES (None or '': none; with ``--smoke`` in the runs folder)."""
        for item in reversed(self.args.figure):
            name, _, path = item.partition("=")
            if name == key:
                return path or None
        default = self.named.figures.get(key)
        if isinstance(default, dict):  # {row: path}
            return {row: self._own(path) for row, path in default.items()}
        return self._own(default)

    def _own(self, path):
        """A result file or figure of the configuration: ``path``, or with
        ``--smoke`` its name in the runs folder (a smoke run never writes
        over the files of the real runs)."""
        if not path or not self.smoke:
            return path
        return os.path.join(self.runs_dir, os.path.basename(path))

    def provenance(self):
        """What every result file of a configuration records."""
        from cram_keras.platform_info import describe

        base = self.config()
        drop = ("seed",) if self.named.seeds else ()
        return dict(
            configuration=self.name,
            # The day (UTC) the file was written.
            date=datetime.datetime.now(datetime.timezone.utc).date().isoformat(),
            settings=named_configs.recorded_settings(base, drop),
            variants={v: self.named.variants[v] for v in self.variants},
            seeds=[s for s in self.seeds if s is not None],
            commit=self.args.commit or named_configs.commit(),
            command=self.command,
            hardware=describe(),
        )

    def write(self, results):
        """Writes ``results`` with the provenance to the result file (a
        provenance key that ``results`` holds keeps its value there)."""
        from cram_keras.utils import write_json

        os.makedirs(os.path.dirname(os.path.abspath(self.output)), exist_ok=True)
        write_json(self.output, {**self.provenance(), **results})
        return self.output


# Flags whose value names a folder or file of the machine that ran the study.
LOCAL_PATH_FLAGS = ("--data-dir", "--cache-dir", "--runs-dir", "--output")


def portable(argv):
    """``argv`` as a result file records it: the data and cache folders as
    DIR, and absolute run folders, output files and figure paths (``--figure
    KEY=PATH``) as DIR or FILE (paths of the machine that ran it), but
    relative to the folder it ran in where they lie under it; relative
    paths stay."""
    out, pending = [], None
    for arg in argv:
        flag, eq, value = arg.partition("=")
        if pending == "--figure":
            key, eq_, path = arg.partition("=")
            out.append(f"{key}=FILE" if eq_ and os.path.isabs(path) else arg)
            pending = None
        elif pending is not None:
            out.append(_placeholder(pending, arg))
            pending = None
        elif flag in LOCAL_PATH_FLAGS and eq:
            out.append(f"{flag}={_placeholder(flag, value)}")
        else:
            out.append(arg)
            pending = arg if arg in (*LOCAL_PATH_FLAGS, "--figure") else None
    return out


def recorded_path(path, runs_dir=None):
    """A run directory as a result file records it: a relative path as it
    is; an absolute one (a folder of the machine that ran it) as ``DIR/``
    and its path inside ``runs_dir`` (the study's ``--runs-dir``, which
    `portable` records as DIR), else ``DIR/<its name>``."""
    if not os.path.isabs(path):
        return path
    path = os.path.normpath(path)
    if runs_dir is not None:
        inside = os.path.relpath(path, os.path.abspath(runs_dir))
        if not inside.startswith(os.pardir):
            return os.path.join("DIR", inside)
    return os.path.join("DIR", os.path.basename(path))


def command_line(script, argv):
    """How a result file records ``python SCRIPT ARGV...`` (`portable`),
    e.g. a benchmark's ``command_line("benchmarks/sampler.py",
    sys.argv[1:])``."""
    return shlex.join(["python", script, *portable(argv)])


def _placeholder(flag, value):
    if flag in ("--data-dir", "--cache-dir"):
        return "DIR"
    if os.path.isabs(value):
        inside = os.path.relpath(value)
        if not inside.startswith(os.pardir):
            return inside  # under the folder it ran in: as one types it there
        return "FILE" if flag == "--output" else "DIR"
    return value


def run_grid(study, run_one, summarise):
    """Trains each selected variant once per seed, one run after the other
    (every Config is checked before the first run trains); after each run
    rewrites the result file with ``summarise(records)``, where
    ``records[variant][seed]`` is what ``run_one(config, run_dir, variant,
    seed)`` returned. Returns (records, results)."""
    configs = {
        (variant, seed): study.config(variant, seed)
        for variant in study.variants
        for seed in study.seeds
    }
    records, results = {}, {}
    for (variant, seed), config in configs.items():
        run_dir = study.run_dir(variant, seed)
        records.setdefault(variant, {})[seed] = run_one(config, run_dir, variant, seed)
        results = summarise(records)
        study.write(results)
    return records, results


def runs_so_far(study, read_run, state):
    """The runs of ``study`` as far as they have got, nothing trained:
    (``runs[variant][seed]``, ``status[variant][seed]``), seeds as strings.
    ``read_run(run_dir)`` is a run's entry, None before its first finished
    epoch ("not started"); ``state(entry)`` its status text. Refuses when no
    run has an entry."""
    runs, status = {}, {}
    for variant in study.variants:
        for seed in study.seeds:
            entry = read_run(study.run_dir(variant, seed))
            key = str(seed)
            if entry is None:
                status.setdefault(variant, {})[key] = "not started"
                continue
            runs.setdefault(variant, {})[key] = entry
            status.setdefault(variant, {})[key] = state(entry)
    if not runs:
        raise StudyError(
            f"no run of {study.name} has finished an epoch under {study.runs_dir} "
            "(--runs-dir names the folder of its run directories)"
        )
    return runs, status


def lost_runs(path, runs, section, done):
    """What a progress report must not drop: the result file ``path``'s
    ``lost_runs``, and each run of its ``section`` (``{variant: {seed:
    run}}``) that had got further than the run of the same variant and seed
    in ``runs`` (its directory restarted from scratch, e.g. on a fresh
    machine), with ``variant`` and ``seed``. ``done(run)``: how far a run
    has got (its finished epochs)."""
    from cram_keras.utils import read_json

    if not os.path.exists(path):
        return []
    previous = read_json(path)
    lost = list(previous.get("lost_runs", []))
    for variant, per_seed in previous.get(section, {}).items():
        for seed, old in per_seed.items():
            new = runs.get(variant, {}).get(seed)
            if new is not None and done(old) > done(new):
                lost.append(dict(old, variant=variant, seed=seed))
    return lost


def timed_runs(base, key, runs):
    """A result file's ``{key: runs, "epochs", "n_train",
    "protocol_wall_seconds"}``: the records ``runs`` (``{name: record}``,
    each with its ``wall_seconds``), the epochs and training-set size of the
    base Config ``base``, and the runs' wall time together."""
    return {
        key: runs,
        "epochs": base.epochs,
        "n_train": base.n_train,
        "protocol_wall_seconds": sum(r["wall_seconds"] for r in runs.values()),
    }


def _names(text, known):
    if not text:
        return []
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in known]
    if unknown or len(set(names)) != len(names):
        raise StudyError(
            f"--variants takes distinct names of {', '.join(known)}. Received: {text!r}"
        )
    return names


def _commit(text):
    """``--commit``: a git commit hash, 4 to 40 hexadecimal digits."""
    if not re.fullmatch(r"[0-9a-f]{4,40}", text):
        raise argparse.ArgumentTypeError(
            "must be a git commit hash, 4 to 40 hexadecimal digits as "
            f"`git rev-parse HEAD` prints it. Received: {text!r}"
        )
    return text


def build_parser(named=None, protocol=None):
    title = named.header.get("title", "") if named else "Run a study configuration."
    parser = argparse.ArgumentParser(
        prog="run_study.py",
        description=title + "\n\n" + __doc__.split("\n\n")[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Studies: " + ", ".join(studies()),
    )
    parser.add_argument("name", metavar="NAME", help="the study configuration")
    common = parser.add_argument_group("every study")
    common.add_argument("--data-dir", default=None, metavar="DIR", help="the data")
    common.add_argument(
        "--cache-dir", default=None, metavar="DIR", help="cache of generated data"
    )
    common.add_argument(
        "--runs-dir",
        default=None,
        metavar="DIR",
        help="the run directories (default: runs/studies/NAME)",
    )
    common.add_argument(
        "--output",
        default=None,
        metavar="FILE",
        help="the result file (default: the configuration's)",
    )
    add_set_flag(
        common,
        "any Config field, for every run (repeatable)",
    )
    common.add_argument(
        "--variants", default=None, metavar="A,B", help="these variants only"
    )
    common.add_argument(
        "--figure",
        action="append",
        default=[],
        metavar="KEY=PATH",
        help="write the configuration's figure KEY to PATH instead ('' for none; "
        "repeatable)",
    )
    common.add_argument(
        "--commit",
        default=None,
        type=_commit,
        metavar="HASH",
        help="the commit of the code that trained the runs, recorded in the "
        "result file (default: this checkout's); for a report written from "
        "another checkout than the one the runs train in",
    )
    common.add_argument(
        "--smoke",
        action="store_true",
        help="the runner's smoke sizes and the bundled data (seconds per run); "
        "the runs, the result file and the figures go to runs/studies/NAME_smoke "
        "unless --runs-dir, --output or --figure say otherwise",
    )
    common.add_argument(
        "--debug", action="store_true", help="show the traceback of errors"
    )
    if protocol is not None and hasattr(protocol, "add_arguments"):
        protocol.add_arguments(parser.add_argument_group(f"{named.protocol}"))
    return parser


def studies():
    """The names of every study configuration."""
    found = []
    for name in named_configs.names():
        try:
            if named_configs.load(name)[0].is_study:
                found.append(name)
        except named_configs.ConfigurationError:
            continue
    return found


def check_result_file(path):
    """A result file the study can write (``--output``, or the
    configuration's): not a folder, in a folder that can be created and
    written; `StudyError` before anything trains."""
    if os.path.isdir(path):
        raise StudyError(
            f"--output names the result file, but {path!r} is a folder. "
            f"Received: --output {path!r}. Give a file name, e.g. "
            f"{os.path.join(path, 'results.json')!r}."
        )
    reason = unwritable_reason(os.path.dirname(os.path.abspath(path)))
    if reason:
        raise StudyError(
            f"--output {path!r} cannot be written: {reason}. Choose another --output."
        )


def load_study(name):
    """(NamedConfig, protocol module) of the study ``name``."""
    named, variant = named_configs.load(name)
    if variant is not None:
        raise StudyError(
            f"run_study.py runs a whole study; --variants {variant} runs one variant"
        )
    if not named.is_study:
        raise StudyError(
            f"{named.name} is no study (it has no PROTOCOL); run it with python "
            f"{named_configs.SCRIPTS[named.experiment]} --config "
            f"{named.name.split('/')[1]}"
        )
    return named, importlib.import_module(f"cram_keras.studies.{named.protocol}")


def _prepare_caches():
    """As the scripts do (`cram_keras.experiments.cli.prepare_caches`)."""
    import keras

    from cram_keras.experiments.errors import UsageError

    try:
        prepare_caches(keras.backend.backend())
    except UsageError as err:
        raise StudyError(str(err)) from None


@run_lock.refuses_when_busy
def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0].startswith("-"):
        build_parser().parse_args(argv)  # --help, or the usage error
        return EXIT_USAGE
    try:
        named, protocol = load_study(argv[0])
    except (named_configs.ConfigurationError, StudyError) as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_USAGE
    args = build_parser(named, protocol).parse_args(argv)
    from cram_keras.experiments.run_dir import remedy

    try:
        with sigterm_interrupts(), remedy(RUN_DIR_REMEDY):
            _prepare_caches()
            study = Study(named, args, argv)
            if getattr(protocol, "writes_output", lambda study: True)(study):
                check_result_file(study.output)
                run_lock.hold_for_call(study.output)
            return protocol.run(study) or 0
    except (named_configs.ConfigurationError, StudyError) as err:
        if args.debug:
            raise
        print(f"error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt as err:
        return interrupted(err)
    except Exception as err:
        interrupt = interruption_of(err)  # an error the interrupt raised
        if interrupt is not None:
            return interrupted(interrupt)
        # What a run of the study refuses or cannot read: one paragraph and
        # the scripts' exit code, as when the script runs it.
        code = exit_code(err)
        if code is None or args.debug:
            raise
        print(f"error: {err}", file=sys.stderr)
        return code
