"""Sampler speed: cram_keras.ops vs torch.nn.functional.grid_sample (CPU).

Times one forward + backward pass (gradients wrt the images and theta, given
an upstream cotangent) of

- torch: `F.grid_sample(images, F.affine_grid(theta))`, the reference;
- `ops`: `bilinear_sample(images, affine_grid(theta))` in a `tf.function`;
- `fused`: `affine_sample(images, theta)`, the pixel-space path;
- `layer`: `SpatialTransformer` on `[images, params]`, with the shape's
  transform: "affine" for RNN-SPN, "attention" (s, tx, ty) for CRAM, whose
  axis-aligned maps take the separable matmul path;
- `layer_native`, `fused_native`: the same with the compiled TensorFlow
  kernel on (`cram_keras.ops.native_sampler`, built on first use);
- `layer_eager`, `layer_native_eager`: the layer called eagerly under a
  `GradientTape` (as torch is called), without and with the kernel (the
  default setting);

ours each with and without `jit_compile=True` (the native kinds without:
under XLA they take the keras.ops path), on identical inputs, in one
process with the same number of threads for both libraries. Each timed call
includes the `tf.function` dispatch and handing the results over as NumPy
arrays without a copy (`np.asarray`; torch: the autograd call and
`.numpy()`, which does not copy either). The protocol: warm-up calls, then
`--rounds` rounds in which every contender runs `--calls` timed calls after
a 20 ms pause (so one library's idle worker threads do not spin while the
other runs), the order rotating from round to round. Reported: the median
(and quartiles) over all timed calls, and the ratio of medians ours / torch.
`--kernels` times the compiled kernel's two ops alone instead (wall and CPU
time per call), into a file of its own.

    pip install torch  # only needed here
    python benchmarks/sampler.py --output benchmarks/results/sampler_speed.json
    python benchmarks/sampler.py --append --output ...  # a second run

See docs/sampler.md for what the numbers mean.
"""

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import argparse  # noqa: E402
import contextlib  # noqa: E402
import datetime  # noqa: E402
import json  # noqa: E402
import pathlib  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import torch  # noqa: E402
from sampler_inputs import SHAPES, make_inputs, relative_error  # noqa: E402

from cram_keras.layers import SpatialTransformer  # noqa: E402
from cram_keras.ops import (  # noqa: E402
    affine_grid,
    affine_sample,
    bilinear_sample,
    native_sampler,
    sampling,
)
from cram_keras.platform_info import busy_fraction, cpu_flags, describe  # noqa: E402
from cram_keras.studies.driver import command_line  # noqa: E402


def torch_step(images, theta, cotangent, out_size):
    images_t = torch.tensor(images.transpose(0, 3, 1, 2).copy(), requires_grad=True)
    theta_t = torch.tensor(theta, requires_grad=True)
    cotangent_t = torch.tensor(cotangent.transpose(0, 3, 1, 2).copy())
    size = (images.shape[0], images.shape[3], *out_size)

    def step():
        grid = torch.nn.functional.affine_grid(theta_t, size, align_corners=False)
        output = torch.nn.functional.grid_sample(
            images_t, grid, mode="bilinear", padding_mode="zeros", align_corners=False
        )
        grads = torch.autograd.grad(output, (images_t, theta_t), cotangent_t)
        return [output.detach().numpy().transpose(0, 2, 3, 1)] + [
            g.numpy() for g in grads
        ]

    def to_nhwc(results):
        output, grad_images, grad_theta = results
        return output, grad_images.transpose(0, 2, 3, 1), grad_theta

    return step, to_nhwc


KINDS = (
    "ops",
    "fused",
    "layer",
    "fused_native",
    "layer_native",
    "layer_eager",
    "layer_native_eager",
)


