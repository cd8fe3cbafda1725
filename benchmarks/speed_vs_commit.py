#!/usr/bin/env python
"""A training step of this checkout against the same step at an earlier
commit, in alternating processes, with the loss curves of both compared.

    python benchmarks/speed_vs_commit.py --baseline 809bbcf \\
        --model cram_inpainter --policies float32 mixed_bfloat16 --rounds 4

The baseline's package is exported from git (`git archive`) into a
temporary folder. Every timing runs in a fresh process that puts one of the
two packages first on its import path (and checks that it imported that
one) and builds the step with this checkout's `benchmarks/train_speed.py`:
the model as its script builds it, random inputs of the real shape, seed 0,
`--warmup` untimed then `--steps` timed steps, the median. The baseline runs
float32 (the code as it was); this checkout runs each of `--policies`. The
rounds alternate the order of the processes, so that the machine's drift
during the run falls on both sides; the ratio is of the medians over the
rounds, and each round's ratio is kept too.

The losses of every step of the first round's processes are compared: the
same initial weights and batches, so a change that keeps the results gives
the baseline's float32 curve to float32 rounding (and to bfloat16 rounding
under `mixed_bfloat16`).

Run it on an otherwise idle machine (pause background training); the file
records how busy the CPUs were before each measurement. Writes
benchmarks/results/speed_vs_commit.json, one entry per model (a rerun
replaces that model's entry; the file is written after every round).
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCHMARKS = os.path.join(ROOT, "benchmarks")
DEFAULT_OUTPUT = os.path.join(ROOT, "benchmarks", "results", "speed_vs_commit.json")
# The models, their batch (as benchmarks/train_speed.py times them) and the
# unit of one training example.
MODELS = {
    "rnn_spn": (100, "sequences"),
    "cram_classifier": (64, "images"),
    "cram_inpainter": (64, "images"),
}

# One timing, in a fresh process: argv[1] is a JSON object of its settings.
CHILD = r"""
import json, os, sys
s = json.loads(sys.argv[1])
sys.path[:0] = [s["tree"], s["benchmarks"]]
import train_speed as ts
import cram_keras
imported = os.path.dirname(os.path.dirname(os.path.realpath(cram_keras.__file__)))
if imported != os.path.realpath(s["tree"]):
    sys.exit(f"imported cram_keras from {imported}, not from {s['tree']}")
import keras
import tensorflow as tf
tf.config.threading.set_intra_op_parallelism_threads(s["threads"])
keras.utils.set_random_seed(0)
builders = {
    "rnn_spn": lambda b, p: ts.keras_rnn_spn("rnn_spn", b, p),
    "cram_classifier": ts.keras_cram_cls,
    "cram_inpainter": ts.keras_inpaint,
}
step = builders[s["model"]](s["batch"], s["policy"])
losses = []
def run():
    logs = step()
    losses.append({k: float(v) for k, v in sorted(logs.items()) if "loss" in k})
median, times, busy = ts._median_step(run, s["steps"], s["warmup"])
print("RESULT " + json.dumps({"median_s": median, "times_s": times, "busy": busy,
                              "losses": losses}))
"""


def git(*args):
    return subprocess.run(
        ["git", *args], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.strip()


def resolve(commit):
    """The full hash and subject of ``commit``; exits with what to do when git
    does not know it."""
    try:
        full = git("rev-parse", "--verify", f"{commit}^{{commit}}")
    except (OSError, subprocess.CalledProcessError) as err:
        detail = getattr(err, "stderr", "") or str(err)
        sys.exit(
            f"--baseline {commit!r}: not a commit of this repository ({detail.strip()}). "
            "Give a commit hash or name from `git log`, in a git checkout."
        )
    return full, git("log", "-1", "--format=%s", full)


def export(commit, folder):
    """The baseline's `cram_keras` package, exported from git into ``folder``."""
    archive = os.path.join(folder, "baseline.tar")
    proc = subprocess.run(
        ["git", "archive", "--format=tar", "-o", archive, commit, "cram_keras"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        sys.exit(
            f"--baseline {commit[:12]}: its package could not be exported "
            f"({proc.stderr.strip()}). Give a commit that has the cram_keras package."
        )
    tree = os.path.join(folder, "baseline")
    with tarfile.open(archive) as tar:
        tar.extractall(tree, filter="data")
    os.remove(archive)
    return tree


def time_once(tree, model, policy, args):
    settings = {
        "tree": tree,
        "benchmarks": BENCHMARKS,
        "model": model,
        "policy": policy,
        "batch": args.batch or MODELS[model][0],
        "steps": args.steps,
        "warmup": args.warmup,
        "threads": args.threads,
    }
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", KERAS_BACKEND="tensorflow")
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, json.dumps(settings)],
        capture_output=True,
        text=True,
        env=env,
        cwd=tree,
        timeout=args.timeout,
    )
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        sys.exit(
            f"the {policy} timing of {model} from {tree} failed (exit "
            f"{proc.returncode}):\n{proc.stderr[-3000:]}"
        )
    return json.loads(lines[-1].removeprefix("RESULT "))


def compare_losses(reference, other):
    """Per loss, the largest absolute and relative difference over the steps
    both processes ran."""
    out = {}
    for step_ref, step_other in zip(reference, other, strict=False):
        for key, value in step_ref.items():
            if key not in step_other:
                continue
            diff = abs(step_other[key] - value)
            rel = diff / max(abs(value), 1e-12)
            worst = out.setdefault(key, {"max_abs": 0.0, "max_rel": 0.0})
            worst["max_abs"] = max(worst["max_abs"], diff)
            worst["max_rel"] = max(worst["max_rel"], rel)
    return out


