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
import math
import os
import re
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
from cram_keras.studies.driver import command_line  # noqa: E402
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
    return _step(model, dataset)


def _step(model, dataset):
    """`step()`: one training step; `step.model` and `step.element_spec`
    (for counting its FLOPs)."""
    iterator = iter(dataset)
    train = model.train_function

    def step():
        return train(iterator)

    step.model, step.element_spec = model, dataset.element_spec
    return step


_BATCH = [100]


def keras_rnn_spn(name, batch, policy="float32", jit_compile=False):
    from cram_keras.experiments import rnn_spn
    from cram_keras.experiments.runner import dtype_policy_scope

    config = rnn_spn.Config(
        model=name, batch_size=batch, dtype_policy=policy, jit_compile=jit_compile
    )
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


def keras_inpaint(batch, policy="float32"):
    from cram_keras.experiments import inpaint
    from cram_keras.experiments.runner import dtype_policy_scope

    config = inpaint.Config(batch_size=batch, dtype_policy=policy)
    x = np.random.default_rng(0).random((batch * 4, 32, 32, 3), dtype=np.float32)
    with dtype_policy_scope(config):
        model = inpaint.compile_model(
            inpaint.build_model(config, (32, 32, 3), steps_per_epoch=100), config
        )
    model.fit(inpaint.train_dataset(config, x).take(1), verbose=0)
    return _step(model, inpaint.train_dataset(config, x).repeat())


# --- FLOPs per training step ---------------------------------------------------
#
# Counted on the graph of the model's own `train_step` (forward, backward and
# optimizer update) traced with the batch size fixed, from each op's static
# shapes: a convolution (forward, input or filter gradient) 2 * output
# positions * kh * kw * input channels * output channels, a matmul
# 2 * m * k * n, the sampler's kernels 10 (forward) and 26 (backward) per
# output value, other arithmetic one per element; the compiled first layers
# (convolution, ReLU and max-pooling as one op) as the layers they replace.
# Ops whose results nothing uses (TensorFlow prunes them) are not counted; a
# loop body counts once per iteration (the GRU's loop runs once per step of
# the sequence).

_ARITHMETIC = frozenset(
    "Add AddV2 AddN Sub Mul RealDiv Div DivNoNan Maximum Minimum Neg Abs Square "
    "SquaredDifference Sqrt Rsqrt Reciprocal Exp Log Pow Relu ReluGrad "
    "LeakyRelu LeakyReluGrad Sigmoid SigmoidGrad Tanh TanhGrad Softmax "
    "LogSoftmax BiasAdd Select SelectV2 ClipByValue FusedBatchNormV3 "
    "FusedBatchNormGradV3 MaxPoolGrad AvgPoolGrad".split()
)
# Reductions and pooling: one per input element.
_REDUCING = frozenset("Sum Mean Max Min Prod BiasAddGrad MaxPool AvgPool".split())


def _dims(tensor):
    shape = tensor.shape
    return None if shape.rank is None else shape.as_list()


def _fused_conv_pool_flops(op):
    """The compiled first layers (`cram_keras.ops.conv_relu_max_pool`) as
    the layers they replace: forward, the convolution, its bias, ReLU and
    max-pooling (one per convolution output each); backward, the pooling's,
    ReLU's and bias's gradients (likewise), the filter gradient, and the
    input gradient where something uses it (where the layers' graph would
    keep Conv2DBackpropInput)."""
    images, kernel = _dims(op.inputs[0]), _dims(op.inputs[1])
    kh, kw, channels, filters = kernel
    out = images[0] * (images[1] - kh + 1) * (images[2] - kw + 1) * filters
    conv = 2 * out * kh * kw * channels
    if op.type == "CramConvReluPool":
        return [("convolution", conv), ("other arithmetic", 3 * out)]
    convolutions = 2 if op.outputs[0].consumers() else 1
    return [("convolution", convolutions * conv), ("other arithmetic", 3 * out)]


def _op_flops(op):
    """[(kind, FLOPs), ...] of one op: empty for ops without arithmetic."""
    if op.type in ("CramConvReluPool", "CramConvReluPoolGrad"):
        return _fused_conv_pool_flops(op)
    kind, flops = _one_kind_flops(op)
    return [(kind, flops)] if kind else []


