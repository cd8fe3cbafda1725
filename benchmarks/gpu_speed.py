#!/usr/bin/env python
"""The sampler and the RNN-SPN training step on a GPU: ours on JAX against
PyTorch on the same GPU.

    KERAS_BACKEND=jax python benchmarks/gpu_speed.py --output benchmarks/results/gpu_speed.json

Runs where TensorFlow is not installed (the GPU machines this project uses
have JAX and PyTorch only). On a GPU, JAX runs the `keras.ops` sampler (the
compiled kernel is TensorFlow's, on the CPU).

- **Sampler**: `SpatialTransformer` on `[images, params]`, forward and the
  gradients of the images and the parameters given an upstream cotangent,
  in one `jax.jit` function, against `F.grid_sample(images,
  F.affine_grid(theta))` with `torch.autograd.grad`; at the two shapes of
  `benchmarks/sampler.py` (RNN-SPN and CRAM) and a large one (256 images of
  224x224x3 to 112x112, affine). The forward pass alone is timed too, so
  that a slow shape shows which direction is slow. Outputs and gradients
  are checked against torch's (largest difference over the largest value).
- **Training**: the RNN-SPN training step (`train_on_batch` of the compiled
  model: RMSprop and the two-stage clipping, batch 100, d = 2) against the
  PyTorch port of the same model and recipe
  (`benchmarks/torch_rnn_spn.py`), inputs already on the GPU for both.

Every timed call ends when its results are ready on the device
(`block_until_ready`, `torch.cuda.synchronize`). Protocol: warm-up calls
(compilation included), then `--rounds` rounds in which each contender runs
`--calls` timed calls, the order alternating; medians over all timed calls.
Ratios are ours / torch in time (below 1: ours faster).

`--smoke` runs tiny shapes and a few calls on whatever device there is (the
test of this script). Without a GPU the numbers are CPU numbers and the
file says so. `--profile DIR` also writes a JAX profiler trace of five
calls of our sampler at each shape, one `jax_trace_<shape>.tar.gz` each
(the XSpace protobuf that `benchmarks/profile_steps.py` reads), for a
shape where ours is slow.
"""

import argparse
import datetime
import json
import os
import pathlib
import sys
import tarfile
import tempfile
import time

os.environ.setdefault("KERAS_BACKEND", "jax")
# JAX and torch share the GPU: JAX does not take 75 % of its memory up front.
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from sampler_inputs import SHAPES, make_inputs, relative_error  # noqa: E402

from cram_keras.platform_info import describe  # noqa: E402
from cram_keras.studies.driver import command_line  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]

SAMPLER_SHAPES = {
    **SHAPES,
    "large": {
        "batch": 256,
        "input": (224, 224, 3),
        "output": (112, 112),
        "transform": "affine",
    },
}
SMOKE_SHAPES = {
    "rnn_spn": {"batch": 4, "input": (20, 20, 1), "output": (10, 10), "transform": "affine"},
    "cram": {"batch": 4, "input": (16, 16, 3), "output": (8, 8), "transform": "attention"},
}  # fmt: skip


def torch_device():
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def sync_torch():
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def ready(values):
    """Waits until every JAX array in ``values`` is computed."""
    import jax

    return jax.block_until_ready(values)


# === The sampler ===


def jax_sampler(shape, images, params, cotangent):
    """(step, forward): jitted forward + both gradients, and forward alone;
    each returns device arrays."""
    import jax

    from cram_keras.layers import SpatialTransformer

    layer = SpatialTransformer(shape["transform"], output_size=shape["output"])

    def forward(x, p):
        return layer([x, p])

    @jax.jit
    def step(x, p, c):
        output, pullback = jax.vjp(forward, x, p)
        return (output, *pullback(c))

    inputs = [jax.device_put(a) for a in (images, params, cotangent)]
    forward_only = jax.jit(forward)
    return (
        lambda: ready(step(*inputs)),
        lambda: ready(forward_only(*inputs[:2])),
    )


