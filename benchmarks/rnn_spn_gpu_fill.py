#!/usr/bin/env python
"""RNN-SPN Table 1 and its validation search on one GPU, filling one
time-limited call: many training processes at once, as many as keep the
GPU's throughput growing, stopped before a deadline and packed so that the
next call continues where this one stopped.

Made for a GPU machine whose calls are time-limited (at most 10 minutes
each, each on a fresh machine that keeps nothing between calls, with at
most 8 files of at most 16 MiB, 64 MiB together, coming back from the output
folder). `benchmarks/rnn_spn_paper_gpu.sh` prepares the environment (the
JAX backend, wheels from .whl, no memory preallocation) and runs this
script; from the repository root, a first call (of at most 600 seconds):

    OUT=/some/dir DATA_DIR=.devdata/mnist STOP_AFTER=500 CALL_SECONDS=595 \\
        bash benchmarks/rnn_spn_paper_gpu.sh search

and every later one, with all the files the previous call left in OUT
copied into a folder of the repository that git ignores and that the call
carries (``.resume/``, say):

    OUT=/some/dir DATA_DIR=.devdata/mnist STOP_AFTER=500 CALL_SECONDS=595 \\
        RESUME_DIR=.resume bash benchmarks/rnn_spn_paper_gpu.sh search

STOP_AFTER and CALL_SECONDS count from the start of the script (the
environment and the data generation included). After STOP_AFTER come the
stop (up to 10 s), the pack (seconds) and the reports, which end 5 s before
CALL_SECONDS (and after REPORT_TIMEOUT, default 120 s, at the latest).
DATA_DIR holds the four official MNIST IDX .gz files.

Jobs (the arguments; without any: ``rnn_spn ffn_spn conv``, the three d = 2
rows of Table 1):

* ``search``: the validation search over dropout rate, placement and d
  (``run_study.py rnn_spn/dropout_search``, the configuration
  SEARCH_CONFIG, with SEARCH_ARGS, e.g. ``--models rnn_spn --epochs 20``),
  split into SHARDS shards (default: the largest stage), one process each
  (``--shard K/N``);
* ``search:K/N``: one shard of it;
* ``MODEL[:D][:KEY=VALUE...]``: a Table 1 row trained to the paper protocol
  by ``run_study.py rnn_spn/table1`` (the configuration CONFIG; the row is
  its variant ``<model>`` for d = 2 and the CNN, ``<model>_d<d>``
  otherwise, and names the run directory), each KEY=VALUE one ``--set`` of
  it, e.g. ``rnn_spn:3:dropout=0.3:dropout_placement=paper``. D defaults
  to 2; the CNN (``conv``) takes none.

Processes start in the job list's order, in stages (STAGES, default
3,6,9,12 processes): each stage waits until every new process has committed
an epoch (past its start-up and compilation), measures the aggregate
training throughput over STAGE_SECONDS (default 30) and adds the next
stage's processes only while it grew by more than MIN_GAIN (default 0.10)
over the previous stage's. The throughput is read from the run directories'
``log.csv``: each committed epoch's sequences, spread over the time since
the same process's previous epoch (validation, checkpoints and the start of
a new search trial included). The table (processes, aggregate sequences/s,
per-process sequences/s, and nvidia-smi's utilisation and memory) is
``gpu_scaling.json`` in OUT; a later call can start at the count it found
(``STAGES=9``). A process that ends is replaced by the next job not started.

Near the deadline a search shard that begins a trial it cannot finish in
the time left (its epochs at the shard's recent epoch time) is stopped at
once, and no further shard starts: most trials' weights are too large to
carry to the next call (with the optimizer's state, about 200 MB for the
CNN and the d = 1 FFN-SPN, 85 MB for the d = 1 RNN-SPN, 30 to 45 MB for the
d = 2 SPNs, 8 to 20 MB for d = 3 and 4), so an unfinished one is lost.

At STOP_AFTER seconds every process gets SIGTERM, then SIGKILL after 10
seconds (the runner's checkpoints are crash-safe: a kill costs the epoch in
progress). Then OUT receives:

* ``gpu_scaling.json``: the scaling table, the jobs and how each ended, and
  what was packed;
* ``state.tar.gz``: each run directory's config, log, metrics and newest
  checkpoint record, the processes' console logs (their last 256 KiB) and
  ``resume_manifest.json``;
* ``weights.tar.part-NN``: the weights files those records name, of the runs
  that continue (unfinished Table rows first, then unfinished search
  trials, most epochs first; a file that is also the best weights is stored
  once), within RESUME_BYTES (default 40 MiB: what a later call can carry
  beside the repository and the data). A run whose weights do not fit is
  left out of the state, named in the output and the manifest, and starts
  from scratch in the next call: a Table row has to finish within one call
  when its weights (both files, if the best epoch is not the newest) exceed
  RESUME_BYTES;
* ``report.tar.gz``: the reports run after the pack over every run so far,
  ``run_study.py rnn_spn/table1 --report`` (the progress file
  rnn_spn_paper_gpu.json, the learning curves, attention figures; test
  errors at the best validation epoch so far) and ``run_study.py
  rnn_spn/dropout_search --report`` (rnn_spn_dropout_search_gpu.json), and
  their logs.

RESUME_DIR is unpacked into RUNS_DIR (default runs/rnn_spn_paper_gpu) before
anything starts; its report.tar.gz gives the reports the progress files to
merge into. Bad settings (no OUT, a STOP_AFTER that is no whole number, an
unknown job, an incomplete RESUME_DIR, ...) are refused, one line each,
before anything runs.
"""

import argparse
import csv
import dataclasses
import hashlib
import io
import json
import math
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tarfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STUDY = os.path.join(REPO, "run_study.py")
WRAPPER = "benchmarks/rnn_spn_paper_gpu.sh"
# The configurations the jobs run (CONFIG, SEARCH_CONFIG).
TABLE_CONFIG = "rnn_spn/table1"
SEARCH_CONFIG = "rnn_spn/dropout_search"

MIB = 1 << 20
MODELS = ("rnn_spn", "ffn_spn", "conv")
DEFAULT_JOBS = ("rnn_spn", "ffn_spn", "conv")
# The search's default epochs per trial (its configuration's EPOCHS_PER_TRIAL).
SEARCH_EPOCHS = 20
# Config fields the campaign sets from a job's own words.
JOB_FIELDS = ("model", "downsample", "data_dir")
# Search flags the driver sets itself.
SEARCH_OWN_FLAGS = ("--shard", "--runs-dir", "--output", "--data-dir", "--report")

STATE_FILE = "state.tar.gz"
WEIGHTS_PREFIX = "weights.tar.part-"
REPORT_FILE = "report.tar.gz"
SCALING_FILE = "gpu_scaling.json"
MANIFEST = "resume_manifest.json"
SEARCH_DIR = "search"
LOGS_DIR = "logs"
REPORTS_DIR = "reports"
# Files of OUT besides the weights parts.
FIXED_FILES = (SCALING_FILE, STATE_FILE, REPORT_FILE)
LOG_TAIL_BYTES = 256 * 1024
_SEARCH_LINE = re.compile(r"^search: (\S+) (\S+)\s*$", re.M)
_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")


class SettingError(ValueError):
    """A bad setting, refused before anything runs (one line)."""


# === Jobs ===


def row_key(model, downsample=2.0):
    """A Table 1 row's variant and run directory (table1.row_key)."""
    if model == "conv" or float(downsample) == 2.0:
        return model
    return f"{model}_d{float(downsample):g}"


