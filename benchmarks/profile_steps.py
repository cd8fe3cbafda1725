#!/usr/bin/env python
"""Where the time goes: TensorFlow profiler traces of the sampler's forward
and backward at both benchmark shapes and of one training step of RNN-SPN,
the CRAM classifier and the CRAM inpainter.

    python benchmarks/profile_steps.py

Each target is warmed up, then traced for a few calls with
`tf.profiler.experimental`; the trace (XSpace protobuf) is read here, with
no profiler plugin. Every TensorFlow kernel on the compute threads is
counted once, by

- component: the layer its name scope lies in (the sampler is any scope
  with "transformer" in it; optimizer and loss by their scope names), and
- kind: gather, scatter / segment sum, convolution, matmul, pooling,
  transpose / reshape / copy, reduction, elementwise, control flow, other.

Per call the file records the wall time, the kernel CPU time (summed over
threads) per component and per kind, the input pipeline's time
(tf.data threads) and the rest: wall time x threads - kernel time, i.e.
dispatch, Python and idle threads. Run it on an otherwise idle machine
(the file records how busy the CPUs were just before).

Writes benchmarks/results/profile_steps.json and prints the tables that
docs/results.md quotes.
"""

import argparse
import collections
import glob
import os
import re
import sys
import tempfile
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

KINDS = [
    ("gather", r"Gather|ResourceGather"),
    ("scatter / segment sum", r"Scatter|SegmentSum|UnsortedSegment|BincountV|Bincount"),
    ("convolution", r"Conv|Correlation"),
    ("matmul", r"MatMul|Einsum|BatchMatMul"),
    ("pooling", r"Pool"),
    (
        "transpose / reshape / copy",
        r"Transpose|Reshape|Identity|Concat|Pack|Unpack|Slice|Split|Tile|Pad|"
        r"ExpandDims|Squeeze|Fill|Broadcast|Reverse|Cast|Select|ZerosLike|OnesLike",
    ),
    ("reduction", r"Sum|Mean|Max$|Min$|Prod|ArgMax|ArgMin|All$|Any$|L2Loss"),
    ("control flow", r"While|If|Switch|Merge|Enter|Exit|NextIteration|LoopCond"),
    ("optimizer update", r"ApplyRMSProp|ApplyAdam|AssignSub|AssignAdd|Assign"),
]


def kind_of(op_type):
    for kind, pattern in KINDS:
        if re.search(pattern, op_type):
            return kind
    return "elementwise / other"


def component_of(scope, sublayers):
    """The layer an op's name scope lies in (see the module docstring);
    `sublayers=None`: the whole target is the sampler."""
    if sublayers is None:
        return "sampler"
    lowered = scope.lower()
    if "transformer" in lowered or "sampler" in lowered:
        return "sampler"
    segments = [re.sub(r"_\d+$", "", s) for s in scope.split("/")]
    for i in reversed(range(len(segments))):  # the innermost known layer
        for parent in segments[:i]:
            if (parent, segments[i]) in sublayers:
                return sublayers[(parent, segments[i])]
        if segments[i] in sublayers:
            return sublayers[segments[i]]
    if re.search(r"optimizer|rm_?sprop|adam|clip", lowered):
        return "optimizer"
    if re.search(r"loss|crossentropy|compile_loss", lowered):
        return "loss"
    return "other"


def read_trace(directory):
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    files = glob.glob(os.path.join(directory, "**", "*.xplane.pb"), recursive=True)
    if not files:
        raise RuntimeError(f"the profiler wrote no trace under {directory}")
    space = xplane_pb2.XSpace()
    with open(files[0], "rb") as f:
        space.ParseFromString(f.read())
    return space