def torch_sampler(shape, images, theta, cotangent):
    """(step, forward) of torch's sampler on its device (NCHW)."""
    functional = torch.nn.functional
    device = torch_device()
    x = torch.tensor(images.transpose(0, 3, 1, 2).copy(), device=device)
    x.requires_grad_(True)
    t = torch.tensor(theta, device=device, requires_grad=True)
    c = torch.tensor(cotangent.transpose(0, 3, 1, 2).copy(), device=device)
    size = (images.shape[0], images.shape[3], *shape["output"])

    def forward():
        grid = functional.affine_grid(t, size, align_corners=False)
        return functional.grid_sample(
            x, grid, mode="bilinear", padding_mode="zeros", align_corners=False
        )

    def step():
        output = forward()
        grads = torch.autograd.grad(output, (x, t), c)
        sync_torch()
        return (output, *grads)

    def forward_alone():
        with torch.no_grad():
            output = forward()
        sync_torch()
        return output

    return step, forward_alone


def to_numpy_nhwc(ours, theirs):
    """Both results as NumPy arrays, torch's in NHWC."""
    ours = [np.asarray(a) for a in ours]
    output, grad_images, grad_theta = (a.detach().cpu().numpy() for a in theirs)
    theirs = [
        output.transpose(0, 2, 3, 1),
        grad_images.transpose(0, 2, 3, 1),
        grad_theta,
    ]
    if ours[2].shape != theirs[2].shape and ours[2].shape[-1] == 6:
        ours[2] = ours[2].reshape(-1, 2, 3)
    return ours, theirs


def timed(contenders, calls, rounds, warmup):
    """Median seconds per call of each contender, in alternating rounds."""
    for fn in contenders.values():
        for _ in range(warmup):
            fn()
    times = {name: [] for name in contenders}
    names = list(contenders)
    for r in range(rounds):
        for name in names if r % 2 == 0 else names[::-1]:
            fn = contenders[name]
            for _ in range(calls):
                start = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - start)
    return {name: float(np.median(t)) for name, t in times.items()}


def write_trace(step, path, calls=5):
    """A JAX profiler trace of ``calls`` calls of ``step``, packed into the
    archive ``path``."""
    import jax

    with tempfile.TemporaryDirectory() as directory:
        with jax.profiler.trace(directory):
            for _ in range(calls):
                step()
        with tarfile.open(path, "w:gz") as tar:
            tar.add(directory, arcname="trace")
    return path


def sampler_row(shape, args, name=None):
    images, theta, params, cotangent = make_inputs(shape)
    ours_step, ours_forward = jax_sampler(shape, images, params, cotangent)
    torch_step, torch_forward = torch_sampler(shape, images, theta, cotangent)
    ours, theirs = to_numpy_nhwc(ours_step(), torch_step())
    agreement = relative_error(ours, theirs, shape["transform"])
    seconds = timed(
        {
            "ours": ours_step,
            "torch": torch_step,
            "ours_forward": ours_forward,
            "torch_forward": torch_forward,
        },
        args.calls,
        args.rounds,
        args.warmup,
    )
    ms = {k: 1e3 * v for k, v in seconds.items()}
    trace = None
    if args.profile:
        args.profile.mkdir(parents=True, exist_ok=True)
        trace = str(write_trace(ours_step, args.profile / f"jax_trace_{name}.tar.gz"))
    return {
        "trace": trace,
        "shape": shape,
        "ms": ms,
        "ratio": ms["ours"] / ms["torch"],
        "forward_ratio": ms["ours_forward"] / ms["torch_forward"],
        "backward_ratio": (ms["ours"] - ms["ours_forward"])
        / max(ms["torch"] - ms["torch_forward"], 1e-9),
        "agreement": agreement,
    }


# === The RNN-SPN training step ===


