#!/usr/bin/env python
"""Training throughput side by side: our Keras training
steps of RNN-SPN, FFN-SPN and the CNN (sequences/s), the CRAM classifier and
the CRAM inpainter (images/s), and a PyTorch implementation of the three
Table 1 models (`benchmarks/torch_rnn_spn.py`: same layers, sizes, optimiser
and clipping) timed in the same run, eager and with `torch.compile` where it
works here; optionally Keras' `mixed_bfloat16` policy, and (`--native`) the
compiled TensorFlow sampler kernel against the keras.ops sampler in
alternating rounds. The `keras/...` figures are what a user gets by default
(the compiled kernel wherever it builds, `cram_keras.ops.native_sampler`).

    python benchmarks/train_speed.py --bf16 --native

Both libraries use the same threads (default 2). Every figure is the median
step of `--steps` timed steps after `--warmup` untimed ones, on random
inputs of the real shapes. Run it on an otherwise idle machine (stop
background training first; a crash-safe run resumes afterwards): the file
records how busy the CPUs were before each measurement.

Writes benchmarks/results/train_speed.json.
"""

import argparse
import os
import shlex
import sys
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# As the training scripts: TensorFlow's oneDNN CPU kernels on unless set.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from cram_keras.platform_info import busy_fraction, cpu_flags, describe  # noqa: E402
from cram_keras.utils import write_json  # noqa: E402


def _median_step(step, steps, warmup):
    for _ in range(warmup):
        step()
    busy = busy_fraction(0.5)
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return float(np.median(times)), times, busy


def keras_step(model, data):
    """A compiled Keras train step on an endless iterator over `data`."""
    dataset = tf.data.Dataset.from_tensor_slices(data).batch(_BATCH[0]).repeat()
    model.fit(dataset.take(1), verbose=0)  # builds and traces
    iterator = iter(dataset)
    train = model.train_function
    return lambda: train(iterator)


_BATCH = [100]


def keras_rnn_spn(name, batch, policy="float32"):
    from cram_keras.experiments import rnn_spn
    from cram_keras.experiments.runner import dtype_policy_scope

    config = rnn_spn.Config(model=name, batch_size=batch, dtype_policy=policy)
    # The scripts' --dtype-policy: the model is built under the policy.
    with dtype_policy_scope(config):
        model = rnn_spn.compile_model(rnn_spn.build_model(config), config)
    rng = np.random.default_rng(0)
    x = rng.random((batch * 4, 100, 100, 1), dtype=np.float32)
    y = rng.integers(0, 10, (batch * 4, 3)).astype("int32")
    _BATCH[0] = batch
    return keras_step(model, (x, y))


def keras_cram_cls(batch, policy="float32"):
    from cram_keras.experiments import cram_cls
    from cram_keras.experiments.runner import dtype_policy_scope

    config = cram_cls.Config(batch_size=batch, dtype_policy=policy)
    with dtype_policy_scope(config):
        model = cram_cls.compile_model(cram_cls.build_model(config), config)
    rng = np.random.default_rng(0)
    images = rng.random((batch * 4, 60, 60, 1), dtype=np.float32)
    clue = (rng.random((batch * 4, 60, 60, 1)) > 0.8).astype("float32")
    y = rng.integers(0, 10, batch * 4).astype("int32")
    _BATCH[0] = batch
    return keras_step(model, ((images, clue), y))


def keras_inpaint(batch):
    from cram_keras.experiments import inpaint

    config = inpaint.Config(batch_size=batch)
    x = np.random.default_rng(0).random((batch * 4, 32, 32, 3), dtype=np.float32)
    model = inpaint.compile_model(
        inpaint.build_model(config, (32, 32, 3), steps_per_epoch=100), config
    )
    model.fit(inpaint.train_dataset(config, x).take(1), verbose=0)
    iterator = iter(inpaint.train_dataset(config, x).repeat())
    train = model.train_function
    return lambda: train(iterator)


def torch_rnn_spn(name, batch, compiled):
    import torch
    import torch_rnn_spn as reference

    torch.manual_seed(0)
    model = reference.MODELS[name]()
    step = reference.train_step_fn(model)
    if compiled:
        step = torch.compile(step)
    rng = np.random.default_rng(0)
    images = torch.tensor(rng.random((batch, 1, 100, 100), dtype=np.float32))
    labels = torch.tensor(rng.integers(0, 10, (batch, 3)))
    return lambda: step(images, labels)


def _with_native_sampler(make, enabled=True):
    """`make()` with the compiled sampler kernel on (or, with `enabled`
    False, the keras.ops sampler) while the step is traced."""
    from cram_keras.ops import native_sampler

    with native_sampler.native_sampler(enabled):
        step = make()
        step()  # traced (and run once) with that sampler
    return step


def _throughput(key, batch, median, times, busy):
    """One setting's entry in the result file (and a line on stdout)."""
    unit = "images/s" if "cram" in key else "sequences/s"
    print(f"{key}: {batch / median:.1f} {unit}", flush=True)
    return {
        "per_second": batch / median,
        "unit": unit,
        "median_step_seconds": median,
        "step_seconds": times,
        "batch": batch,
        "cpu_busy_before": busy,
    }