def summarize(space, calls, wall, threads, sublayers):
    """Per-call kernel milliseconds by component and kind, input pipeline
    and rest (see the module docstring)."""
    by_component = collections.Counter()
    by_kind = collections.Counter()
    by_op = collections.Counter()
    pipeline = 0.0
    for plane in space.planes:
        if not plane.name.startswith("/host:CPU"):
            continue
        names = plane.event_metadata
        for line in plane.lines:
            if line.name.startswith("tf_data"):
                pipeline += (
                    sum(
                        e.duration_ps
                        for e in line.events
                        if "Iterator::Root" in names[e.metadata_id].name
                    )
                    / 1e9
                )
                continue
            if line.name == "python":
                continue
            for event in line.events:
                name = names[event.metadata_id].name
                # Kernels are "scope/op_name:OpType"; framework events use "::".
                if ":" not in name or "::" in name:
                    continue
                scope, _, op_type = name.rpartition(":")
                ms = event.duration_ps / 1e9
                by_component[component_of(scope, sublayers)] += ms
                by_kind[kind_of(op_type)] += ms
                by_op[op_type] += ms
    kernel = sum(by_component.values())
    per_call = lambda counter: {  # noqa: E731
        k: round(v / calls, 3) for k, v in counter.most_common()
    }
    return {
        "wall_ms_per_call": round(wall * 1000 / calls, 3),
        "kernel_cpu_ms_per_call": round(kernel / calls, 3),
        "input_pipeline_ms_per_call": round(pipeline / calls, 3),
        "rest_ms_per_call": round((wall * 1000 * threads - kernel) / calls, 3),
        "by_component_ms": per_call(by_component),
        "by_kind_ms": per_call(by_kind),
        "top_ops_ms": dict(list(per_call(by_op).items())[:12]),
    }


def profile(fn, calls, warmup, threads, sublayers):
    for _ in range(warmup):
        fn()
    busy = busy_fraction()
    directory = tempfile.mkdtemp(prefix="profile_")
    tf.profiler.experimental.start(directory)
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    wall = time.perf_counter() - start
    tf.profiler.experimental.stop()
    result = summarize(read_trace(directory), calls, wall, threads, sublayers)
    result["cpu_busy_before"] = busy
    result["calls"] = calls
    return result


# === Targets ===


def sampler_target(shape_name):
    from sampler import SHAPES, make_inputs

    from cram_keras.layers import SpatialTransformer

    shape = SHAPES[shape_name]
    images, _, params, cotangent = make_inputs(shape)
    layer = SpatialTransformer(shape["transform"], output_size=shape["output"])
    images, params, cotangent = (tf.constant(a) for a in (images, params, cotangent))

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            tape.watch([images, params])
            output = layer([images, params])
        return tape.gradient(output, [images, params], output_gradients=cotangent)

    return (
        lambda: step(),
        None,
        f"forward + backward, batch {shape['batch']}, "
        + (f"{shape['input']} -> {shape['output']}, {shape['transform']}"),
    )


def _fit_target(model, x, y, batch_size):
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(batch_size).repeat()
    iterator = iter(dataset)
    model.make_train_function()
    train = model.train_function

    def step():
        train(iterator)

    return step


def _sublayers(model):
    """Layer name -> label for the model's layers, and (parent, name) ->
    label for the layers they hold as attributes (e.g. the CRAM encoder's
    glimpse network and core; two discriminators may both hold a "cnn")."""
    names = {}
    for layer in model.layers:
        names[layer.name] = layer.name
        for value in vars(layer).values():
            if isinstance(value, keras.layers.Layer) and value is not layer:
                names[(layer.name, value.name)] = f"{layer.name}/{value.name}"
    return names


def rnn_spn_target():
    from cram_keras.experiments import rnn_spn

    config = rnn_spn.Config()
    model = rnn_spn.compile_model(rnn_spn.build_model(config), config)
    rng = np.random.default_rng(0)
    x = rng.random((config.batch_size * 4, 100, 100, 1), dtype=np.float32)
    y = rng.integers(0, 10, (config.batch_size * 4, 3)).astype("int32")
    model.train_on_batch(x[: config.batch_size], y[: config.batch_size])
    step = _fit_target(model, x, y, config.batch_size)
    names = {"localization_cnn": "localization CNN", "rnn": "GRU", "transform_head":
             "transform head", "classifier": "classifier CNN", "logits": "logits"}  # fmt: skip
    return step, names, f"training step, batch {config.batch_size}, 100x100x1, d = 2"