@dataclasses.dataclass(frozen=True)
class Job:
    """One process: a Table 1 row (``kind="table"``) or a search shard."""

    kind: str
    name: str
    model: str | None = None
    downsample: float | None = None
    sets: tuple = ()
    shard: tuple | None = None

    def spec(self):
        if self.kind == "search":
            return f"search:{self.shard[0]}/{self.shard[1]}"
        words = [self.model]
        if self.model != "conv":
            words.append(f"{self.downsample:g}")
        return ":".join(words + list(self.sets))


def _number(text):
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def parse_job(text, shards):
    """One job word -> a list of `Job` (``search`` gives ``shards`` of them);
    SettingError with one line if it is no job."""
    usage = (
        "a job is search, search:K/N or MODEL[:D][:KEY=VALUE...] with MODEL one "
        f"of {', '.join(MODELS)}"
    )
    if text == "search":
        return [
            Job("search", f"search-{k}-of-{shards}", shard=(k, shards))
            for k in range(shards)
        ]
    head, _, rest = text.partition(":")
    if head == "search":
        k, sep, n = rest.partition("/")
        if not (sep and k.isdigit() and n.isdigit() and int(k) < int(n)):
            raise SettingError(
                f"search:K/N takes whole numbers 0 <= K < N. Received: {text!r}"
            )
        k, n = int(k), int(n)
        return [Job("search", f"search-{k}-of-{n}", shard=(k, n))]
    if head not in MODELS:
        raise SettingError(f"{usage}. Received: {text!r}")
    words = rest.split(":") if rest else []
    downsample = 2.0
    if words and "=" not in words[0]:
        if head == "conv":
            raise SettingError(
                "the CNN has no downsample factor: write conv[:KEY=VALUE...]. "
                f"Received: {text!r}"
            )
        downsample = _number(words[0])
        if downsample is None or downsample < 1:
            raise SettingError(
                f"D of MODEL:D must be a number of at least 1. Received: {text!r}"
            )
        words = words[1:]
    sets = []
    for word in words:
        key, sep, value = word.partition("=")
        if not sep or not _KEY.match(key) or not value:
            raise SettingError(f"{usage}; each KEY=VALUE non-empty. Received: {text!r}")
        if key.replace("-", "_") in JOB_FIELDS:
            raise SettingError(
                f"{key} is not a KEY=VALUE of a job: MODEL and D name the run "
                f"directory, DATA_DIR sets the data. Received: {text!r}"
            )
        sets.append(f"{key}={value}")
    key = row_key(head, downsample)
    return [
        Job("table", key, head, None if head == "conv" else downsample, tuple(sets))
    ]


def parse_jobs(words, shards):
    """The job list: every job of ``words`` in order; a run directory or a
    shard twice, or shards of different N, is refused."""
    jobs = []
    for word in words or DEFAULT_JOBS:
        jobs += parse_job(word, shards)
    names = [job.name for job in jobs]
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        raise SettingError(
            f"a job appears twice (one run directory, one process): {', '.join(twice)}"
        )
    counts = {job.shard[1] for job in jobs if job.kind == "search"}
    if len(counts) > 1:
        raise SettingError(
            "search shards must split the grid the same way (one N). Received: "
            + ", ".join(job.spec() for job in jobs if job.kind == "search")
        )
    return jobs


def parse_search_args(text):
    """SEARCH_ARGS -> (argument list, epochs per trial)."""
    try:
        words = shlex.split(text or "")
    except ValueError as err:
        raise SettingError(f"SEARCH_ARGS does not split into words: {err}") from None
    epochs = SEARCH_EPOCHS
    for index, word in enumerate(words):
        flag = word.split("=", 1)[0]
        if flag in SEARCH_OWN_FLAGS:
            raise SettingError(
                f"SEARCH_ARGS cannot hold {flag}: this script sets it. Received: {text!r}"
            )
        if flag == "--epochs":
            value = word.split("=", 1)[1] if "=" in word else None
            if value is None and index + 1 < len(words):
                value = words[index + 1]
            if value is None or not value.isdigit() or int(value) < 1:
                raise SettingError(
                    f"SEARCH_ARGS: --epochs takes a positive whole number. Received: "
                    f"{text!r}"
                )
            epochs = int(value)
    return words, epochs


# === Settings ===


def _env(name, default=None):
    value = os.environ.get(name)
    return default if value is None else value


def build_parser():
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("jobs", nargs="*", help="the job list (see above)")
    p.add_argument("--out", default=_env("OUT"), help="output folder (OUT)")
    p.add_argument(
        "--runs-dir",
        default=_env("RUNS_DIR", "runs/rnn_spn_paper_gpu"),
        help="run directories (RUNS_DIR): Table rows in it, the search in "
        f"{SEARCH_DIR}/, console logs in {LOGS_DIR}/, reports in {REPORTS_DIR}/",
    )
    p.add_argument("--data-dir", default=_env("DATA_DIR"), help="MNIST (DATA_DIR)")
    p.add_argument(
        "--stop-after",
        default=_env("STOP_AFTER", "0"),
        help="seconds after the start at which training stops (STOP_AFTER; 0: none)",
    )
    p.add_argument(
        "--started-at",
        default=None,
        help="the start, in seconds since the epoch (default: now)",
    )
    p.add_argument(
        "--resume-dir",
        default=_env("RESUME_DIR", ""),
        help="the files of the previous call, unpacked first (RESUME_DIR)",
    )
    p.add_argument(
        "--stages",
        default=_env("STAGES", "3,6,9,12"),
        help="process counts of the stages (STAGES)",
    )
    p.add_argument(
        "--stage-seconds",
        default=_env("STAGE_SECONDS", "30"),
        help="measured seconds of each stage (STAGE_SECONDS)",
    )
    p.add_argument(
        "--min-gain",
        default=_env("MIN_GAIN", "0.10"),
        help="add the next stage only while the aggregate grew by more than this "
        "fraction (MIN_GAIN)",
    )
    p.add_argument(
        "--shards",
        default=_env("SHARDS", ""),
        help="shards of the job 'search' (SHARDS; default: the largest stage)",
    )
    p.add_argument(
        "--config",
        default=_env("CONFIG", TABLE_CONFIG),
        help=f"the configuration of the Table rows (CONFIG; default {TABLE_CONFIG})",
    )
    p.add_argument(
        "--search-config",
        default=_env("SEARCH_CONFIG", SEARCH_CONFIG),
        help=f"the configuration of the search (SEARCH_CONFIG; default {SEARCH_CONFIG})",
    )
    p.add_argument(
        "--search-args",
        default=_env("SEARCH_ARGS", ""),
        help="more arguments of the search's run_study.py (SEARCH_ARGS)",
    )
    p.add_argument(
        "--resume-bytes",
        default=_env("RESUME_BYTES", str(40 * MIB)),
        help="bytes of state and weights packed for the next call (RESUME_BYTES)",
    )
    p.add_argument("--max-files", type=int, default=8, help="files OUT may hold")
    p.add_argument(
        "--max-file-bytes", type=int, default=16 * MIB, help="bytes of one file of OUT"
    )
    p.add_argument(
        "--max-total-bytes", type=int, default=64 * MIB, help="bytes of OUT together"
    )
    p.add_argument(
        "--report-reserve",
        type=int,
        default=4 * MIB,
        help="bytes of OUT kept for report.tar.gz",
    )
    p.add_argument("--grace", type=float, default=10.0, help="SIGTERM to SIGKILL (s)")
    p.add_argument("--poll", type=float, default=1.0, help="seconds between polls")
    p.add_argument(
        "--warmup-max",
        type=float,
        default=240.0,
        help="longest wait for every process's first epoch in a stage (s)",
    )
    p.add_argument(
        "--report-timeout",
        default=_env("REPORT_TIMEOUT", "120"),
        help="seconds the reports may take (REPORT_TIMEOUT)",
    )
    p.add_argument(
        "--call-seconds",
        default=_env("CALL_SECONDS", "0"),
        help="the call's own limit, counted from the start (CALL_SECONDS; 0: "
        "unknown): the reports end 5 s before it",
    )
    p.add_argument(
        "--check-only",
        action="store_true",
        help="only check the settings (no imports beyond the standard library)",
    )
    p.add_argument("--prepare-only", action="store_true", help=argparse.SUPPRESS)
    p.add_argument(
        "--no-prepare",
        action="store_true",
        help="skip the check of the jobs' settings and the data generation",
    )
    return p