def training_row(args):
    """The RNN-SPN step, ours (Keras on JAX) against the PyTorch port."""
    import jax
    import torch_rnn_spn

    from cram_keras.experiments import rnn_spn

    batch, size = (4, 100) if args.smoke else (100, 100)
    rng = np.random.default_rng(0)
    images = rng.random((batch, size, size, 1), dtype=np.float32)
    labels = rng.integers(0, 10, (batch, 3)).astype("int32")

    config = rnn_spn.Config(model="rnn_spn", batch_size=batch)
    keras.utils.set_random_seed(0)
    model = rnn_spn.compile_model(rnn_spn.build_model(config), config)
    x, y = jax.device_put(images), jax.device_put(labels)

    def ours():
        return model.train_on_batch(x, y)  # returns host numbers: synchronised

    device = torch_device()
    torch.manual_seed(0)
    net = torch_rnn_spn.MODELS["rnn_spn"]().to(device)
    step = torch_rnn_spn.train_step_fn(net)
    x_t = torch.tensor(images.transpose(0, 3, 1, 2).copy(), device=device)
    y_t = torch.tensor(labels, dtype=torch.long, device=device)

    def theirs():
        loss = step(x_t, y_t)
        sync_torch()
        return loss

    seconds = timed(
        {"ours": ours, "torch": theirs}, args.calls, args.rounds, args.warmup
    )
    return {
        "model": "rnn_spn",
        "batch": batch,
        "downsample": config.downsample,
        "ms": {k: 1e3 * v for k, v in seconds.items()},
        "ratio": seconds["ours"] / seconds["torch"],
        "sequences_per_second": {k: batch / v for k, v in seconds.items()},
    }


def gpu_name():
    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    return None


def main(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--output", type=pathlib.Path, help="the result file (JSON)")
    p.add_argument("--calls", type=int, default=20, help="timed calls per round")
    p.add_argument("--rounds", type=int, default=6, help="alternating rounds")
    p.add_argument("--warmup", type=int, default=5, help="untimed calls first")
    p.add_argument(
        "--smoke", action="store_true", help="tiny shapes, few calls (a test)"
    )
    p.add_argument("--no-training", action="store_true", help="the sampler only")
    p.add_argument(
        "--profile",
        type=pathlib.Path,
        default=None,
        metavar="DIR",
        help="also write a JAX profiler trace of our sampler per shape into DIR",
    )
    args = p.parse_args(argv)
    if keras.backend.backend() != "jax":
        p.error(
            "this benchmark times the JAX path: run it with KERAS_BACKEND=jax. "
            f"Received: KERAS_BACKEND={keras.backend.backend()}"
        )
    if args.smoke:
        args.calls, args.rounds, args.warmup = 2, 2, 1
    import jax

    shapes = SMOKE_SHAPES if args.smoke else SAMPLER_SHAPES
    result = {
        "command": command_line(os.path.relpath(sys.argv[0], ROOT), sys.argv[1:]),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(
            timespec="seconds"
        ),
        "hardware": describe(),
        "gpu": gpu_name(),
        "jax_devices": [d.device_kind for d in jax.devices()],
        "versions": {
            "jax": jax.__version__,
            "keras": keras.__version__,
            "torch": torch.__version__,
        },
        "backend": "jax",
        "protocol": (
            f"{args.warmup} warm-up calls, then {args.rounds} alternating rounds of "
            f"{args.calls} timed calls per contender; medians; each call waits for "
            "its results on the device"
        ),
        "smoke": args.smoke,
        "sampler": {},
    }
    for name, shape in shapes.items():
        row = sampler_row(shape, args, name)
        result["sampler"][name] = row
        print(
            f"sampler {name}: ours {row['ms']['ours']:.3f} ms, torch "
            f"{row['ms']['torch']:.3f} ms ({row['ratio']:.2f}x; forward "
            f"{row['forward_ratio']:.2f}x); agreement {row['agreement']}",
            flush=True,
        )
    if not args.no_training:
        row = training_row(args)
        result["training"] = {"rnn_spn": row}
        print(
            f"RNN-SPN step: ours {row['ms']['ours']:.2f} ms, torch "
            f"{row['ms']['torch']:.2f} ms ({row['ratio']:.2f}x)",
            flush=True,
        )
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
