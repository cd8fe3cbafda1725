#!/usr/bin/env python
"""Attempts at a faster general (gather) sampler path, measured against the
library's `pixel_sampler.sample_pixels`.

Each candidate is the library's source with one change, applied as a text
patch at run time (so the file documents exactly what was tried, and the
library keeps a single implementation):

- `reduction`: weights as an outer product `wy (x) wx` (4, N) and the output
  as `sum(weights * corners, axis=0)`: no slices of the gathered corners, no
  lerps; the backward pass the same way (corner contributions by broadcast,
  coordinate slopes as two more weighted sums).
- `pairs`: the padded image as rows of horizontal pairs `(p[i], p[i+1])`, so
  two row gathers (top pair, bottom pair) fetch the four corners.
- `unstack` / `split`: the four corners taken with `ops.unstack` / `ops.split`
  instead of four leading-axis slices.

Timed: forward + gradients wrt images and theta of `affine_sample` in one
`tf.function` (graph mode, no XLA), zeros padding, at the benchmark shapes of
`sampler.py` (RNN-SPN: affine, 64 x 100x100x1 -> 50x50; CRAM's images
64 x 32x32x3 -> 16x16, here through the general path), with that script's
protocol (rotating rounds, median per call). Every candidate's output and
gradients are compared with the library's (max relative difference).

    python benchmarks/sampler_attempts.py --output benchmarks/results/sampler_attempts.json

Stop background training while it runs (the file records the load average).
"""

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")

import argparse  # noqa: E402
import datetime  # noqa: E402
import inspect  # noqa: E402
import json  # noqa: E402
import pathlib  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import types  # noqa: E402

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from cram_keras.ops import pixel_sampler, sampling  # noqa: E402
from cram_keras.platform_info import cpu_flags, describe  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from sampler import SHAPES, make_inputs, measure  # noqa: E402

CORNERS = """        corners = ops.reshape(corners, (4, -1, channels))
        v00, v01, v10, v11 = corners[0], corners[1], corners[2], corners[3]"""

PATCHES = {
    "unstack": [
        (
            CORNERS,
            """        corners = ops.reshape(corners, (4, -1, channels))
        v00, v01, v10, v11 = ops.unstack(corners, 4, axis=0)""",
        )
    ],
    "split": [
        (
            CORNERS,
            """        corners = ops.reshape(corners, (4, -1, channels))
        v00, v01, v10, v11 = [
            ops.reshape(v, (-1, channels)) for v in ops.split(corners, 4, axis=0)
        ]""",
        )
    ],
    "pairs": [
        (
            """        if channels == 1:
            corners = ops.take(ops.reshape(padded, (-1,)), index, axis=0)
        else:
            corners = ops.take(ops.reshape(padded, (-1, channels)), index, axis=0)
"""
            + CORNERS,
            """        flat = ops.reshape(padded, (-1, channels))
        pairs = ops.concatenate([flat[:-1], flat[1:]], axis=-1)  # (L - 1, 2C)
        rows = ops.take(pairs, ops.concatenate([i00, i00 + padded_w], 0), axis=0)
        rows = ops.reshape(rows, (2, -1, 2, channels))
        v00, v01 = rows[0, :, 0], rows[0, :, 1]
        v10, v11 = rows[1, :, 0], rows[1, :, 1]""",
        )
    ],
    "reduction": [
        (
            """        wx, wy = per_pixel(fx), per_pixel(fy)
        dx_top = v01 - v00
        dx_bottom = v11 - v10
        top = v00 + wx * dx_top
        dy = (v10 + wx * dx_bottom) - top
        output = ops.reshape(top + wy * dy, (-1, out_h, out_w, channels))""",
            """        row_fx = ops.reshape(ops.cast(fx, dtype), (1, -1))
        row_fy = ops.reshape(ops.cast(fy, dtype), (1, -1))
        wx2 = ops.concatenate([1.0 - row_fx, row_fx], axis=0)  # (2, N)
        wy2 = ops.concatenate([1.0 - row_fy, row_fy], axis=0)
        weights = ops.reshape(ops.expand_dims(wy2, 1) * ops.expand_dims(wx2, 0), (4, -1, 1))
        signs = ops.cast(ops.convert_to_tensor([[-1.0], [1.0]]), dtype)
        output = ops.reshape(
            ops.sum(weights * corners, axis=0), (-1, out_h, out_w, channels)
        )""",
        ),
        (CORNERS, "        corners = ops.reshape(corners, (4, -1, channels))"),
        (
            """            up_bottom = up * row_y
            up_top = up - up_bottom
            up_01 = up_top * row_x
            up_11 = up_bottom * row_x
            contribution = ops.concatenate(
                [up_top - up_01, up_01, up_bottom - up_11, up_11], axis=-1
            )""",
            """            if channels == 1:
                contribution = ops.reshape(weights, (4, -1)) * up
            else:
                # (C, 4, N): the order of `segments`, channel-major.
                contribution = ops.reshape(weights, (1, 4, -1)) * ops.expand_dims(up, 1)""",
        ),
        (
            """            slope_x = sum_channels(upstream * (dx_top + wy * (dx_bottom - dx_top)))
            slope_y = sum_channels(upstream * dy)""",
            """            dwx = ops.reshape(ops.expand_dims(wy2, 1) * ops.expand_dims(signs, 0), (4, -1, 1))
            dwy = ops.reshape(ops.expand_dims(signs, 1) * ops.expand_dims(wx2, 0), (4, -1, 1))
            slope_x = sum_channels(ops.sum(dwx * corners, axis=0) * upstream)
            slope_y = sum_channels(ops.sum(dwy * corners, axis=0) * upstream)""",
        ),
    ],
}