def _one_kind_flops(op):
    """(kind, FLOPs) of one op, or (None, 0) for ops without arithmetic."""
    kind = op.type
    if kind in ("MatMul", "_FusedMatMul"):
        a, b = _dims(op.inputs[0]), _dims(op.inputs[1])
        m, k = (a[1], a[0]) if op.get_attr("transpose_a") else (a[0], a[1])
        n = b[0] if op.get_attr("transpose_b") else b[1]
        return "matmul", 2 * m * k * n
    if kind.startswith("BatchMatMul"):
        a = _dims(op.inputs[0])
        k = a[-2] if op.get_attr("adj_x") else a[-1]
        return "matmul", 2 * math.prod(_dims(op.outputs[0])) * k
    if kind in ("Conv2D", "_FusedConv2D"):
        kernel, out = _dims(op.inputs[1]), _dims(op.outputs[0])
    elif kind == "Conv2DBackpropInput":
        kernel, out = _dims(op.inputs[1]), _dims(op.inputs[2])
    elif kind == "Conv2DBackpropFilter":
        kernel, out = _dims(op.outputs[0]), _dims(op.inputs[2])
    else:
        kernel = None
    if kernel is not None:
        # out: the forward convolution's output (B, h, w, C_out).
        return "convolution", 2 * math.prod(out) * kernel[0] * kernel[1] * kernel[2]
    # The sampler's kernels; the transform ops compute the pixel coordinates
    # themselves and sum their gradient into the parameters' (a few FLOPs
    # per output pixel, not per value: left out).
    if kind in ("CramSampleAtPixels", "CramTransformSample"):
        return "sampler", 10 * math.prod(_dims(op.outputs[0]))
    if kind in ("CramSampleAtPixelsGrad", "CramTransformSampleGrad"):
        return "sampler", 26 * math.prod(_dims(op.inputs[-1]))
    if kind in _ARITHMETIC or kind in _REDUCING:
        dims = _dims(op.inputs[0] if kind in _REDUCING else op.outputs[0])
        if dims is None or None in dims:
            return "unknown shape", 0
        return "other arithmetic", math.prod(dims)
    return None, 0


def _live_ops(graph, outputs):
    """The ops that `outputs` and the stateful ops (variable updates) need."""
    stack = [t.op for t in outputs] + [
        op
        for op in graph.get_operations()
        if op._is_stateful and op.type not in ("VarHandleOp", "Placeholder")
    ]
    seen = set()
    while stack:
        op = stack.pop()
        if op not in seen:
            seen.add(op)
            stack.extend(t.op for t in op.inputs)
            stack.extend(op.control_inputs)
    return seen


def _graph_flops(graph, counts, layers, times=1, loop_trips=None, outputs=None):
    live = None if outputs is None else _live_ops(graph, outputs)
    for op in graph.get_operations():
        if live is not None and op not in live:
            continue
        if op.type in ("While", "StatelessWhile"):
            trips = tf.get_static_value(op.inputs[1])
            if trips is None or trips < 0:
                trips = loop_trips  # the sequence length, given by the caller
            body = graph._get_function(op.get_attr("body").name).graph
            _graph_flops(body, counts, layers, times * int(trips), loop_trips)
            continue
        if op.type in ("PartitionedCall", "StatefulPartitionedCall"):
            body = graph._get_function(op.get_attr("f").name).graph
            _graph_flops(body, counts, layers, times, loop_trips)
            continue
        for kind, flops in _op_flops(op):
            counts[kind] += times * flops
            layers[_layer_of(op.name)] += times * flops


def _layer_of(op_name):
    """The layer an op belongs to, from its name scope: forward and gradient
    ops of one layer together ("classifier/conv1")."""
    parts = [re.sub(r"_\d+$", "", p) for p in op_name.split("/")[:-1]]
    if parts and parts[0] == "gradient_tape":
        # gradient_tape/<the forward op's full name>/<gradient op>
        parts = parts[1:-1]
    parts = [p for p in parts if p not in ("while", "gradients")]
    if parts and parts[0] in parts[1:]:  # a loop's gradient repeats the scope
        parts = parts[len(parts) - 1 - parts[::-1].index(parts[0]) :]
    if not parts:
        return "(step)"
    if re.search(r"optimizer|rm_?sprop|adam|clip", parts[0], re.I):
        return "optimizer"
    return "/".join(parts[1:3]) or parts[0]