def keras_step(
    kind, images, theta, params, cotangent, out_size, transform, jit_compile
):
    images_t, cotangent_t = tf.constant(images), tf.constant(cotangent)
    eager = kind.endswith("_eager")
    kind = kind.removesuffix("_eager")
    native = kind.endswith("_native")
    kind = kind.removesuffix("_native")
    if kind == "layer":
        layer = SpatialTransformer(transform, output_size=out_size)
        inputs = tf.constant(params)
    else:
        inputs = tf.constant(theta)

    def forward(images, inputs):
        if kind == "ops":
            return bilinear_sample(images, affine_grid(inputs, out_size))
        if kind == "fused":
            return affine_sample(images, inputs, out_size)
        return layer([images, inputs])

    def eagerly(images, inputs, cotangent):
        with tf.GradientTape() as tape:
            tape.watch([images, inputs])
            output = forward(images, inputs)
        grads = tape.gradient(output, [images, inputs], output_gradients=cotangent)
        return [output, *grads]

    compiled = tf.function(eagerly, jit_compile=jit_compile)

    if eager:
        # With the kernel: the default setting (wherever it applies).
        setting = contextlib.nullcontext if native else native_sampler.native_sampler

        def step():
            with setting(False):
                results = eagerly(images_t, inputs, cotangent_t)
            return [np.asarray(t) for t in results]

    else:
        # Traced now, with the compiled kernel on or off; later calls reuse it.
        with native_sampler.native_sampler(native):
            compiled.get_concrete_function(images_t, inputs, cotangent_t)

        def step():
            # As NumPy arrays without a copy, as torch's `.numpy()` gives them.
            return [np.asarray(t) for t in compiled(images_t, inputs, cotangent_t)]

    def to_nhwc(results):
        output, grad_images, grad_inputs = results
        if kind == "layer" and transform == "attention":
            # d/ds = d/dt11 + d/dt22, d/dtx = d/dt13, d/dty = d/dt23.
            return output, grad_images, grad_inputs
        return output, grad_images, grad_inputs.reshape(-1, 2, 3)

    return step, to_nhwc


def in_graph_steps(
    images, theta, params, cotangent, out_size, transform, repeats, native=False
):
    """Ten (`repeats`) forward + backward sampler calls on different
    transforms, as one step: ours inside one compiled function (the layer),
    torch's as ten calls in a row. Only per-call sums leave the step, so the
    ratio compares kernel time with as little dispatch and copying as each
    library allows."""
    scales = 1.0 + 0.002 * np.arange(repeats, dtype=np.float32)
    thetas = theta[None] * scales[:, None, None, None]
    stacked = params[None] * scales[:, None, None]

    images_t = torch.tensor(images.transpose(0, 3, 1, 2).copy(), requires_grad=True)
    cotangent_t = torch.tensor(cotangent.transpose(0, 3, 1, 2).copy())
    thetas_t = [torch.tensor(t, requires_grad=True) for t in thetas]
    size = (images.shape[0], images.shape[3], *out_size)

    def torch_repeated():
        sums = []
        for theta_t in thetas_t:
            grid = torch.nn.functional.affine_grid(theta_t, size, align_corners=False)
            output = torch.nn.functional.grid_sample(
                images_t, grid, mode="bilinear", padding_mode="zeros",
                align_corners=False,
            )  # fmt: skip
            grads = torch.autograd.grad(output, (images_t, theta_t), cotangent_t)
            sums.append(float(output.sum() + grads[0].sum() + grads[1].sum()))
        return sums

    layer = SpatialTransformer(transform, output_size=out_size)
    images_tf, cotangent_tf = tf.constant(images), tf.constant(cotangent)
    stacked_tf = tf.constant(stacked)

    @tf.function
    def compiled():
        sums = []
        for i in range(repeats):
            inputs = stacked_tf[i]
            with tf.GradientTape() as tape:
                tape.watch([images_tf, inputs])
                output = layer([images_tf, inputs])
            grads = tape.gradient(
                output, [images_tf, inputs], output_gradients=cotangent_tf
            )
            sums.append(
                tf.reduce_sum(output)
                + tf.reduce_sum(grads[0])
                + tf.reduce_sum(grads[1])
            )
        return tf.stack(sums)

    with native_sampler.native_sampler(native):
        compiled.get_concrete_function()
    return torch_repeated, lambda: compiled().numpy()


