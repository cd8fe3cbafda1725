#!/usr/bin/env python
"""The inpainter's GAN training step under `float32` and `mixed_bfloat16`,
timed in alternating rounds in one process (so that the machine's drift
during the run does not enter the ratio).

Both inpainters are the budget setting of the quality comparison
(configuration ``inpaint/bf16_mnist32``: CRAM encoder, the released code's
sizes, batch 64, MNIST-32 images), built side by side from the same seed;
every round runs `--steps` training steps of one of them through `fit` on
random images with the training masks, after `--warmup` untimed steps each.
The step time is the median over every timed step on TensorFlow (a step has
run when `fit` reports its end) and the median round's time per step on JAX
(which dispatches asynchronously); the rounds' times, every step's and the
share of the CPUs that other processes used meanwhile are recorded too.
The result is merged into the output file under the backend's name:

    python benchmarks/inpaint_bf16_speed.py
    KERAS_BACKEND=jax python benchmarks/inpaint_bf16_speed.py

Run it on an otherwise idle machine: the file records how busy the CPUs were
before the rounds and whether the CPU has native bfloat16 instructions
(AVX512_BF16 / AMX).
"""

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import keras  # noqa: E402
import numpy as np  # noqa: E402

from cram_keras.experiments import inpaint, named  # noqa: E402
from cram_keras.experiments.runner import dtype_policy_scope  # noqa: E402
from cram_keras.platform_info import busy_fraction, cpu_flags, describe  # noqa: E402
from cram_keras.studies.driver import command_line  # noqa: E402
from cram_keras.utils import write_json  # noqa: E402

POLICIES = ("float32", "mixed_bfloat16")
CONFIGURATION = "inpaint/bf16_mnist32"


def build(config, image_shape):
    """The experiment's own inpainter for `config`, compiled, under its
    `dtype_policy` (as `--dtype-policy` builds it)."""
    keras.utils.set_random_seed(config.seed)
    with dtype_policy_scope(config):
        model = inpaint.build_model(config, image_shape, steps_per_epoch=100)
        return inpaint.compile_model(model, config)


class StepTimes(keras.callbacks.Callback):
    """The wall time of each training step (on TensorFlow a step has run
    when `fit` reports its end; JAX dispatches asynchronously, so there
    only the rounds' times count)."""

    def __init__(self):
        super().__init__()
        self.seconds = []

    def on_train_batch_begin(self, batch, logs=None):
        self.start = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        self.seconds.append(time.perf_counter() - self.start)


def time_rounds(models, datasets, rounds, steps):
    """Seconds per step of each model in each round, and of each step; the
    models take turns (and the first one alternates between rounds)."""
    times = {name: [] for name in models}
    steps_seconds = {name: [] for name in models}
    order = list(models)
    for r in range(rounds):
        for name in order if r % 2 == 0 else reversed(order):
            step_times = StepTimes()
            start = time.perf_counter()
            models[name].fit(
                datasets[name],
                steps_per_epoch=steps,
                epochs=1,
                verbose=0,
                shuffle=False,
                callbacks=[step_times],
            )
            times[name].append((time.perf_counter() - start) / steps)
            steps_seconds[name] += step_times.seconds
    return times, steps_seconds


def result_ratio(seconds, statistic):
    """float32's `statistic` of the step times over mixed_bfloat16's."""
    return float(statistic(seconds["float32"]) / statistic(seconds["mixed_bfloat16"]))