def step_flops(step, batch, loop_trips=None):
    """FLOPs of one training step of `step.model` (see above): the total,
    by kind and by layer."""
    import collections

    def fixed(spec):
        return tf.TensorSpec((batch, *spec.shape[1:]), spec.dtype)

    spec = tf.nest.map_structure(fixed, step.element_spec)
    concrete = tf.function(step.model.train_step).get_concrete_function(spec)
    counts, layers = collections.Counter(), collections.Counter()
    _graph_flops(concrete.graph, counts, layers, 1, loop_trips, concrete.outputs)
    total = sum(v for k, v in counts.items() if k != "unknown shape")
    return {
        "flops_per_step": total,
        "by_kind": dict(counts),
        "by_layer": dict(layers.most_common()),
        "batch": batch,
    }


def tf_profiler_flops(step, batch):
    """TensorFlow's own count (`tf.compat.v1.profiler`, float_operation) on
    the same graph, for the convolutions and matmuls at its top level (it
    does not enter loop bodies): per group, our count and TensorFlow's. For
    the two gradients of a convolution TensorFlow counts the positions of
    the convolution's input, not of its output (more, with valid padding)."""

    def fixed(spec):
        return tf.TensorSpec((batch, *spec.shape[1:]), spec.dtype)

    spec = tf.nest.map_structure(fixed, step.element_spec)
    concrete = tf.function(step.model.train_step).get_concrete_function(spec)
    options = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
    options["output"] = "none"
    profile = tf.compat.v1.profiler.profile(concrete.graph, options=options)
    theirs = {}

    def walk(node):
        for child in node.children:
            theirs[child.name] = child.float_ops
            walk(child)

    walk(profile)
    groups = {
        "forward convolutions and matmuls": ("Conv2D", "MatMul"),
        "convolution gradients": ("Conv2DBackpropInput", "Conv2DBackpropFilter"),
    }
    live = _live_ops(concrete.graph, concrete.outputs)
    check = {}
    for group, kinds in groups.items():
        ours = [
            (op.name, _one_kind_flops(op)[1])
            for op in concrete.graph.get_operations()
            if op in live and op.type in kinds and op.name in theirs
        ]
        check[group] = {
            "ops": len(ours),
            "ours": sum(f for _, f in ours),
            "tensorflow_profiler": sum(theirs[n] for n, _ in ours),
        }
    return check