@dataclasses.dataclass
class Settings:
    out: str
    runs_dir: str
    data_dir: str | None
    stop_after: float
    started_at: float
    stages: list
    stage_seconds: float
    min_gain: float
    jobs: list
    job_words: list
    search_args: list
    search_epochs: int
    resume_dir: str
    resume_bytes: int
    max_files: int
    max_file_bytes: int
    max_total_bytes: int
    report_reserve: int
    grace: float = 10.0
    poll: float = 1.0
    warmup_max: float = 240.0
    report_timeout: float = 120.0
    call_seconds: float = 0.0
    config: str = TABLE_CONFIG
    search_config: str = SEARCH_CONFIG

    @property
    def deadline(self):
        return self.started_at + self.stop_after if self.stop_after else math.inf


def _whole(name, text, low):
    text = str(text).strip()
    if not text.isdigit() or int(text) < low:
        raise SettingError(
            f"{name} must be a whole number of at least {low}. Received: {text!r}"
        )
    return int(text)


def _positive(name, text, allow_zero=False):
    value = _number(str(text))
    if value is None or value < 0 or (value == 0 and not allow_zero):
        raise SettingError(f"{name} must be a positive number. Received: {text!r}")
    return value


def settings_from_args(args):
    """Checks every setting (no file is written); SettingError on the first
    bad one."""
    if not args.out:
        raise SettingError("set OUT to the output folder")
    stop = str(args.stop_after).strip()
    if not stop.isdigit():
        raise SettingError(
            "STOP_AFTER must be a whole number of seconds (0: no limit). "
            f"Received: {args.stop_after!r}"
        )
    started = time.time() if args.started_at is None else _number(args.started_at)
    if started is None:
        raise SettingError(f"--started-at takes seconds. Received: {args.started_at!r}")
    try:
        stages = [int(v) for v in str(args.stages).split(",")]
    except ValueError:
        stages = []
    if not stages or stages[0] < 1 or stages != sorted(set(stages)):
        raise SettingError(
            "STAGES must be increasing positive process counts, e.g. 3,6,9,12. "
            f"Received: {args.stages!r}"
        )
    shards = _whole("SHARDS", args.shards, 1) if args.shards else stages[-1]
    jobs = parse_jobs(args.jobs, shards)
    rows = config_variants(args.config)
    config_variants(args.search_config)
    for job in jobs:
        if job.kind == "table" and job.name not in rows:
            raise SettingError(
                f"job {job.spec()!r}: {job.name} is not a row of {args.config} "
                f"(its rows: {', '.join(rows)})"
            )
    search_args, search_epochs = parse_search_args(args.search_args)
    if args.max_files < len(FIXED_FILES):
        raise SettingError(f"--max-files must be at least {len(FIXED_FILES)}")
    settings = Settings(
        out=args.out,
        runs_dir=args.runs_dir,
        data_dir=args.data_dir or None,
        stop_after=int(stop),
        started_at=started,
        stages=stages,
        stage_seconds=_positive("STAGE_SECONDS", args.stage_seconds),
        min_gain=_positive("MIN_GAIN", args.min_gain, allow_zero=True),
        jobs=jobs,
        job_words=list(args.jobs),
        search_args=search_args,
        search_epochs=search_epochs,
        resume_dir=args.resume_dir or "",
        resume_bytes=_whole("RESUME_BYTES", args.resume_bytes, 0),
        max_files=args.max_files,
        max_file_bytes=args.max_file_bytes,
        max_total_bytes=args.max_total_bytes,
        report_reserve=args.report_reserve,
        grace=args.grace,
        poll=args.poll,
        warmup_max=args.warmup_max,
        report_timeout=_positive("REPORT_TIMEOUT", args.report_timeout),
        call_seconds=_positive("CALL_SECONDS", args.call_seconds, allow_zero=True),
        config=args.config,
        search_config=args.search_config,
    )
    if settings.resume_dir:
        check_resume_dir(settings.resume_dir)
        if _holds_runs(settings.runs_dir):
            raise SettingError(
                f"RUNS_DIR {settings.runs_dir} already holds runs; unpacking "
                "RESUME_DIR over them would mix two states: use an empty RUNS_DIR, "
                "or rerun without RESUME_DIR to continue the runs there"
            )
    return settings


def config_variants(name):
    """The variant names of configuration ``name`` (configs/NAME.py), read
    with the standard library alone; SettingError if there is none."""
    import ast

    path = os.path.join(REPO, "configs", *name.split("/")) + ".py"
    if "." in name or not os.path.isfile(path):
        raise SettingError(f"no configuration {name!r} (configs/{name}.py)")
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            getattr(t, "id", None) == "VARIANTS" for t in node.targets
        ):
            return [ast.literal_eval(key) for key in node.value.keys]
    return []


def _holds_runs(runs_dir):
    return bool(run_directories(runs_dir)) if os.path.isdir(runs_dir) else False


# === Progress of the processes ===


def read_rows(path):
    """The rows of a ``log.csv`` (``[]`` if there is none)."""
    try:
        with open(path, newline="") as f:
            return list(csv.DictReader(f))
    except (OSError, csv.Error):
        return []


def row_samples(row):
    """Training sequences of one epoch's row (0 if it does not say)."""
    try:
        rate = float(row.get("train_samples_per_second") or "nan")
        seconds = float(row.get("train_seconds") or "nan")
    except ValueError:
        return 0
    value = rate * seconds
    return int(round(value)) if math.isfinite(value) else 0


class _DirWatch:
    def __init__(self, path, baseline):
        self.path = os.path.join(path, "log.csv")
        self.seen = baseline
        self.mtime = None