def measure(steps, rounds, calls, warmup):
    for step in steps.values():
        for _ in range(warmup):
            step()
    times = {name: [] for name in steps}
    names = list(steps)
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            time.sleep(0.02)
            steps[name]()
            for _ in range(calls):
                start = time.perf_counter()
                steps[name]()
                times[name].append(time.perf_counter() - start)
    return {
        name: {
            "median": 1e3 * float(np.median(t)),
            "p25": 1e3 * float(np.percentile(t, 25)),
            "p75": 1e3 * float(np.percentile(t, 75)),
            "calls": len(t),
        }
        for name, t in times.items()
    }


def run_shape(name, shape, args):
    images, theta, params, cotangent = make_inputs(shape)
    out_size, transform = shape["output"], shape["transform"]
    steps, converters = {}, {}
    steps["torch"], converters["torch"] = torch_step(images, theta, cotangent, out_size)
    for kind in args.kinds:
        eager_or_native = kind.endswith(("_native", "_eager"))
        for jit in (False,) if eager_or_native else (False, True):
            label = f"{kind}_xla" if jit else kind
            steps[label], converters[label] = keras_step(
                kind, images, theta, params, cotangent, out_size, transform, jit
            )
    reference = converters["torch"](steps["torch"]())
    agreement = {
        label: relative_error(converters[label](steps[label]()), reference, transform)
        for label in steps
        if label != "torch"
    }
    times = measure(steps, args.rounds, args.calls, args.warmup)
    ratios = {
        label: times[label]["median"] / times["torch"]["median"]
        for label in steps
        if label != "torch"
    }
    print(f"{name}: torch {times['torch']['median']:.3f} ms")
    for label, ratio in ratios.items():
        print(f"  {label:10s} {times[label]['median']:8.3f} ms  {ratio:5.2f}x torch")
    in_graph = None
    if args.in_graph:
        repeats = 10
        torch_x, layer_x = in_graph_steps(
            images, theta, params, cotangent, out_size, transform, repeats
        )
        contenders = {"torch_x10": torch_x, "layer_x10_in_graph": layer_x}
        if "layer_native" in args.kinds:
            contenders["layer_native_x10_in_graph"] = in_graph_steps(
                images, theta, params, cotangent, out_size, transform, repeats, True
            )[1]
        t = measure(
            contenders,
            max(args.rounds // 3, 3),
            max(args.calls // 2, 2),
            max(args.warmup // 4, 3),
        )
        in_graph = {
            "repeats": repeats,
            "times_ms": t,
            "per_call_ms": {k: v["median"] / repeats for k, v in t.items()},
            "ratio_to_torch": t["layer_x10_in_graph"]["median"]
            / t["torch_x10"]["median"],
            "ratios_to_torch": {
                k: v["median"] / t["torch_x10"]["median"]
                for k, v in t.items()
                if k != "torch_x10"
            },
        }
        for label, ratio in in_graph["ratios_to_torch"].items():
            print(
                f"  in-graph: torch {t['torch_x10']['median'] / repeats:.3f} ms/call, "
                f"{label} {t[label]['median'] / repeats:.3f} ms/call, "
                f"{ratio:.2f}x torch"
            )
    return {
        "in_graph_x10": in_graph,
        "batch": shape["batch"],
        "input_hwc": list(shape["input"]),
        "output_hw": list(out_size),
        "transform": transform,
        "times_ms": times,
        "ratio_to_torch": ratios,
        "max_relative_error_to_torch": agreement,
    }


# (batch, height, width, channels, out_height, out_width) for the separable
# path's crossover: its cost is H*W/w + W multiply-adds per output value.
SWEEP = [
    (64, 32, 32, 3, 16, 16),
    (64, 100, 100, 1, 50, 50),
    (64, 60, 60, 1, 12, 12),
    (64, 64, 64, 3, 8, 8),
    (16, 200, 200, 1, 50, 50),
    (16, 200, 200, 1, 25, 25),
]


def sweep_step(cost, images, params, cotangent, out_size):
    """A forward + backward step of scale_translate_sample with the path that
    `SEPARABLE_MAX_COST = cost` selects (it is read while tracing)."""

    @tf.function
    def step(images, params, cotangent):
        with tf.GradientTape() as tape:
            tape.watch([images, params])
            output = sampling.scale_translate_sample(images, params, out_size)
        return tape.gradient(output, [images, params], output_gradients=cotangent)

    saved = sampling.SEPARABLE_MAX_COST
    sampling.SEPARABLE_MAX_COST = cost
    try:
        step.get_concrete_function(images, params, cotangent)
    finally:
        sampling.SEPARABLE_MAX_COST = saved
    return lambda: [t.numpy() for t in step(images, params, cotangent)]


def separable_sweep(args):
    """Times scale_translate_sample's separable (matmul) and gather paths."""
    rows = []
    for batch, height, width, channels, out_h, out_w in SWEEP:
        rng = np.random.default_rng(0)
        images = tf.constant(rng.random((batch, height, width, channels), np.float32))
        params = np.stack(
            [
                0.5 + 0.05 * rng.standard_normal(batch),
                0.5 + 0.05 * rng.standard_normal(batch),
                rng.uniform(-0.5, 0.5, batch),
                rng.uniform(-0.5, 0.5, batch),
            ],
            axis=-1,
        )
        params = tf.constant(params.astype(np.float32))
        cotangent = tf.constant(rng.random((batch, out_h, out_w, channels), np.float32))
        steps = {
            path: sweep_step(cost, images, params, cotangent, (out_h, out_w))
            for path, cost in (("separable", 10**9), ("gather", -1))
        }
        times = measure(steps, args.rounds // 2, args.calls, args.warmup // 2)
        row = {
            "shape": [batch, height, width, channels, out_h, out_w],
            "cost_per_output": height * width / out_w + width,
            "separable_ms": times["separable"]["median"],
            "gather_ms": times["gather"]["median"],
        }
        print(
            f"sweep {row['shape']}: cost {row['cost_per_output']:.0f}, separable "
            f"{row['separable_ms']:.3f} ms, gather {row['gather_ms']:.3f} ms"
        )
        rows.append(row)
    return rows


def _kernel_steps(library, images, x, y, cotangent, repeats):
    """Two compiled functions: `repeats` forward or backward kernel calls."""

    @tf.function
    def forward():
        total = 0.0
        for i in range(repeats):
            out = library.cram_sample_at_pixels(
                images, x + 1e-3 * i, y, padding="zeros"
            )
            total += out[0, 0, 0, 0]
        return total

    @tf.function
    def backward():
        total = 0.0
        for i in range(repeats):
            grads = library.cram_sample_at_pixels_grad(
                images, x + 1e-3 * i, y, cotangent, padding="zeros"
            )
            total += grads[0][0, 0, 0, 0] + grads[1][0, 0, 0]
        return total

    return forward, backward


def kernel_times(args):
    """The compiled kernel's two ops alone at each shape: wall and CPU
    milliseconds per call (CPU: the process's, summed over its threads),
    forward (`CramSampleAtPixels`) and backward (`CramSampleAtPixelsGrad`),
    ten calls on slightly different coordinates per timed function call."""
    library = native_sampler.load()
    repeats, results = 10, {}
    for name in args.shapes:
        shape = SHAPES[name]
        images, theta, params, cotangent = (tf.constant(a) for a in make_inputs(shape))
        (height, width, _), (out_h, out_w) = shape["input"], shape["output"]
        if shape["transform"] == "affine":
            rows = tf.reshape(params, (-1, 2, 3))
            x = sampling._affine_pixel_coordinates(
                rows[:, 0], width, out_h, out_w, False
            )
            y = sampling._affine_pixel_coordinates(
                rows[:, 1], height, out_h, out_w, False
            )
        else:
            x = tf.expand_dims(
                sampling._scale_translate_coordinates(
                    params, 0, 1, width, out_w, False
                ),
                1,
            )
            y = tf.expand_dims(
                sampling._scale_translate_coordinates(
                    params, 0, 2, height, out_h, False
                ),
                2,
            )

        forward, backward = _kernel_steps(library, images, x, y, cotangent, repeats)

        for label, fn in (("forward", forward), ("backward", backward)):
            for _ in range(5):
                fn().numpy()
            walls = []
            cpu_before = time.process_time()
            for _ in range(args.rounds):
                start = time.perf_counter()
                fn().numpy()
                walls.append(time.perf_counter() - start)
            cpu = time.process_time() - cpu_before
            results[f"{name}/{label}"] = {
                "wall_ms": 1e3 * float(np.median(walls)) / repeats,
                "cpu_ms": 1e3 * cpu / args.rounds / repeats,
            }
            print(f"kernel {name} {label}: {results[f'{name}/{label}']}")
    return results


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--calls", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument(
        "--shapes", nargs="+", default=list(SHAPES), choices=list(SHAPES)
    )
    parser.add_argument(
        "--kinds",
        nargs="+",
        default=list(KINDS),
        choices=list(KINDS),
        help="contenders besides torch (default: all); the *_native kinds "
        "compile the TensorFlow kernel on first use (needs g++); the *_eager "
        "kinds call the layer eagerly under a GradientTape, as torch is "
        "called, instead of through a tf.function",
    )
    parser.add_argument(
        "--separable-sweep",
        action="store_true",
        help="also time scale_translate_sample's two paths over SWEEP sizes",
    )
    parser.add_argument(
        "--no-in-graph",
        dest="in_graph",
        action="store_false",
        help="skip the in-graph measurement (ten sampler calls in one compiled "
        "function against ten torch calls)",
    )
    parser.add_argument(
        "--kernels",
        action="store_true",
        help="only time the compiled kernel's forward and backward ops alone "
        "(wall and CPU time per call; with --threads 1 the CPU time is one "
        "core's work)",
    )
    parser.add_argument("--output", type=pathlib.Path)
    parser.add_argument(
        "--note",
        default="",
        help="recorded with the run, e.g. what else ran on the machine",
    )
    parser.add_argument(
        "--append",
        action="store_true",
        help="add this run to the runs already in --output instead of replacing",
    )
    args = parser.parse_args()
    if args.kernels and args.append:
        parser.error(
            "--kernels writes a file of its own; it cannot be appended to a file "
            "of sampler runs"
        )

    torch.set_num_threads(args.threads)
    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    load_before = os.getloadavg()
    busy_before = busy_fraction(2.0)
    started = datetime.datetime.now(datetime.timezone.utc)
    if args.kernels:
        shapes = {}
        kernels = kernel_times(args)
    else:
        kernels = None
        shapes = {name: run_shape(name, SHAPES[name], args) for name in args.shapes}
    run = {
        "command": command_line("benchmarks/sampler.py", sys.argv[1:]),
        "started_utc": started.isoformat(timespec="seconds"),
        "wall_s": round(
            (datetime.datetime.now(datetime.timezone.utc) - started).total_seconds(), 1
        ),
        "load_average_1_5_15min": {
            "before": list(load_before),
            "after": list(os.getloadavg()),
        },
        "cpu_busy_before": busy_before,
        "note": args.note,
        "threads": args.threads,
        "protocol": {
            "rounds": args.rounds,
            "calls_per_round": args.calls,
            "warmup_calls": args.warmup,
        },
        "machine": {
            "description": describe(),
            "cpu_flags": cpu_flags(),
            "platform": platform.platform(),
        },
        "versions": {
            "python": platform.python_version(),
            "numpy": np.__version__,
            "tensorflow": tf.__version__,
            "keras": keras.__version__,
            "torch": torch.__version__,
        },
        "shapes": shapes,
    }
    if kernels is not None:
        run["kernels"] = kernels
    if kernels is not None or any("native" in kind for kind in args.kinds):
        # The compiled kernel's loops in this run: "avx512", "avx2" or
        # "scalar" (CRAM_KERAS_SAMPLER_ISA caps them).
        run["kernel_loops"] = native_sampler.vector_isa()
    if args.separable_sweep:
        run["separable_sweep"] = separable_sweep(args)
    if args.output is not None:
        runs = []
        if args.append and args.output.exists():
            runs = json.loads(args.output.read_text())["runs"]
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps({"runs": [*runs, run]}, indent=2) + "\n")
        print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
