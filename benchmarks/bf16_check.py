#!/usr/bin/env python
"""Keras' `mixed_bfloat16` policy for RNN-SPN on this CPU:
training speed against float32, and whether a short training run's curves
stay the same.

1. Speed: the median of `--steps` compiled RNN-SPN training steps (batch
   100, random inputs of the real shape) under each policy, as
   `train_speed.py` times them.
2. Curves: the same short training run (the paper's recipe on
   `--n-train` generated sequences, `--epochs` epochs, one seed; or the
   settings of a named configuration, `--config`) under each policy, from
   the same initial weights and batch order; per epoch the training loss
   and the validation per-digit error.

The committed file came from the configuration `rnn_spn/bf16_check`:

    python benchmarks/bf16_check.py --config rnn_spn/bf16_check \
        --data-dir MNIST_DIR --output benchmarks/results/bf16_check.json

Without `--data-dir` the bundled MNIST sample is used. Run the speed part on
an otherwise idle machine; the file records how busy the CPUs were and
whether the CPU has native bfloat16 instructions (AVX512_BF16 / AMX).
"""

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")

import argparse  # noqa: E402
import csv  # noqa: E402
import dataclasses  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

from cram_keras.experiments import named, rnn_spn  # noqa: E402
from cram_keras.platform_info import cpu_flags, describe  # noqa: E402
from cram_keras.studies.driver import command_line  # noqa: E402
from cram_keras.utils import write_json  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from train_speed import _median_step, keras_rnn_spn  # noqa: E402

POLICIES = ("float32", "mixed_bfloat16")


def curve(config, policy, runs_dir):
    """Per-epoch training loss and validation per-digit error of one run,
    trained with the scripts' own `--dtype-policy` setting."""
    config = dataclasses.replace(config, dtype_policy=policy)
    run_dir = os.path.join(runs_dir, policy)
    # Resumes an interrupted run; a finished one returns its metrics.
    metrics = rnn_spn.train_and_evaluate(config, run_dir)
    with open(os.path.join(run_dir, "log.csv"), newline="") as f:
        rows = list(csv.DictReader(f))
    return {
        "loss": [float(r["loss"]) for r in rows],
        "val_digit_error": [1.0 - float(r["val_digit_accuracy"]) for r in rows],
        "test_per_digit_error": metrics.get("test_per_digit_error"),
        "train_sequences_per_second": metrics.get("train_sequences_per_second"),
    }


def curves_config(args):
    """The curves' Config: a named configuration's settings, or the paper's
    recipe on --n-train sequences (a quarter of them, at least 100, for
    validation and test); --n-train and --epochs change either."""
    changes = {"data_dir": args.data_dir}
    if args.epochs is not None:
        changes["epochs"] = args.epochs
    if args.config:
        if args.n_train is not None:
            changes.update(n_train=args.n_train)
        return named.load(args.config, "rnn_spn")[0].resolve(changes=changes)
    n_train = 4000 if args.n_train is None else args.n_train
    return rnn_spn.Config(
        model="rnn_spn",
        epochs=changes.pop("epochs", 4),
        n_train=n_train,
        n_valid=max(n_train // 4, 100),
        n_test=max(n_train // 4, 100),
        **changes,
    )


def main(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--data-dir", default=None, help="MNIST files (default: bundled)")
    p.add_argument(
        "--config",
        default=None,
        metavar="NAME",
        help="the curves' settings from a named configuration, e.g. "
        "rnn_spn/bf16_check (its --n-train and --epochs unless given)",
    )
    p.add_argument(
        "--n-train", type=int, default=None, help="training sequences (default 4000)"
    )
    p.add_argument(
        "--epochs", type=int, default=None, help="epochs of each curve (default 4)"
    )
    p.add_argument("--steps", type=int, default=10, help="timed steps per policy")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--runs-dir", default=None, help="run directories (default: temp)")
    p.add_argument(
        "--reuse-speed",
        action="store_true",
        help="keep the speed figures of an existing --output (rerun only the curves)",
    )
    p.add_argument(
        "--speed-only", action="store_true", help="measure the speed and stop"
    )
    p.add_argument("--output", default="benchmarks/results/bf16_check.json")
    args = p.parse_args(argv)
    config = curves_config(args)  # a bad configuration stops here
    tf.config.threading.set_intra_op_parallelism_threads(args.threads)

    speed = {}
    if args.reuse_speed:
        with open(args.output) as f:
            speed = json.load(f)["speed"]
    for policy in POLICIES if not speed else ():
        keras.utils.set_random_seed(0)
        step = keras_rnn_spn("rnn_spn", 100, policy)
        median, times, busy = _median_step(step, args.steps, args.warmup)
        speed[policy] = {
            "sequences_per_second": 100 / median,
            "median_step_seconds": median,
            "step_seconds": times,
            "cpu_busy_before": busy,
        }
        print(f"{policy}: {100 / median:.1f} sequences/s", flush=True)

    record = {
        "speed": speed,
        "speed_ratio_bf16_to_float32": speed["mixed_bfloat16"]["sequences_per_second"]
        / speed["float32"]["sequences_per_second"],
        "hardware": describe(),
        "cpu_flags": cpu_flags(),
        "native_bf16": any(f in cpu_flags() for f in ("avx512_bf16", "amx_bf16")),
        "threads": args.threads,
        "versions": {"tensorflow": tf.__version__, "keras": keras.__version__},
        "command": command_line("benchmarks/bf16_check.py", argv or sys.argv[1:]),
    }
    if args.speed_only:
        write_json(args.output, record)
        return 0
    # Rerunning with the same --runs-dir resumes the curves' runs.
    runs_dir = args.runs_dir or tempfile.mkdtemp(prefix="bf16_check_")
    curves = {policy: curve(config, policy, runs_dir) for policy in POLICIES}
    reference = curves["float32"]["val_digit_error"]
    bf16 = curves["mixed_bfloat16"]["val_digit_error"]
    record.update(
        curves=curves,
        max_abs_val_digit_error_difference=max(
            abs(a - b) for a, b in zip(reference, bf16, strict=True)
        ),
        config={
            k: v for k, v in dataclasses.asdict(config).items() if k != "dtype_policy"
        },
    )
    if args.config:
        record.update(
            configuration=args.config,
            settings=named.recorded_settings(config, ("dtype_policy",)),
            commit=named.commit(),
        )
    if args.reuse_speed:
        record["command"] += "  (speed from the earlier --speed-only run)"
    write_json(args.output, record)
    for policy in POLICIES:
        c = curves[policy]
        errors = ", ".join(f"{100 * e:.1f}" for e in c["val_digit_error"])
        print(f"{policy}: val per-digit error by epoch {errors} %")
    return 0


if __name__ == "__main__":
    sys.exit(main())