def round_order(runs, r):
    """The processes of round ``r`` (0-based): ``runs`` in order in even
    rounds, reversed in odd ones, so that a drift of the machine's speed
    favours neither side."""
    return list(runs) if r % 2 == 0 else list(runs)[::-1]


def summarise(entry):
    rounds = entry["rounds"]
    keys = list(rounds[0]["ms"])
    medians = {k: statistics.median(r["ms"][k] for r in rounds) for k in keys}
    base = "baseline/float32"
    entry["median_ms"] = medians
    entry["per_second"] = {k: entry["batch"] / (v / 1000) for k, v in medians.items()}
    entry["ratio"] = {k: medians[base] / v for k, v in medians.items() if k != base}
    entry["round_ratios"] = {
        k: [r["ms"][base] / r["ms"][k] for r in rounds] for k in keys if k != base
    }
    return entry


def update_file_fields(result):
    """The file's own fields from its entries: every model's command, and
    the machine, date and versions where all entries share them (else the
    newest entry's; each entry keeps its own)."""
    entries = list(result["models"].values())
    result["command"] = "; ".join(dict.fromkeys(e["command"] for e in entries))
    newest = max(entries, key=lambda e: e["date"])
    for key in ("date", "hardware", "cpu_flags", "versions"):
        result[key] = newest[key]


def main(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--baseline", required=True, help="the earlier commit (hash or name)"
    )
    p.add_argument("--model", choices=sorted(MODELS), default="cram_inpainter")
    p.add_argument(
        "--policies",
        nargs="+",
        choices=["float32", "mixed_bfloat16"],
        default=["float32"],
        help="this checkout's dtype policies to time against the baseline's float32",
    )
    p.add_argument("--rounds", type=int, default=4, help="alternating rounds")
    p.add_argument("--steps", type=int, default=15, help="timed steps per process")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    p.add_argument(
        "--batch", type=int, help="default: the model's (rnn_spn 100, else 64)"
    )
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--timeout", type=int, default=900, help="seconds per process")
    p.add_argument("--output", default=DEFAULT_OUTPUT)
    args = p.parse_args(argv)
    for name in ("rounds", "steps", "threads"):
        if getattr(args, name) < 1:
            p.error(f"--{name} must be at least 1, got {getattr(args, name)}")
    if args.warmup < 0 or (args.batch is not None and args.batch < 1):
        p.error("--warmup must be at least 0 and --batch at least 1")

    baseline, subject = resolve(args.baseline)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.path.insert(0, ROOT)
    from cram_keras.platform_info import cpu_flags, describe
    from cram_keras.studies.driver import command_line
    from cram_keras.utils import write_json

    current = git("rev-parse", "HEAD")
    dirty = bool(
        git("status", "--porcelain", "--untracked-files=no", "--", "cram_keras")
    )
    result = {}
    if os.path.exists(args.output):
        with open(args.output) as f:
            result = json.load(f)
    import keras
    import tensorflow as tf

    command = command_line(
        "benchmarks/speed_vs_commit.py", argv if argv is not None else sys.argv[1:]
    )
    # Each model's entry records the machine it was timed on: the models of
    # one file may come from different machines and days. (Entries written
    # before this took the file's fields, which were those of the last run.)
    machine = {
        "date": time.strftime("%Y-%m-%d"),
        "hardware": describe(),
        "cpu_flags": cpu_flags(),
        "versions": {"tensorflow": tf.__version__, "keras": keras.__version__},
    }
    for earlier in result.get("models", {}).values():
        for key in machine:
            if key in result:
                earlier.setdefault(key, result[key])
    entry = {
        **machine,
        "command": command,
        "baseline": {"commit": baseline, "subject": subject},
        "current": {"commit": current, "cram_keras_uncommitted_changes": dirty},
        "batch": args.batch or MODELS[args.model][0],
        "unit": MODELS[args.model][1],
        "steps": args.steps,
        "warmup": args.warmup,
        "threads": args.threads,
        "rounds": [],
    }
    runs = [("baseline", "float32")] + [("current", pol) for pol in args.policies]
    with tempfile.TemporaryDirectory(prefix="speed-vs-commit-") as folder:
        trees = {"baseline": export(baseline, folder), "current": ROOT}
        for r in range(args.rounds):
            order = round_order(runs, r)
            ms, busy, losses = {}, {}, {}
            for code, policy in order:
                key = f"{code}/{policy}"
                out = time_once(trees[code], args.model, policy, args)
                ms[key], busy[key], losses[key] = (
                    1000 * out["median_s"],
                    out["busy"],
                    out["losses"],
                )
                print(f"round {r + 1}/{args.rounds}: {key} {ms[key]:.1f} ms per step "
                      f"(CPUs busy {100 * out['busy']:.0f} % before)", flush=True)  # fmt: skip
            entry["rounds"].append({"order": [f"{c}/{p}" for c, p in order], "ms": ms,
                                    "busy": busy})  # fmt: skip
            if r == 0:
                entry["losses"] = {
                    "steps": len(losses["baseline/float32"]),
                    "against_baseline_float32": {
                        k: compare_losses(losses["baseline/float32"], v)
                        for k, v in losses.items()
                        if k != "baseline/float32"
                    },
                }
            result.setdefault("models", {})[args.model] = summarise(entry)
            update_file_fields(result)
            write_json(args.output, result)
    for key, value in entry["ratio"].items():
        print(f"{args.model}: {key} {value:.2f}x the baseline's float32 "
              f"(rounds: {', '.join(f'{x:.2f}' for x in entry['round_ratios'][key])})")  # fmt: skip
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