class Proc:
    """A running job: its process, console log and committed epochs
    (``events``: ``(time, sequences)`` in commit order)."""

    def __init__(self, job, popen, log_path, start, run_dirs, baselines, offset=0):
        self.job = job
        self.popen = popen
        self.log_path = log_path
        self.start = start
        self.end = None
        self.rc = None
        self.signalled = None
        self.events = []
        self.trials = []  # (time, run directory) of each trial a shard names
        self.trials_checked = 0
        self.baselines = baselines
        self.watches = {}
        self.log_offset = offset
        for path in run_dirs:
            self.watch(path)

    def watch(self, path):
        if path not in self.watches:
            self.watches[path] = _DirWatch(path, self.baselines.get(path, 0))

    @property
    def alive(self):
        return self.rc is None

    def poll(self, now, search_root):
        """Reads new epochs and console lines; returns True if it exited now."""
        if self.job.kind == "search":
            self._read_console(search_root, now)
        for watch in self.watches.values():
            self._read_dir(watch, now)
        if self.rc is None and self.popen.poll() is not None:
            self.rc = self.popen.returncode
            self.end = now
            for watch in self.watches.values():
                self._read_dir(watch, now)
            return True
        return False

    def _read_console(self, search_root, now):
        try:
            with open(self.log_path, "rb") as f:
                f.seek(self.log_offset)
                data = f.read()
        except OSError:
            return
        end = data.rfind(b"\n") + 1
        self.log_offset += end
        for model, trial in _SEARCH_LINE.findall(data[:end].decode(errors="replace")):
            self.watch(os.path.join(search_root, model, trial))
            self.trials.append((now, os.path.join(search_root, model, trial)))

    def _read_dir(self, watch, now):
        try:
            mtime = os.stat(watch.path).st_mtime
        except OSError:
            return
        if mtime == watch.mtime:
            return
        watch.mtime = mtime
        rows = read_rows(watch.path)
        if len(rows) < watch.seen:  # the run started over
            watch.seen = len(rows)
            return
        new = rows[watch.seen :]
        watch.seen = len(rows)
        if not new:
            return
        previous = self.events[-1][0] if self.events else self.start
        last = min(max(mtime, previous), now)
        # Rows committed between two polls share the interval evenly.
        for index, row in enumerate(new, 1):
            at = previous + (last - previous) * index / len(new)
            self.events.append((at, row_samples(row)))


def sequences_in(events, start, a, b):
    """Sequences a process trained within [a, b]: each committed epoch's
    sequences spread evenly over the time since the previous commit (or the
    process's start)."""
    total = 0.0
    previous = start
    for at, samples in events:
        if at > previous:
            overlap = min(at, b) - max(previous, a)
            if overlap > 0:
                total += samples * overlap / (at - previous)
        previous = max(previous, at)
    return total


def measure(procs, a, b):
    """Aggregate and per-process sequences/s of ``procs`` over [a, b]."""
    span = b - a
    per = {}
    for proc in procs:
        per[proc.job.name] = sequences_in(proc.events, proc.start, a, b) / span
    return sum(per.values()), per


def decide(history, min_gain):
    """``(add the next stage?, reason)`` after the newest stage of
    ``history`` (a list of measured stages, oldest first)."""
    if len(history) < 2:
        return True, "first stage"
    before = history[-2]["aggregate_sequences_per_second"]
    now = history[-1]["aggregate_sequences_per_second"]
    if before <= 0:
        return now > 0, "the previous stage trained nothing"
    gain = now / before - 1.0
    if gain > min_gain:
        return True, f"aggregate +{gain:.1%} > +{min_gain:.0%}"
    return False, f"aggregate {gain:+.1%}, not above +{min_gain:.0%}"


# === Running the jobs ===


def job_command(job, settings):
    """The command line of one job."""
    python = sys.executable
    runs = settings.runs_dir
    data = ["--data-dir", settings.data_dir] if settings.data_dir else []
    if job.kind == "search":
        k, n = job.shard
        return [
            python,
            STUDY,
            settings.search_config,
            *data,
            "--runs-dir",
            os.path.join(runs, SEARCH_DIR),
            "--output",
            os.path.join(runs, LOGS_DIR, f"{job.name}.json"),
            "--shard",
            f"{k}/{n}",
            *settings.search_args,
        ]
    words = [python, STUDY, settings.config, *data, "--runs-dir", runs]
    words += ["--variants", job.name, "--schedule", f"{job.model}:300"]
    for item in job.sets:
        words += ["--set", item]
    return words


def job_run_dirs(job, settings):
    """Run directories a job writes that are known in advance."""
    if job.kind == "table":
        return [os.path.join(settings.runs_dir, job.name)]
    return []


def log_snapshot(runs_dir):
    """``{run directory: rows of its log.csv}`` of every run directory now
    (absolute paths)."""
    found = {}
    for root, _, files in os.walk(runs_dir):
        if "log.csv" in files:
            found[os.path.abspath(root)] = len(read_rows(os.path.join(root, "log.csv")))
    return found


