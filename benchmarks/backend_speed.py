#!/usr/bin/env python
"""Training throughput on this machine per backend and dtype policy.

For each model (`--models`: RNN-SPN at d = 2, the CRAM classifier, the
CRAM inpainter) a fresh process per backend (TensorFlow, JAX) and policy
(float32, mixed_bfloat16) builds the model as its training script does,
trains `--warmup` steps (building and compiling), then `--steps` steps in
one `fit` call on random inputs of the real shapes; the figure is the wall
time from the first of those steps to the end of the epoch (whose logs
wait for the last step's results), so it is what a run gets per step,
input pipeline and callbacks included, without the setup of the `fit` call. Settings run one after another, so the machine should
be otherwise idle; the file records how busy the CPUs were before each.

    python benchmarks/backend_speed.py --output benchmarks/results/backend_speed.json

No torch needed.
"""

import argparse
import datetime
import json
import os
import pathlib
import subprocess
import sys
import time

HERE = pathlib.Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))
MODELS = ("rnn_spn", "cram_classifier", "cram_inpainter")
BACKENDS = ("tensorflow", "jax")
POLICIES = ("float32", "mixed_bfloat16")
# The batch of each model (its script's default) and what one example is.
BATCH = {"rnn_spn": 100, "cram_classifier": 64, "cram_inpainter": 64}
UNIT = {"rnn_spn": "sequences", "cram_classifier": "images", "cram_inpainter": "images"}


def _fit_data(model_name, policy, batches):
    """``(model, fit_kwargs(steps))``: the model built and compiled as its
    script does under ``policy``, and the arguments of a ``fit`` over
    ``steps`` batches of random inputs."""
    import numpy as np

    from cram_keras.training.precision import dtype_policy_scope

    rng = np.random.default_rng(0)
    batch = BATCH[model_name]
    n = batch * batches
    if model_name == "rnn_spn":
        from cram_keras.experiments import rnn_spn

        config = rnn_spn.Config(batch_size=batch, dtype_policy=policy)
        with dtype_policy_scope(config):
            model = rnn_spn.compile_model(rnn_spn.build_model(config), config)
        x = rng.random((n, 100, 100, 1), dtype=np.float32)
        y = rng.integers(0, 10, (n, 3)).astype("int32")
        return model, lambda steps: dict(
            x=x[: steps * batch], y=y[: steps * batch], batch_size=batch
        )
    if model_name == "cram_classifier":
        from cram_keras.experiments import cram_cls

        config = cram_cls.Config(batch_size=batch, dtype_policy=policy)
        with dtype_policy_scope(config):
            model = cram_cls.compile_model(cram_cls.build_model(config), config)
        images = rng.random((n, 60, 60, 1), dtype=np.float32)
        clue = (rng.random((n, 60, 60, 1)) > 0.8).astype("float32")
        y = rng.integers(0, 10, n).astype("int32")
        return model, lambda steps: dict(
            x=(images[: steps * batch], clue[: steps * batch]),
            y=y[: steps * batch],
            batch_size=batch,
        )
    from cram_keras.experiments import inpaint

    config = inpaint.Config(batch_size=batch, dtype_policy=policy)
    x = rng.random((n, 32, 32, 3), dtype=np.float32)
    with dtype_policy_scope(config):
        model = inpaint.compile_model(
            inpaint.build_model(config, (32, 32, 3), steps_per_epoch=batches), config
        )
    return model, lambda steps: dict(
        x=inpaint.train_dataset(config, x[: steps * batch])
    )


def worker(model_name, policy, steps, warmup):
    """One setting in this process (its backend set before Keras loads);
    prints its result as one JSON line."""
    import keras

    from cram_keras.platform_info import accelerators, busy_fraction

    model, data = _fit_data(model_name, policy, max(steps, warmup))
    model.fit(**data(warmup), epochs=1, verbose=0)  # builds and compiles
    busy = busy_fraction(1.0)
    started = []
    first_batch = keras.callbacks.LambdaCallback(
        on_train_batch_begin=lambda batch, logs: started.append(time.perf_counter())
    )
    history = model.fit(**data(steps), epochs=1, verbose=0, callbacks=[first_batch])
    # From the first step's start to the epoch's end, whose logs wait for the
    # last step's results (JAX dispatches steps ahead of their results).
    seconds = time.perf_counter() - started[0]
    losses = [v for k, v in history.history.items() if "loss" in k]
    print(
        json.dumps(
            dict(
                backend=keras.backend.backend(),
                policy=policy,
                model=model_name,
                steps=steps,
                seconds=seconds,
                per_second=steps * BATCH[model_name] / seconds,
                unit=UNIT[model_name],
                cpu_busy_before=busy,
                accelerators=accelerators(),
                finite_loss=all(float(v[-1]) == float(v[-1]) for v in losses),
            )
        )
    )


def run_setting(backend, model_name, policy, steps, warmup):
    env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3")
    command = [
        sys.executable, str(pathlib.Path(__file__).resolve()), "--worker",
        model_name, policy, "--steps", str(steps), "--warmup", str(warmup),
    ]  # fmt: skip
    done = subprocess.run(
        command, env=env, cwd=REPO, check=True, capture_output=True, text=True
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    parser.add_argument(
        "--backends", nargs="+", choices=BACKENDS, default=list(BACKENDS)
    )
    parser.add_argument(
        "--policies", nargs="+", choices=POLICIES, default=list(POLICIES)
    )
    parser.add_argument("--steps", type=int, default=10, help="timed steps per setting")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    parser.add_argument("--output", type=pathlib.Path)
    parser.add_argument(
        "--worker", nargs=2, metavar=("MODEL", "POLICY"), help=argparse.SUPPRESS
    )
    args = parser.parse_args(argv)
    if args.worker:
        worker(*args.worker, args.steps, args.warmup)
        return
    from cram_keras.platform_info import cpu_flags, describe
    from cram_keras.studies.driver import command_line

    rows = []
    for model_name in args.models:
        for backend in args.backends:
            for policy in args.policies:
                row = run_setting(backend, model_name, policy, args.steps, args.warmup)
                rows.append(row)
                print(
                    f"{model_name} {backend} {policy}: {row['per_second']:.1f} "
                    f"{row['unit']}/s",
                    flush=True,
                )
    if args.output is None:
        return
    import jax
    import keras
    import tensorflow as tf

    result = dict(
        command=command_line("benchmarks/backend_speed.py", sys.argv[1:]),
        date=datetime.datetime.now(datetime.timezone.utc).strftime(
            "%Y-%m-%d %H:%M UTC"
        ),
        hardware=describe(),
        cpu_flags=cpu_flags(),
        versions=dict(
            tensorflow=tf.__version__, jax=jax.__version__, keras=keras.__version__
        ),
        protocol=f"{args.steps} steps in one fit call after {args.warmup} untimed "
        "(building and compiling), timed from the first step's start to the end "
        "of the epoch; one process per setting",
        results=rows,
    )
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