def cram_cls_target():
    from cram_keras.experiments import cram_cls

    config = cram_cls.Config()
    model = cram_cls.compile_model(cram_cls.build_model(config), config)
    rng = np.random.default_rng(0)
    n = config.batch_size * 4
    images = rng.random((n, 60, 60, 1), dtype=np.float32)
    clue = (rng.random((n, 60, 60, 1)) > 0.8).astype("float32")
    y = rng.integers(0, 10, n).astype("int32")
    model.train_on_batch((images[:config.batch_size], clue[:config.batch_size]),
                         y[:config.batch_size])  # fmt: skip
    step = _fit_target(model, (images, clue), y, config.batch_size)
    return (
        step,
        _sublayers(model),
        (
            f"training step, batch {config.batch_size}, 60x60x1, {config.glimpses} glimpses"
        ),
    )


def inpaint_target():
    from cram_keras.experiments import inpaint

    config = inpaint.Config()
    rng = np.random.default_rng(0)
    n = config.batch_size * 4
    x = rng.random((n, 32, 32, 3), dtype=np.float32)
    model = inpaint.compile_model(
        inpaint.build_model(config, (32, 32, 3), steps_per_epoch=100), config
    )
    model.fit(inpaint.train_dataset(config, x).take(1), verbose=0)  # builds
    iterator = iter(inpaint.train_dataset(config, x).repeat())
    model.make_train_function()
    train = model.train_function
    return (
        lambda: train(iterator),
        _sublayers(model),
        (
            f"training step (generator + two discriminators), batch {config.batch_size}, "
            f"32x32x3, {config.glimpses} glimpses"
        ),
    )


TARGETS = {
    "sampler_rnn_spn": lambda: sampler_target("rnn_spn"),
    "sampler_cram": lambda: sampler_target("cram"),
    "rnn_spn_step": rnn_spn_target,
    "cram_cls_step": cram_cls_target,
    "inpaint_step": inpaint_target,
}


def table(results):
    lines = []
    for name, r in results.items():
        lines.append(
            f"\n{name}: {r['what']}\n  wall {r['wall_ms_per_call']:.1f} ms/call, "
            f"kernels {r['kernel_cpu_ms_per_call']:.1f} CPU-ms, input pipeline "
            f"{r['input_pipeline_ms_per_call']:.1f} ms, rest (dispatch, Python, idle "
            f"threads) {r['rest_ms_per_call']:.1f} CPU-ms"
        )
        kernel = r["kernel_cpu_ms_per_call"] or 1.0
        for label in ("by_component_ms", "by_kind_ms"):
            parts = ", ".join(
                f"{k} {v:.1f} ({100 * v / kernel:.0f} %)" for k, v in r[label].items()
            )
            lines.append(f"  {label[3:-3]}: {parts}")
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--targets", default=",".join(TARGETS), help="comma-separated")
    p.add_argument("--calls", type=int, default=5, help="traced calls per target")
    p.add_argument("--warmup", type=int, default=3, help="untraced calls first")
    p.add_argument("--threads", type=int, default=2, help="TensorFlow intra-op threads")
    p.add_argument("--output", default="benchmarks/results/profile_steps.json")
    args = p.parse_args(argv)
    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    results = {}
    for name in args.targets.split(","):
        if name not in TARGETS:
            p.error(f"--targets: unknown {name!r}; choose from {', '.join(TARGETS)}")
        keras.utils.set_random_seed(0)
        fn, sublayers, what = TARGETS[name]()
        results[name] = dict(
            what=what, **profile(fn, args.calls, args.warmup, args.threads, sublayers)
        )
        print(table({name: results[name]}), flush=True)
    write_json(
        args.output,
        {
            "results": results,
            "hardware": describe(),
            "cpu_flags": cpu_flags(),
            "threads": args.threads,
            "tf_enable_onednn_opts": os.environ.get("TF_ENABLE_ONEDNN_OPTS"),
            "versions": {"tensorflow": tf.__version__, "keras": keras.__version__},
            "command": command_line("benchmarks/profile_steps.py", sys.argv[1:]),
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