class Driver:
    """Starts the jobs in stages, measures each stage, stops at the deadline.

    ``command_for(job, settings)`` gives a job's command line and
    ``run_dirs_for(job, settings)`` its run directories known in advance
    (the tests substitute small stand-ins)."""

    def __init__(self, settings, command_for=None, run_dirs_for=None, log=print,
                 clock=time.time):  # fmt: skip
        self.settings = settings
        self.command_for = command_for or job_command
        self.run_dirs_for = run_dirs_for or job_run_dirs
        self.log = log
        self.clock = clock
        self.pending = list(settings.jobs)
        self.procs = []
        self.history = []
        self.stop_requested = None
        self.result = dict(
            stages_planned=list(settings.stages),
            min_gain=settings.min_gain,
            stage_seconds=settings.stage_seconds,
            scaling=[],
            chosen_processes=None,
            jobs=[],
            notes=[],
        )
        self.baselines = log_snapshot(settings.runs_dir)

    # --- processes ---

    def running(self):
        return [p for p in self.procs if p.alive]

    def launch(self, job, now):
        self.pending.remove(job)
        logs = os.path.join(self.settings.runs_dir, LOGS_DIR)
        os.makedirs(logs, exist_ok=True)
        log_path = os.path.join(logs, f"{job.name}.log")
        command = self.command_for(job, self.settings)
        with open(log_path, "ab") as f:
            f.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} "
                    f"{shlex.join(command)}\n".encode())  # fmt: skip
            offset = f.tell()
        log_file = open(log_path, "ab")  # noqa: SIM115 - the child writes it
        try:
            popen = subprocess.Popen(
                command,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        finally:
            log_file.close()
        dirs = [os.path.abspath(d) for d in self.run_dirs_for(job, self.settings)]
        proc = Proc(job, popen, log_path, now, dirs, self.baselines, offset)
        self.procs.append(proc)
        self.log(f"[{self.elapsed(now):6.1f} s] started {job.spec()} (pid {popen.pid})")
        return proc

    def poll(self, now):
        search_root = os.path.abspath(os.path.join(self.settings.runs_dir, SEARCH_DIR))
        for proc in self.procs:
            if proc.alive and proc.poll(now, search_root):
                state = "done" if proc.rc == 0 else f"exit {proc.rc}"
                self.log(f"[{self.elapsed(now):6.1f} s] {proc.job.spec()}: {state}, "
                         f"{len(proc.events)} epochs")  # fmt: skip
                if proc.rc != 0 and not proc.signalled:
                    self.log(_tail(proc.log_path, 1500))
        self.drain(now)

    def startable(self, now):
        """The pending jobs worth starting now: not a search shard when a
        whole trial would not end before the deadline."""
        late = False
        epoch = self.epoch_seconds()
        if epoch is not None and self.settings.deadline < math.inf:
            starts = [p.events[0][0] - p.start for p in self.procs if p.events]
            need = (
                sorted(starts)[len(starts) // 2] + self.settings.search_epochs * epoch
            )
            late = now + need > self.settings.deadline
        return [job for job in self.pending if not (late and job.kind == "search")]

    def fill(self, target, now):
        for job in self.startable(now):
            if len(self.running()) >= target:
                break
            self.launch(job, now)

    def epoch_seconds(self, proc=None):
        """The median time between two committed epochs: of ``proc`` (its
        last ten), else of every process in the last five minutes; None
        before there are three."""
        if proc is not None and len(proc.events) >= 4:
            times = [at for at, _ in proc.events[-11:]]
            gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
        else:
            recent = self.clock() - 300
            gaps = [
                b[0] - a[0]
                for p in self.procs
                for a, b in zip(p.events, p.events[1:], strict=False)
                if b[0] > recent
            ]
        if len(gaps) < 3:
            return None
        return sorted(gaps)[len(gaps) // 2]

    def drain(self, now):
        """Stops a search shard that has just begun a trial it cannot finish
        before the deadline (its epochs left, plus one for the start, at the
        shard's epoch time): that trial would be lost (the weights of most
        trials are too large to carry), and the GPU goes to the others."""
        s = self.settings
        if s.deadline == math.inf:
            return
        for proc in self.running():
            if proc.job.kind != "search" or proc.trials_checked == len(proc.trials):
                continue
            proc.trials_checked = len(proc.trials)
            run_dir = proc.trials[-1][1]
            left = s.search_epochs - len(read_rows(os.path.join(run_dir, "log.csv")))
            epoch = self.epoch_seconds(proc)
            if left <= 0 or epoch is None or now + (left + 1) * epoch <= s.deadline:
                continue
            _signal_group(proc.popen, signal.SIGTERM)
            proc.signalled = (
                f"SIGTERM: {os.path.relpath(run_dir, s.runs_dir)} needs about "
                f"{(left + 1) * epoch:.0f} s, {s.deadline - now:.0f} s left"
            )
            self.log(f"[{self.elapsed(now):6.1f} s] {proc.job.spec()} stopped: "
                     f"{proc.signalled[9:]}")  # fmt: skip

    def elapsed(self, now):
        return now - self.settings.started_at

    # --- the call ---

    def run(self):
        s = self.settings
        handlers = {}
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                handlers[sig] = signal.signal(sig, self._on_signal)
            except ValueError:  # not the main thread
                pass
        self.result["gpu"] = gpu_state(("name", "memory.total", "driver_version"))
        stage = 0
        target = 0
        phase = "launch"
        launched = opened = closed = settle_until = None
        stage_time = 0.0
        try:
            while True:
                now = self.clock()
                self.poll(now)
                if self.stop_requested or now >= s.deadline:
                    if phase in ("warmup", "window", "settle"):
                        self.result["notes"].append(
                            f"stopped during the stage of {target} processes, "
                            "before it was measured"
                        )
                    break
                if phase == "launch":
                    target = s.stages[stage]
                    launched = now
                    self.fill(target, now)
                    phase = "warmup"
                elif phase == "warmup":
                    self.fill(target, now)
                    new = [p for p in self.running() if p.start >= launched]
                    ready = all(p.events for p in new)
                    if ready or now - launched >= s.warmup_max:
                        opened = now
                        phase = "window"
                elif phase == "window":
                    self.fill(target, now)
                    if now - opened >= s.stage_seconds:
                        closed = now
                        lengths = [
                            b[0] - a[0]
                            for p in self.procs
                            for a, b in zip(p.events, p.events[1:], strict=False)
                            if b[0] > opened
                        ]
                        settle = 1.5 * max(lengths, default=0.0) + 2 * s.poll
                        settle_until = closed + min(settle, s.stage_seconds)
                        phase = "settle"
                elif phase == "settle":
                    self.fill(target, now)
                    behind = [
                        p for p in self.running()
                        if not p.events or p.events[-1][0] <= closed
                    ]  # fmt: skip
                    if behind and now < settle_until:
                        time.sleep(s.poll)
                        continue
                    self._record_stage(target, launched, opened, closed)
                    stage_time = now - launched
                    add, reason = decide(self.history, s.min_gain)
                    if add and stage + 1 >= len(s.stages):
                        add, reason = False, reason + "; no larger stage"
                    if add and not self.startable(now):
                        left = "; no job left to start"
                        if self.pending:
                            left = (
                                "; no search trial left could end before the deadline"
                            )
                        add, reason = False, reason + left
                    if add and now + stage_time > s.deadline:
                        add, reason = False, reason + "; no time for another stage"
                    self.history[-1]["decision"] = "add" if add else "stop adding"
                    self.history[-1]["reason"] = reason
                    self.log(f"[{self.elapsed(now):6.1f} s] "
                             f"{self.history[-1]['decision']}: {reason}")  # fmt: skip
                    self.write_result()
                    if add:
                        stage += 1
                        phase = "launch"
                    else:
                        phase = "steady"
                        self.result["chosen_processes"] = target
                elif phase == "steady":
                    self.fill(target, now)
                if not self.running() and not self.startable(now):
                    if phase != "steady":
                        self.result["notes"].append(
                            f"every job ended during the stage of {target} processes"
                        )
                    break
                time.sleep(s.poll)
        finally:
            self.stop_all()
            for sig, handler in handlers.items():
                signal.signal(sig, handler)
        if self.result["chosen_processes"] is None:
            self.result["chosen_processes"] = target
        self.write_result()
        return self.result

    def _on_signal(self, signum, frame):
        self.stop_requested = signal.Signals(signum).name

    def _record_stage(self, target, launched, opened, closed):
        procs = [
            p for p in self.procs if p.start < closed and (p.end or 1e300) > opened
        ]
        aggregate, per = measure(procs, opened, closed)
        processes = min(target, len(procs))
        epochs = sum(1 for p in procs for at, _ in p.events if opened < at <= closed)
        entry = dict(
            processes=processes,
            aggregate_sequences_per_second=round(aggregate, 1),
            per_process_sequences_per_second=round(aggregate / max(processes, 1), 1),
            window_seconds=round(closed - opened, 1),
            warmup_seconds=round(opened - launched, 1),
            epochs_in_window=epochs,
            per_job_sequences_per_second={k: round(v, 1) for k, v in per.items()},
            window_start_s=round(self.elapsed(opened), 1),
        )
        entry["gpu"] = gpu_state()
        self.history.append(entry)
        self.result["scaling"] = self.history
        self.log(f"[{self.elapsed(closed):6.1f} s] {processes} processes: "
                 f"{aggregate:.0f} sequences/s together, "
                 f"{aggregate / max(processes, 1):.0f} each "
                 f"({epochs} epochs in {closed - opened:.0f} s)")  # fmt: skip

    def stop_all(self):
        """SIGTERM to every running process group, SIGKILL after the grace."""
        running = self.running()
        now = self.clock()
        if running:
            self.log(f"[{self.elapsed(now):6.1f} s] stopping {len(running)} processes")
        for proc in running:
            _signal_group(proc.popen, signal.SIGTERM)
            proc.signalled = proc.signalled or "SIGTERM"
        end = time.monotonic() + self.settings.grace
        while time.monotonic() < end and any(p.popen.poll() is None for p in running):
            time.sleep(0.1)
        for proc in running:
            if proc.popen.poll() is None:
                _signal_group(proc.popen, signal.SIGKILL)
                proc.signalled = "SIGKILL"
        for proc in running:
            try:
                proc.popen.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.log(
                    f"warning: {proc.job.spec()} (pid {proc.popen.pid}) did not end"
                )
        now = self.clock()
        search_root = os.path.abspath(os.path.join(self.settings.runs_dir, SEARCH_DIR))
        for proc in running:
            proc.poll(now, search_root)
        self.result["stopped_at_s"] = round(self.elapsed(now), 1)
        if self.stop_requested:
            self.result["notes"].append(f"stopped early by {self.stop_requested}")

    def write_result(self):
        s = self.settings
        self.result["jobs"] = [
            dict(
                job=p.job.spec(),
                started_s=round(self.elapsed(p.start), 1),
                ended_s=None if p.end is None else round(self.elapsed(p.end), 1),
                exit=p.rc,
                stopped_by=p.signalled,
                epochs=len(p.events),
                sequences=sum(n for _, n in p.events),
            )
            for p in self.procs
        ] + [dict(job=job.spec(), started_s=None) for job in self.pending]
        self.result["stop_after_s"] = s.stop_after
        os.makedirs(s.out, exist_ok=True)
        _write_json(os.path.join(s.out, SCALING_FILE), self.result)


def gpu_state(fields=("utilization.gpu", "memory.used", "memory.total")):
    """``nvidia-smi``'s fields of the GPU (None without one)."""
    try:
        out = subprocess.run(
            ["nvidia-smi", f"--query-gpu={','.join(fields)}", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=20, check=True,
        ).stdout.strip()  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    return [dict(zip(fields, (v.strip() for v in line.split(",")), strict=False))
            for line in out.splitlines()]  # fmt: skip


def _signal_group(popen, sig):
    try:
        os.killpg(popen.pid, sig)
    except (ProcessLookupError, PermissionError):
        try:
            popen.send_signal(sig)
        except ProcessLookupError:
            pass


def _tail(path, size):
    try:
        with open(path, "rb") as f:
            f.seek(max(0, os.path.getsize(path) - size))
            return f.read().decode(errors="replace")
    except OSError:
        return ""


def _write_json(path, payload):
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(payload, f, indent=1, sort_keys=True)
        f.write("\n")
    os.replace(tmp, path)


# === Pack and unpack ===


def run_directories(runs_dir, absolute=False):
    """Run directories (folders with a config.json) under ``runs_dir``,
    relative to it (or absolute), sorted."""
    found = []
    for root, dirs, files in os.walk(runs_dir):
        rel = os.path.relpath(root, runs_dir)
        if rel.split(os.sep)[0] in (LOGS_DIR, REPORTS_DIR):
            dirs[:] = []
            continue
        if "config.json" in files and rel != ".":
            found.append(os.path.abspath(root) if absolute else rel)
            dirs[:] = []
    return sorted(found)


def newest_record(run_dir):
    """``(file name, record)`` of the newest checkpoint record that parses."""
    directory = os.path.join(run_dir, "checkpoints")
    try:
        names = os.listdir(directory)
    except OSError:
        return None, None
    names = sorted((n for n in names if re.fullmatch(r"epoch-\d{4,}\.json", n)),
                   key=lambda n: int(n[6:-5]), reverse=True)  # fmt: skip
    for name in names:
        try:
            with open(os.path.join(directory, name)) as f:
                return name, json.load(f)
        except (OSError, ValueError):
            continue
    return None, None


def _tar_bytes(size):
    """Bytes a member of ``size`` bytes takes in a tar, at most (header,
    padding, and room for a long-name header)."""
    return 3 * 512 + -(-size // 512) * 512


def plan_pack(runs_dir, search_epochs, budget):
    """What the next call needs: per run directory its small files, and the
    weights of the runs that continue, in priority order within ``budget``
    bytes of weights. Returns the plan dict."""
    runs = []
    for rel in run_directories(runs_dir):
        path = os.path.join(runs_dir, rel)
        kind = "trial" if rel.split(os.sep)[0] == SEARCH_DIR else "table"
        name, record = newest_record(path)
        epochs = len(record.get("log", [])) if record else 0
        has_metrics = os.path.exists(os.path.join(path, "metrics.json"))
        done = has_metrics or (kind == "trial" and epochs >= search_epochs)
        weights = {}
        if record and not done:
            for key in ("weights", "best_weights"):
                if record.get(key):
                    weights[os.path.join(rel, "checkpoints", record[key])] = dict(
                        size=record.get(f"{key}_size"),
                        sha256=record.get(f"{key}_sha256"),
                    )
        present = all(
            os.path.isfile(os.path.join(runs_dir, f))
            and os.path.getsize(os.path.join(runs_dir, f)) == meta["size"]
            for f, meta in weights.items()
        )
        runs.append(dict(rel=rel, kind=kind, record=name, epochs_done=epochs,
                         finished=done, weights=weights, present=present))  # fmt: skip
    order = sorted(
        (r for r in runs if r["weights"] and r["present"]),
        key=lambda r: (r["kind"] != "table", -r["epochs_done"], r["rel"]),
    )
    used = 10240 + 1024
    unique = {}  # sha256 -> first path
    for run in order:
        new = {}
        for f, meta in run["weights"].items():
            if meta["sha256"] not in unique and meta["sha256"] not in new:
                new[meta["sha256"]] = (f, meta["size"])
        cost = sum(_tar_bytes(size) for _, size in new.values())
        if used + cost <= budget:
            used += cost
            unique.update({sha: f for sha, (f, _) in new.items()})
            run["pack"] = "weights"
        else:
            run["pack"] = "dropped"
    for run in runs:
        if "pack" not in run:
            if run["finished"] or not run["weights"]:
                run["pack"] = "logs"
            else:  # weights named but not here
                run["pack"] = "dropped"
    aliases = {}
    members = []
    for run in runs:
        if run["pack"] != "weights":
            continue
        for f, meta in run["weights"].items():
            first = unique[meta["sha256"]]
            if first == f:
                members.append(f)
            else:
                aliases[f] = first
    return dict(runs=runs, weights=members, aliases=aliases, weights_bytes=used)


def _add_file(tar, path, arcname):
    info = tar.gettarinfo(path, arcname)
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    with open(path, "rb") as f:
        tar.addfile(info, f)


def _add_bytes(tar, arcname, data, mtime=None):
    info = tarfile.TarInfo(arcname)
    info.size = len(data)
    info.mtime = time.time() if mtime is None else mtime
    tar.addfile(info, io.BytesIO(data))


class _PartWriter:
    """A write-only stream cut into files of at most ``part_bytes``."""

    def __init__(self, directory, prefix, part_bytes):
        self.directory, self.prefix, self.part_bytes = directory, prefix, part_bytes
        self.parts = []
        self.file = None
        self.left = 0

    def write(self, data):
        data = memoryview(data)
        while len(data):
            if self.left == 0:
                self._next()
            n = min(self.left, len(data))
            self.file.write(data[:n])
            self.left -= n
            data = data[n:]
        return len(data)

    def _next(self):
        if self.file:
            self.file.close()
        name = f"{self.prefix}{len(self.parts):02d}"
        self.parts.append(name)
        self.file = open(os.path.join(self.directory, name), "wb")  # noqa: SIM115
        self.left = self.part_bytes

    def close(self):
        if self.file:
            self.file.close()
            self.file = None


class _PartReader:
    """Reads the files of ``paths`` as one stream."""

    def __init__(self, paths):
        self.paths = list(paths)
        self.file = None

    def read(self, size=-1):
        chunks = []
        while size != 0:
            if self.file is None:
                if not self.paths:
                    break
                self.file = open(self.paths.pop(0), "rb")  # noqa: SIM115
            data = self.file.read(size if size > 0 else -1)
            if not data:
                self.file.close()
                self.file = None
                continue
            chunks.append(data)
            if size > 0:
                size -= len(data)
        return b"".join(chunks)

    def close(self):
        if self.file is not None:
            self.file.close()
            self.file = None


def _sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def pack(settings, log=print, extra=None):
    """Writes state.tar.gz and weights.tar.part-NN into OUT within the
    limits; returns the manifest."""
    s = settings
    runs_dir = s.runs_dir
    os.makedirs(s.out, exist_ok=True)
    small = []  # (path, arcname, run directory or None)
    logs = os.path.join(runs_dir, LOGS_DIR)
    if os.path.isdir(logs):
        for name in sorted(os.listdir(logs)):
            small.append((os.path.join(logs, name), f"{LOGS_DIR}/{name}", None))
    candidates = plan_pack(runs_dir, s.search_epochs, budget=math.inf)
    for run in candidates["runs"]:
        for name in ("config.json", "log.csv", "metrics.json"):
            path = os.path.join(runs_dir, run["rel"], name)
            if os.path.isfile(path):
                small.append((path, f"{run['rel']}/{name}", run["rel"]))
        if run["record"]:
            rel = f"{run['rel']}/checkpoints/{run['record']}"
            small.append((os.path.join(runs_dir, rel), rel, run["rel"]))
    # The state with every run (an upper bound of the final one, which may
    # leave some out), and room for the manifest.
    state = os.path.join(s.out, STATE_FILE)
    _write_state(state, small)
    state_bound = os.path.getsize(state) + 64 * 1024
    weight_parts = s.max_files - len(FIXED_FILES)
    budget = min(
        s.resume_bytes - state_bound,
        s.max_total_bytes - state_bound - s.report_reserve - 256 * 1024,
        weight_parts * s.max_file_bytes,
    )
    if state_bound > min(s.max_file_bytes, s.resume_bytes):
        log(f"warning: the state may exceed one file of {s.max_file_bytes} bytes")
    plan = plan_pack(runs_dir, s.search_epochs, budget=max(budget, 0))
    dropped = {r["rel"] for r in plan["runs"] if r["pack"] == "dropped"}

    manifest = dict(
        format=1,
        search_epochs=s.search_epochs,
        runs={
            r["rel"]: dict(
                kind=r["kind"],
                epochs_done=r["epochs_done"],
                finished=r["finished"],
                pack=r["pack"],
            )
            for r in plan["runs"]
        },  # fmt: skip
        aliases=plan["aliases"],
        weights_parts=[],
        **(extra or {}),
    )
    # The weights first, so that the manifest names their parts.
    for name in os.listdir(s.out):
        if name.startswith(WEIGHTS_PREFIX):
            os.remove(os.path.join(s.out, name))
    if plan["weights"]:
        writer = _PartWriter(s.out, WEIGHTS_PREFIX, s.max_file_bytes)
        with tarfile.open(fileobj=writer, mode="w|") as tar:
            for rel in plan["weights"]:
                _add_file(tar, os.path.join(runs_dir, rel), rel)
        writer.close()
        for name in writer.parts:
            path = os.path.join(s.out, name)
            manifest["weights_parts"].append(
                dict(name=name, bytes=os.path.getsize(path), sha256=_sha256(path))
            )
    _write_state(state, [f for f in small if f[2] not in dropped], manifest)
    total = sum(os.path.getsize(os.path.join(s.out, n)) for n in os.listdir(s.out))
    counts = {}
    for r in plan["runs"]:
        counts[r["pack"]] = counts.get(r["pack"], 0) + 1
    log(f"packed {len(plan['runs'])} run directories ({counts}); "
        f"{len(manifest['weights_parts'])} weights parts; OUT holds {total} bytes")  # fmt: skip
    for r in plan["runs"]:
        if r["pack"] == "dropped":
            log(
                ("WARNING: Table row " if r["kind"] == "table" else "search trial ")
                + f"{r['rel']} ({r['epochs_done']} epochs, unfinished) left out: no "
                "room for its weights; it starts from scratch in the next call"
            )
    return manifest


def _write_state(path, files, manifest=None):
    """state.tar.gz: ``manifest`` and ``files`` (``(path, arcname, run)``;
    a console log only its last LOG_TAIL_BYTES)."""
    with tarfile.open(path, "w:gz", compresslevel=6) as tar:
        if manifest is not None:
            _add_bytes(tar, MANIFEST, json.dumps(manifest, indent=1).encode())
        for source, arcname, run in files:
            if run is None and os.path.getsize(source) > LOG_TAIL_BYTES:
                with open(source, "rb") as f:
                    f.seek(-LOG_TAIL_BYTES, os.SEEK_END)
                    _add_bytes(tar, arcname, f.read(), os.path.getmtime(source))
            else:
                _add_file(tar, source, arcname)


def _manifest(resume_dir):
    path = os.path.join(resume_dir, STATE_FILE)
    with tarfile.open(path, "r:gz") as tar:
        member = tar.extractfile(MANIFEST)
        if member is None:
            raise KeyError(MANIFEST)
        return json.loads(member.read())


def check_resume_dir(resume_dir):
    """SettingError unless ``resume_dir`` holds a complete pack."""
    if not os.path.isdir(resume_dir):
        raise SettingError(f"RESUME_DIR {resume_dir} is no folder")
    try:
        manifest = _manifest(resume_dir)
    except (OSError, KeyError, ValueError, tarfile.TarError) as err:
        raise SettingError(
            f"RESUME_DIR {resume_dir} holds no readable {STATE_FILE} with its "
            f"{MANIFEST} ({type(err).__name__}: {err})"
        ) from None
    for part in manifest.get("weights_parts", []):
        path = os.path.join(resume_dir, part["name"])
        if not os.path.isfile(path) or os.path.getsize(path) != part["bytes"]:
            raise SettingError(
                f"RESUME_DIR {resume_dir} lacks {part['name']} ({part['bytes']} "
                "bytes) named in its manifest: copy every file of the previous call"
            )
    return manifest


def _safe_extract(tar, path):
    if hasattr(tarfile, "data_filter"):
        tar.extractall(path, filter="data")
        return
    for member in tar:
        name = os.path.normpath(member.name)
        if name.startswith(("..", "/")) or not (member.isfile() or member.isdir()):
            raise tarfile.TarError(f"refusing to extract {member.name!r}")
        tar.extract(member, path)


def unpack(resume_dir, runs_dir, log=print):
    """Restores the run directories of a pack into ``runs_dir``."""
    manifest = check_resume_dir(resume_dir)
    os.makedirs(runs_dir, exist_ok=True)
    with tarfile.open(os.path.join(resume_dir, STATE_FILE), "r:gz") as tar:
        _safe_extract(tar, runs_dir)
    parts = manifest.get("weights_parts", [])
    for part in parts:
        if _sha256(os.path.join(resume_dir, part["name"])) != part["sha256"]:
            raise SettingError(f"{part['name']} does not match its recorded SHA-256")
    if parts:
        reader = _PartReader(os.path.join(resume_dir, p["name"]) for p in parts)
        try:
            with tarfile.open(fileobj=reader, mode="r|") as tar:
                _safe_extract(tar, runs_dir)
        finally:
            reader.close()
    for copy, first in manifest.get("aliases", {}).items():
        shutil.copyfile(os.path.join(runs_dir, first), os.path.join(runs_dir, copy))
    report = os.path.join(resume_dir, REPORT_FILE)
    if os.path.isfile(report):
        with tarfile.open(report, "r:gz") as tar:
            members = [m for m in tar.getmembers() if m.name.endswith(".json")]
            os.makedirs(os.path.join(runs_dir, REPORTS_DIR), exist_ok=True)
            for member in members:
                member.name = os.path.basename(member.name)
                if hasattr(tarfile, "data_filter"):
                    tar.extract(member, os.path.join(runs_dir, REPORTS_DIR),
                                filter="data")  # fmt: skip
                else:
                    tar.extract(member, os.path.join(runs_dir, REPORTS_DIR))
    runs = manifest.get("runs", {})
    with_weights = sum(1 for r in runs.values() if r["pack"] == "weights")
    log(f"resumed from {resume_dir}: {len(runs)} run directories, {with_weights} "
        f"with weights, {len(parts)} weights parts")  # fmt: skip
    return manifest


# === Reports ===


def report_commands(settings):
    """``{name: command}`` of the reports over every run in RUNS_DIR."""
    s = settings
    reports = os.path.join(s.runs_dir, REPORTS_DIR)
    data = ["--data-dir", s.data_dir] if s.data_dir else []
    python = sys.executable
    commands = {}
    table = [r for r in run_directories(s.runs_dir) if os.sep not in r]
    if table:
        words = [python, STUDY, s.config, "--report", *data, "--runs-dir", s.runs_dir]
        words += ["--output", os.path.join(reports, "rnn_spn_paper_gpu.json")]
        words += ["--command", gpu_command(s)]
        words += [
            "--curves-figure",
            os.path.join(reports, "rnn_spn_paper_gpu_curves.png"),
        ]
        for key in table:
            words += ["--attention-figure",
                      f"{key}={os.path.join(reports, f'attention_{key}.png')}"]  # fmt: skip
        commands["rnn_spn_paper"] = words
    if os.path.isdir(os.path.join(s.runs_dir, SEARCH_DIR)):
        words = [python, STUDY, s.search_config, "--report", *data]
        words += ["--runs-dir", os.path.join(s.runs_dir, SEARCH_DIR)]
        words += ["--output", os.path.join(reports, "rnn_spn_dropout_search_gpu.json")]
        commands["rnn_spn_dropout_search"] = words + s.search_args
    return commands


def gpu_command(settings):
    s = settings
    words = ["OUT=DIR", "DATA_DIR=MNIST_DIR", f"STOP_AFTER={s.stop_after}"]
    if s.search_args:
        words.append(shlex.quote(f"SEARCH_ARGS={shlex.join(s.search_args)}"))
    words += ["[RESUME_DIR=DIR]", "bash", WRAPPER, *s.job_words]
    return " ".join(words)


def run_reports(settings, log=print):
    """Runs the reports side by side (each within the report timeout) and
    writes report.tar.gz; returns their exit codes."""
    s = settings
    reports = os.path.join(s.runs_dir, REPORTS_DIR)
    os.makedirs(reports, exist_ok=True)
    running = {}
    for name, command in report_commands(s).items():
        f = open(os.path.join(reports, f"{name}.log"), "wb")  # noqa: SIM115
        running[name] = (subprocess.Popen(command, stdout=f, stderr=subprocess.STDOUT,
                                          stdin=subprocess.DEVNULL,
                                          start_new_session=True), f)  # fmt: skip
    codes = {}
    limit = s.report_timeout
    if s.call_seconds:
        limit = min(limit, s.started_at + s.call_seconds - 5 - time.time())
    end = time.monotonic() + limit
    for name, (popen, f) in running.items():
        try:
            codes[name] = popen.wait(timeout=max(1.0, end - time.monotonic()))
        except subprocess.TimeoutExpired:
            _signal_group(popen, signal.SIGKILL)
            codes[name] = popen.wait()
            log(f"{name} report: stopped after {limit:.0f} s")
        f.close()
        log(f"{name} report: exit {codes[name]}")
        log(_tail(os.path.join(reports, f"{name}.log"), 1200))
    write_report_tar(s)
    return codes


def write_report_tar(settings):
    """report.tar.gz of RUNS_DIR/reports within the room left in OUT (the
    figures are left out if it would not fit)."""
    s = settings
    reports = os.path.join(s.runs_dir, REPORTS_DIR)
    path = os.path.join(s.out, REPORT_FILE)
    others = sum(os.path.getsize(os.path.join(s.out, n)) for n in os.listdir(s.out)
                 if n != REPORT_FILE)  # fmt: skip
    room = min(s.max_file_bytes, s.max_total_bytes - others)
    names = sorted(os.listdir(reports)) if os.path.isdir(reports) else []
    for keep in (lambda n: True, lambda n: not n.endswith(".png")):
        with tarfile.open(path, "w:gz") as tar:
            for name in filter(keep, names):
                _add_file(tar, os.path.join(reports, name), name)
        if os.path.getsize(path) <= room:
            return path
    os.remove(path)
    return None


# === Preparation (imports the project) ===


def prepare(settings):
    """Checks each Table job's settings against the Config (one line per bad
    job) and generates the sequences once, before the processes share them."""
    from cram_keras.experiments import named, rnn_spn
    from cram_keras.experiments.config import parse_assignments

    table, _ = named.load(settings.config)
    bad = 0
    for job in settings.jobs:
        if job.kind != "table":
            continue
        try:
            changes = parse_assignments(rnn_spn.Config, list(job.sets))
            table.resolve(job.name, changes=dict(changes, data_dir=settings.data_dir))
        except (TypeError, ValueError) as err:
            print(f"job {job.spec()!r}: {err}", file=sys.stderr)
            bad += 1
    if bad:
        return 2
    start = time.time()
    splits, _ = rnn_spn.load_splits(rnn_spn.Config(data_dir=settings.data_dir))
    shapes = {k: v[0].shape for k, v in splits.items()}
    print(f"data: {shapes} ({time.time() - start:.1f} s)", flush=True)
    return 0


# === Main ===


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        settings = settings_from_args(args)
    except SettingError as err:
        print(err, file=sys.stderr)
        return 2
    if args.check_only:
        return 0
    if args.prepare_only:
        return prepare(settings)
    s = settings
    print(f"jobs: {' '.join(job.spec() for job in s.jobs)}; stages {s.stages}; "
          f"stop after {s.stop_after or 'the end of every job'} s", flush=True)  # fmt: skip
    if not args.no_prepare:
        command = [sys.executable, os.path.abspath(__file__), "--prepare-only"]
        command += argv if argv is not None else sys.argv[1:]
        env = dict(os.environ, OUT=s.out, STOP_AFTER=str(s.stop_after))
        env.pop("RESUME_DIR", None)
        command += ["--resume-dir", ""]
        code = subprocess.run(command, env=env).returncode
        if code:
            return code
    if s.resume_dir:
        unpack(s.resume_dir, s.runs_dir)
    os.makedirs(s.runs_dir, exist_ok=True)
    driver = Driver(s, log=lambda m: print(m, flush=True))
    result = driver.run()
    manifest = pack(s, log=lambda m: print(m, flush=True),
                    extra=dict(scaling=result["scaling"]))  # fmt: skip
    driver.result["pack"] = {k: manifest[k] for k in ("runs", "weights_parts")}
    driver.write_result()
    codes = run_reports(s, log=lambda m: print(m, flush=True))
    for row in result["scaling"]:
        print(f"scaling: {row['processes']} processes, "
              f"{row['aggregate_sequences_per_second']:.0f} sequences/s together, "
              f"{row['per_process_sequences_per_second']:.0f} each")  # fmt: skip
    for name in sorted(os.listdir(s.out)):
        print(f"{name}: {os.path.getsize(os.path.join(s.out, name))} bytes")
    print(f"done after {time.time() - s.started_at:.0f} s", flush=True)
    failed = [p for p in driver.procs if p.rc not in (0, None) and not p.signalled]
    return 1 if failed or any(codes.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
