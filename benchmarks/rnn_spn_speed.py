#!/usr/bin/env python
"""Training throughput (sequences/s) of RNN-SPN, FFN-SPN and the CNN on this
machine: the paper's optimiser, two-stage clipping and batch size 100 on
random 100x100 inputs, with and without XLA (``jit_compile``).

    python benchmarks/rnn_spn_speed.py

Writes benchmarks/results/rnn_spn_speed.json.
"""

import argparse
import json
import os
import shlex
import sys
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from cram_keras.data.pipelines import sequence_dataset  # noqa: E402
from cram_keras.experiments import rnn_spn  # noqa: E402
from cram_keras.platform_info import describe  # noqa: E402
from cram_keras.utils import write_json  # noqa: E402


def measure(model_name, jit, batch_size, steps, warmup):
    import tensorflow as tf

    keras.utils.set_random_seed(0)
    config = rnn_spn.Config(model=model_name, jit_compile=jit, batch_size=batch_size)
    model = rnn_spn.compile_model(rnn_spn.build_model(config), config)
    rng = np.random.default_rng(0)
    n = batch_size * (steps + warmup)
    x = rng.integers(0, 256, size=(n, 100, 100, 1), dtype=np.uint8)
    y = rng.integers(0, 10, size=(n, 3))
    warm = sequence_dataset(
        x[: batch_size * warmup], y[: batch_size * warmup], batch_size
    )
    timed = sequence_dataset(
        x[batch_size * warmup :], y[batch_size * warmup :], batch_size
    )
    timed = timed.cache()
    for _ in timed:  # materialise the input pipeline before timing
        pass
    model.fit(warm, epochs=1, verbose=0)
    start = time.perf_counter()
    model.fit(timed, epochs=1, verbose=0)
    seconds = time.perf_counter() - start
    del tf
    return {
        "sequences_per_second": steps * batch_size / seconds,
        "seconds": seconds,
        "steps": steps,
    }


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
    p.add_argument("--output", default="benchmarks/results/rnn_spn_speed.json")
    args = p.parse_args(argv)
    results = {}
    for name in args.models.split(","):
        for jit in (False, True):
            r = measure(name, jit, args.batch_size, args.steps, args.warmup)
            results[f"{name}/jit_compile={jit}"] = r
            print(
                name,
                f"jit_compile={jit}",
                f"{r['sequences_per_second']:.1f} sequences/s",
                flush=True,
            )
    payload = {
        "results": results,
        "batch_size": args.batch_size,
        "hardware": describe(),
        "keras": keras.__version__,
        "command": "python " + " ".join(shlex.quote(a) for a in sys.argv),
    }
    write_json(args.output, payload)
    print(json.dumps(payload, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