def candidate(name):
    """`sample_pixels` of the library source with the patches of `name`."""
    source = inspect.getsource(pixel_sampler)
    for old, new in PATCHES[name]:
        if old not in source:
            raise SystemExit(f"patch {name!r} no longer applies to pixel_sampler.py")
        source = source.replace(old, new)
    module = types.ModuleType(f"pixel_sampler_{name}")
    exec(compile(source, f"<pixel_sampler:{name}>", "exec"), module.__dict__)
    # Traced from a string: nothing for autograph to convert.
    return tf.autograph.experimental.do_not_convert(module.sample_pixels)


def step_fn(sample_pixels, shape):
    out_size = shape["output"]

    @tf.function
    def step(images, theta, cotangent):
        original = sampling.sample_pixels
        sampling.sample_pixels = sample_pixels  # Read at trace time only.
        try:
            with tf.GradientTape() as tape:
                tape.watch([images, theta])
                output = sampling.affine_sample(images, theta, out_size)
            grads = tape.gradient(output, [images, theta], output_gradients=cotangent)
        finally:
            sampling.sample_pixels = original
        return [output, *grads]

    return step


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--calls", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--output", type=pathlib.Path, required=True)
    args = parser.parse_args()
    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    names = ["library", *PATCHES]
    load_before = os.getloadavg()
    started = time.perf_counter()
    results = {}
    for label, shape in SHAPES.items():
        images, theta, _, cotangent = make_inputs(shape)
        args_tf = [tf.constant(a) for a in (images, theta, cotangent)]
        steps, values = {}, {}
        for name in names:
            fn = step_fn(
                pixel_sampler.sample_pixels if name == "library" else candidate(name),
                shape,
            )
            values[name] = [v.numpy() for v in fn(*args_tf)]
            steps[name] = lambda fn=fn, a=args_tf: [v.numpy() for v in fn(*a)]
        times = measure(steps, args.rounds, args.calls, args.warmup)
        reference = values["library"]
        results[label] = {
            "batch": shape["batch"],
            "input_hwc": list(shape["input"]),
            "output_hw": list(shape["output"]),
            "times_ms": times,
            "ratio_to_library": {
                n: times[n]["median"] / times["library"]["median"] for n in names
            },
            "max_relative_difference_to_library": {
                n: max(
                    float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-30))
                    for a, b in zip(values[n], reference, strict=True)
                )
                for n in names
            },
        }
        for n in names:
            print(
                f"{label:8s} {n:10s} {times[n]['median']:7.2f} ms "
                f"({results[label]['ratio_to_library'][n]:.2f}x library)"
            )
    record = {
        "command": "python benchmarks/sampler_attempts.py " + " ".join(sys.argv[1:]),
        "started_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(
            timespec="seconds"
        ),
        "wall_s": round(time.perf_counter() - started, 1),
        "load_average_1_5_15min": {"before": load_before, "after": os.getloadavg()},
        "hardware": describe(),
        "cpu_flags": cpu_flags(),
        "threads": args.threads,
        "versions": {"tensorflow": tf.__version__, "numpy": np.__version__},
        "protocol": {"rounds": args.rounds, "calls": args.calls, "warmup": args.warmup},
        "shapes": results,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(record, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
