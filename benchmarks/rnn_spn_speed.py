#!/usr/bin/env python
"""Training throughput (sequences/s) of RNN-SPN, FFN-SPN and the CNN on this
machine: the paper's optimiser, two-stage clipping and batch size 100 on
random 100x100 inputs, with and without XLA (``jit_compile``), and with
TensorFlow's oneDNN kernels off and on (``TF_ENABLE_ONEDNN_OPTS``, which
must be set before TensorFlow is imported, so each setting runs in its own
process).

    python benchmarks/rnn_spn_speed.py

Run it on an otherwise idle machine (stop background training first: a
crash-safe run resumes afterwards); the file records how busy the CPUs were
just before each measurement. Writes benchmarks/results/rnn_spn_speed.json.
"""

import argparse
import json
import os
import subprocess
import sys
import time


def measure(model_name, jit, batch_size, steps, warmup):
    import keras
    import numpy as np

    from cram_keras.data.pipelines import sequence_dataset
    from cram_keras.experiments import rnn_spn

    keras.utils.set_random_seed(0)
    config = rnn_spn.Config(model=model_name, jit_compile=jit, batch_size=batch_size)
    model = rnn_spn.compile_model(rnn_spn.build_model(config), config)
    rng = np.random.default_rng(0)
    n = batch_size * (steps + warmup)
    x = rng.integers(0, 256, size=(n, 100, 100, 1), dtype=np.uint8)
    y = rng.integers(0, 10, size=(n, 3))
    split = batch_size * warmup
    warm = sequence_dataset(x[:split], y[:split], batch_size)
    timed = sequence_dataset(x[split:], y[split:], batch_size).cache()
    for _ in timed:  # materialise the input pipeline before timing
        pass
    model.fit(warm, epochs=1, verbose=0)
    timer = _StepTimer()
    start = time.perf_counter()
    model.fit(timed, epochs=1, verbose=0, callbacks=[timer])
    seconds = time.perf_counter() - start
    step = float(np.median(timer.seconds))
    # The median step (callback to callback) is the throughput figure: fit()
    # itself adds a few seconds per call here (set-up and end of data), which
    # a training epoch of 600 steps spreads thin but 10 timed steps do not.
    return {
        "sequences_per_second": batch_size / step,
        "median_step_seconds": step,
        "step_seconds": timer.seconds,
        "fit_seconds": seconds,
        "steps": steps,
    }


def _step_timer_class():
    import keras

    class StepTimer(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.seconds = []

        def on_train_batch_begin(self, batch, logs=None):
            self._start = time.perf_counter()

        def on_train_batch_end(self, batch, logs=None):
            self.seconds.append(time.perf_counter() - self._start)

    return StepTimer


def _StepTimer():
    return _step_timer_class()()


def child(args):
    """Measures every model and jit setting in this process (one oneDNN
    setting); prints one JSON object."""
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from cram_keras.platform_info import busy_fraction

    results = {}
    for name in args.models.split(","):
        for jit in (False, True):
            busy = busy_fraction()
            r = measure(name, jit, args.batch_size, args.steps, args.warmup)
            r["cpu_busy_before"] = busy
            results[f"{name}/jit_compile={jit}"] = r
            print(
                f"onednn={os.environ.get('TF_ENABLE_ONEDNN_OPTS')}",
                name,
                f"jit_compile={jit}",
                f"{r['sequences_per_second']:.1f} sequences/s",
                file=sys.stderr,
                flush=True,
            )
    print(json.dumps(results))


def main(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--models", default="rnn_spn,ffn_spn,conv")
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument(
        "--steps", type=int, default=20, help="timed training steps per setting"
    )
    p.add_argument(
        "--warmup", type=int, default=3, help="untimed steps (tracing, XLA compile)"
    )
    p.add_argument(
        "--onednn", default="0,1", help="TF_ENABLE_ONEDNN_OPTS values (default: 0,1)"
    )
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--output", default="benchmarks/results/rnn_spn_speed.json")
    args = p.parse_args(argv)
    if args.child:
        child(args)
        return 0

    from cram_keras.platform_info import cpu_flags, describe
    from cram_keras.studies.driver import command_line
    from cram_keras.utils import write_json

    results = {}
    for value in args.onednn.split(","):
        env = dict(os.environ, TF_ENABLE_ONEDNN_OPTS=value)
        command = [sys.executable, os.path.abspath(__file__), "--child"]
        for flag in ("models", "batch_size", "steps", "warmup"):
            command += [f"--{flag.replace('_', '-')}", str(getattr(args, flag))]
        proc = subprocess.run(command, env=env, stdout=subprocess.PIPE, text=True)
        if proc.returncode != 0:
            print(f"the oneDNN={value} measurement failed", file=sys.stderr)
            return proc.returncode
        for key, r in json.loads(proc.stdout.strip().splitlines()[-1]).items():
            model, jit = key.split("/")
            results[f"{model}/onednn={value}/{jit}"] = r
    import keras

    payload = {
        "results": results,
        "batch_size": args.batch_size,
        "hardware": describe(),
        "cpu_flags": cpu_flags(),
        "keras": keras.__version__,
        "command": command_line("benchmarks/rnn_spn_speed.py", sys.argv[1:]),
    }
    write_json(args.output, payload)
    print(json.dumps(payload, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