def _alternating(steps, args, rounds=6):
    """Step times of each of `steps`, timed in alternating rounds (the order
    reversed every other round) after `args.warmup` untimed steps each."""
    for step in steps.values():
        for _ in range(args.warmup):
            step()
    times = {label: [] for label in steps}
    per_round = max(1, args.steps * 2 // rounds)
    for r in range(rounds):
        labels = list(steps) if r % 2 == 0 else list(steps)[::-1]
        for label in labels:
            for _ in range(per_round):
                start = time.perf_counter()
                steps[label]()
                times[label].append(time.perf_counter() - start)
    return times


def main(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--steps", type=int, default=10, help="timed steps per setting")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--no-torch-compile", action="store_true", help="skip torch.compile")
    p.add_argument(
        "--bf16",
        action="store_true",
        help="also RNN-SPN and the CRAM classifier with --dtype-policy mixed_bfloat16",
    )
    p.add_argument(
        "--native",
        action="store_true",
        help="also time every model with a sampler with the compiled TensorFlow "
        "sampler kernel (the default where it builds) against the keras.ops "
        "sampler (CRAM_KERAS_NATIVE_SAMPLER=0), in alternating rounds",
    )
    p.add_argument("--output", default="benchmarks/results/train_speed.json")
    args = p.parse_args(argv)
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import torch

    torch.set_num_threads(args.threads)
    tf.config.threading.set_intra_op_parallelism_threads(args.threads)

    settings = {}
    for name in ("rnn_spn", "ffn_spn", "conv"):
        settings[f"keras/{name}"] = (lambda n=name: keras_rnn_spn(n, 100), 100)
        settings[f"torch_eager/{name}"] = (
            lambda n=name: torch_rnn_spn(n, 100, False),
            100,
        )
        if not args.no_torch_compile:
            settings[f"torch_compile/{name}"] = (
                lambda n=name: torch_rnn_spn(n, 100, True),
                100,
            )
    if args.bf16:
        settings["keras_mixed_bfloat16/rnn_spn"] = (
            lambda: keras_rnn_spn("rnn_spn", 100, "mixed_bfloat16"),
            100,
        )
    settings["keras/cram_classifier"] = (lambda: keras_cram_cls(64), 64)
    if args.bf16:
        settings["keras_mixed_bfloat16/cram_classifier"] = (
            lambda: keras_cram_cls(64, "mixed_bfloat16"),
            64,
        )
    settings["keras/cram_inpainter"] = (lambda: keras_inpaint(64), 64)
    native_pairs = {}
    if args.native:
        for key, (make, batch) in settings.items():
            if key.startswith("keras/") and key != "keras/conv":
                native_pairs[key.removeprefix("keras/")] = (make, batch)

    results = {}
    for key, (make, batch) in settings.items():
        keras.utils.set_random_seed(0)
        try:
            step = make()
            median, times, busy = _median_step(step, args.steps, args.warmup)
        except Exception as err:  # e.g. torch.compile without a C++ compiler
            results[key] = {"error": f"{type(err).__name__}: {str(err)[:300]}"}
            print(key, "failed:", results[key]["error"], flush=True)
            continue
        results[key] = _throughput(key, batch, median, times, busy)

    # The compiled sampler kernel against the keras.ops sampler: both steps
    # built side by side and timed in alternating rounds, so that the
    # machine's drift during the run does not enter the ratio.
    for name, (make, batch) in native_pairs.items():
        keras.utils.set_random_seed(0)
        plain = _with_native_sampler(make, False)
        keras.utils.set_random_seed(0)
        native = _with_native_sampler(make, True)
        busy = busy_fraction(0.5)
        times = _alternating({"keras": plain, "keras_native": native}, args)
        for label, t in times.items():
            key = f"{label}_alternating/{name}"
            results[key] = _throughput(key, batch, float(np.median(t)), t, busy)

    ratios = {}
    for name in ("rnn_spn", "ffn_spn", "conv"):
        for ours_key in ("keras", "keras_mixed_bfloat16"):
            ours = results.get(f"{ours_key}/{name}", {}).get("per_second")
            for peer in ("torch_eager", "torch_compile"):
                theirs = results.get(f"{peer}/{name}", {}).get("per_second")
                if ours and theirs:
                    ratios[f"{name}: {ours_key} / {peer}"] = ours / theirs
    for name in ("rnn_spn", "ffn_spn", "cram_classifier", "cram_inpainter"):
        f32 = results.get(f"keras/{name}", {}).get("per_second")
        bf16 = results.get(f"keras_mixed_bfloat16/{name}", {}).get("per_second")
        if bf16 and f32:
            ratios[f"{name}: keras_mixed_bfloat16 / keras"] = bf16 / f32
        plain = results.get(f"keras_alternating/{name}", {}).get("per_second")
        native = results.get(f"keras_native_alternating/{name}", {}).get("per_second")
        if plain and native:
            ratios[f"{name}: keras_native / keras (alternating rounds)"] = (
                native / plain
            )
    write_json(
        args.output,
        {
            "results": results,
            "ratios": ratios,
            "hardware": describe(),
            "cpu_flags": cpu_flags(),
            "threads": args.threads,
            "tf_enable_onednn_opts": os.environ.get("TF_ENABLE_ONEDNN_OPTS"),
            "versions": {
                "tensorflow": tf.__version__,
                "keras": keras.__version__,
                "torch": torch.__version__,
            },
            "command": "python " + shlex.join(sys.argv),
        },
    )
    for k, v in ratios.items():
        print(f"{k}: {v:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