def cpu_seconds():
    """(CPU seconds of the whole machine, of this process) so far."""
    with open("/proc/stat") as f:
        # user nice system idle iowait irq softirq steal (guest is in user).
        values = [int(v) for v in f.readline().split()[1:9]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    ticks = os.sysconf("SC_CLK_TCK")
    own = os.times()
    return (sum(values) - idle) / ticks, own.user + own.system


def other_processes_share(start, seconds):
    """The share of the CPUs that other processes used during the rounds
    (0: the machine was this benchmark's alone)."""
    try:
        end = cpu_seconds()
    except (OSError, ValueError, IndexError):
        return None
    busy = (end[0] - start[0]) - (end[1] - start[1])
    return max(0.0, busy / (seconds * len(os.sched_getaffinity(0))))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=16, help="rounds per policy")
    p.add_argument("--steps", type=int, default=4, help="training steps per round")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps per model")
    p.add_argument("--batch-size", type=int, default=None, help="default: the budget's")
    p.add_argument("--output", default="benchmarks/results/inpaint_bf16_speed.json")
    args = p.parse_args(argv)

    study, _ = named.load(CONFIGURATION)
    changes = {} if args.batch_size is None else {"batch_size": args.batch_size}
    # The study's two variants (the same settings but the policy), seed 0.
    configs = {policy: study.resolve(policy, 0, changes) for policy in POLICIES}
    assert all(c.dtype_policy == p for p, c in configs.items()), configs
    batch = configs["float32"].batch_size
    image_shape = (32, 32, 1)
    x = np.random.default_rng(0).random((batch * 8,) + image_shape, dtype=np.float32)
    models, datasets = {}, {}
    for policy, config in configs.items():
        models[policy] = build(config, image_shape)
        datasets[policy] = inpaint.train_dataset(config, x).repeat()
    # Untimed: tracing or compiling, and the kernels' first calls.
    for policy in POLICIES:
        models[policy].fit(
            datasets[policy],
            steps_per_epoch=args.warmup,
            epochs=1,
            verbose=0,
            shuffle=False,
        )
    time_rounds(models, datasets, 1, args.warmup)
    busy = busy_fraction(1.0)
    start, cpu = time.perf_counter(), cpu_seconds()
    times, step_seconds = time_rounds(models, datasets, args.rounds, args.steps)
    seconds = time.perf_counter() - start
    others = other_processes_share(cpu, seconds)
    # The step itself: the median single step on TensorFlow (a round also
    # holds fit's start and end); JAX's steps run asynchronously, so there
    # the median round (its time over its steps).
    single = keras.backend.backend() == "tensorflow"
    measured = step_seconds if single else times
    medians = {p: float(np.median(t)) for p, t in measured.items()}
    result = {
        policy: {
            "median_step_seconds": medians[policy],
            "images_per_second": batch / medians[policy],
            "round_step_seconds": times[policy],
            "step_seconds": step_seconds[policy],
            "median_single_step_seconds": float(np.median(step_seconds[policy])),
            "fastest_quartile_step_seconds": float(
                np.percentile(step_seconds[policy], 25)
            ),
        }
        for policy in POLICIES
    }
    pairs = [
        a / b for a, b in zip(times["float32"], times["mixed_bfloat16"], strict=True)
    ]
    result.update(
        speedup=medians["float32"] / medians["mixed_bfloat16"],
        step_statistic="median single step" if single else "median round",
        speedup_per_round=pairs,
        batch_size=batch,
        image_shape=list(image_shape),
        encoder=configs["float32"].encoder,
        width=configs["float32"].width,
        rounds=args.rounds,
        steps_per_round=args.steps,
        warmup_steps=args.warmup,
        timed_seconds=seconds,
        busy_before=busy,
        other_processes_cpu_share=others,
        fastest_round_speedup=min(times["float32"]) / min(times["mixed_bfloat16"]),
        median_round_speedup=float(np.median(pairs)),
        median_single_step_speedup=result_ratio(step_seconds, np.median),
        fastest_quartile_speedup=result_ratio(
            step_seconds, lambda t: np.percentile(t, 25)
        ),
        versions={
            "keras": keras.__version__,
            keras.backend.backend(): _backend_version(),
        },
        command=command_line(
            "benchmarks/inpaint_bf16_speed.py",
            list(sys.argv[1:] if argv is None else argv),
        ),
    )
    if keras.backend.backend() != "tensorflow":
        result["command"] = (
            f"KERAS_BACKEND={keras.backend.backend()} " + result["command"]
        )
    stored = {}
    if os.path.exists(args.output):
        with open(args.output) as f:
            stored = json.load(f)
    stored.setdefault("backends", {})[keras.backend.backend()] = result
    stored.update(
        # The settings of the study's runs (not a result of the study).
        settings_of=CONFIGURATION,
        command=" && ".join(
            stored["backends"][b]["command"]
            for b in ("tensorflow", "jax")
            if b in stored["backends"]
        ),
        hardware=describe(),
        cpu_flags=cpu_flags(),
        tf_enable_onednn_opts=os.environ.get("TF_ENABLE_ONEDNN_OPTS"),
        date=time.strftime("%Y-%m-%d"),
    )
    write_json(args.output, stored)
    print(
        f"{keras.backend.backend()}: float32 {result['float32']['images_per_second']:.0f} "
        f"images/s, mixed_bfloat16 {result['mixed_bfloat16']['images_per_second']:.0f} "
        f"images/s ({result['speedup']:.2f}x; per round "
        f"{min(pairs):.2f}-{max(pairs):.2f}x, fastest rounds "
        f"{result['fastest_round_speedup']:.2f}x; single steps: median "
        f"{result['median_single_step_speedup']:.2f}x, fastest quartile "
        f"{result['fastest_quartile_speedup']:.2f}x; other processes "
        f"{100 * (others or 0):.0f} % of the CPUs)"
    )
    return 0


def _backend_version():
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        return tf.__version__
    if backend == "jax":
        import jax

        return jax.__version__
    return None


if __name__ == "__main__":
    sys.exit(main())