def cpu_peak():
    """The CPU's float32 and bfloat16 peak in FLOP/s and how it is derived:
    cores x clock x FLOPs per cycle and core. float32: vector lanes x 2
    (a fused multiply-add is two FLOPs) x 2 FMA units per core (AVX-512
    server cores have two; AVX2: two 256-bit units). bfloat16 with AMX:
    1024 FLOPs per cycle and core (Intel's figure for AMX-BF16)."""
    from cram_keras.platform_info import cpu_flags

    flags = cpu_flags()
    try:
        with open("/proc/cpuinfo") as f:
            mhz = max(
                float(line.split(":")[1]) for line in f if line.startswith("cpu MHz")
            )
    except (OSError, ValueError):
        mhz = None
    cores = len(os.sched_getaffinity(0))
    lanes = 16 if "avx512f" in flags else 8 if "avx2" in flags else 4
    per_cycle = lanes * 2 * 2
    peak = {
        "cores": cores,
        "ghz": None if mhz is None else mhz / 1000,
        "float32_flops_per_cycle_per_core": per_cycle,
        "float32_derivation": f"{cores} cores x clock x {lanes} float32 lanes x 2 "
        "(FMA) x 2 FMA units",
        "float32_gflops": None if mhz is None else cores * mhz / 1000 * per_cycle,
    }
    if "amx_bf16" in flags:
        peak["bfloat16_amx_flops_per_cycle_per_core"] = 1024
        peak["bfloat16_amx_gflops"] = None if mhz is None else cores * mhz / 1000 * 1024
    return peak


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
        help="also RNN-SPN, the CRAM classifier and the inpainter with "
        "--dtype-policy mixed_bfloat16",
    )
    p.add_argument(
        "--native",
        action="store_true",
        help="also time every model with a sampler with the compiled TensorFlow "
        "sampler kernel (the default where it builds) against the keras.ops "
        "sampler (CRAM_KERAS_NATIVE_SAMPLER=0), in alternating rounds",
    )
    p.add_argument(
        "--flops",
        action="store_true",
        help="count each model's FLOPs per training step and give GFLOP/s "
        "against the CPU's peak",
    )
    p.add_argument(
        "--xla",
        action="store_true",
        help="also RNN-SPN with jit_compile=True (XLA on the CPU; the sampler "
        "then runs its keras.ops path) against the default, in alternating rounds",
    )
    p.add_argument(
        "--only",
        nargs="+",
        metavar="KEY",
        help="time only these settings (e.g. keras/rnn_spn torch_eager/rnn_spn)",
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
    if args.bf16:
        settings["keras_mixed_bfloat16/cram_inpainter"] = (
            lambda: keras_inpaint(64, "mixed_bfloat16"),
            64,
        )
    if args.only:
        unknown = sorted(set(args.only) - set(settings))
        if unknown:
            p.error(f"--only: unknown settings {unknown}; known: {sorted(settings)}")
        settings = {k: v for k, v in settings.items() if k in args.only}
    native_pairs = {}
    if args.native:
        for key, (make, batch) in settings.items():
            if key.startswith("keras/") and key != "keras/conv":
                native_pairs[key.removeprefix("keras/")] = (make, batch)

    results, flops = {}, {}
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
        name = key.split("/", 1)[1]
        if args.flops and key.startswith("keras/") and name not in flops:
            # The RNN-SPN family's GRU loop runs once per digit (3).
            flops[name] = step_flops(step, batch, loop_trips=3)
            flops[name]["tensorflow_profiler_check"] = tf_profiler_flops(step, batch)
        del step

    if args.xla:
        keras.utils.set_random_seed(0)
        default = keras_rnn_spn("rnn_spn", 100)
        keras.utils.set_random_seed(0)
        xla = keras_rnn_spn("rnn_spn", 100, jit_compile=True)
        busy = busy_fraction(0.5)
        times = _alternating({"keras": default, "keras_xla": xla}, args)
        for label, t in times.items():
            key = f"{label}_alternating/rnn_spn"
            results[key] = _throughput(key, 100, float(np.median(t)), t, busy)

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
    xla = results.get("keras_xla_alternating/rnn_spn", {}).get("per_second")
    if xla:
        ratios["rnn_spn: keras_xla / keras (alternating rounds)"] = (
            xla / results["keras_alternating/rnn_spn"]["per_second"]
        )
    peak = cpu_peak()
    for key, result in results.items():
        name = key.split("/", 1)[-1]
        if name in flops and "per_second" in result:
            achieved = flops[name]["flops_per_step"] / result["median_step_seconds"]
            result["gflops_per_second"] = achieved / 1e9
            if peak["float32_gflops"]:
                result["fraction_of_float32_peak"] = (
                    achieved / 1e9 / peak["float32_gflops"]
                )
            # bfloat16 compute on a CPU with AMX: against AMX's bfloat16 peak.
            if key.startswith("keras_mixed_bfloat16/") and peak.get(
                "bfloat16_amx_gflops"
            ):
                result["fraction_of_bfloat16_amx_peak"] = (
                    achieved / 1e9 / peak["bfloat16_amx_gflops"]
                )
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
            "flops": flops,
            "peak": peak,
            "hardware": describe(),
            "cpu_flags": cpu_flags(),
            "threads": args.threads,
            "tf_enable_onednn_opts": os.environ.get("TF_ENABLE_ONEDNN_OPTS"),
            "versions": {
                "tensorflow": tf.__version__,
                "keras": keras.__version__,
                "torch": torch.__version__,
            },
            "command": command_line("benchmarks/train_speed.py", sys.argv[1:]),
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        },
    )
    for k, v in ratios.items():
        print(f"{k}: {v:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
