#!/usr/bin/env python
"""Attempt: TensorFlow's fused `crop_and_resize` kernels for the axis-aligned
(attention) sampler, against the library's separable path: a backend-specific fast path where
the backend offers a fused kernel.

For `theta = [[sx, 0, tx], [0, sy, ty]]` the sampling grid is a regular
lattice, which is what `tf.image.crop_and_resize` samples (bilinear, one box
per image). Made exact:

- zeros padding: the image is zero-padded by one pixel (a corner outside the
  image then blends with 0, as in `grid_sample`), and the padded size is
  chosen with `size - 1` a power of two, so that the box's normalised
  coordinates (pixel / (size - 1)) round-trip exactly and the identity crop
  is bit for bit;
- the image gradient is TensorFlow's `CropAndResizeGradImage` (the exact
  adjoint of the forward pass);
- the coordinate gradient is *not* TensorFlow's `CropAndResizeGradBoxes`: on
  integer coordinates (CRAM's starting glimpse lands exactly on pixel
  centres) it returns 0, where `grid_sample` takes the slope towards the next
  pixel. Ours: d out / d y of output row i is the x-interpolated row
  floor(y_i) of the vertical difference image p[r+1] - p[r] (one more
  `crop_and_resize` with one 1 x w box per output row), and likewise for x.

Timed (forward + gradients wrt the images and the layer's params, one
`tf.function`, no XLA), with `sampler.py`'s protocol at its CRAM shape
(64 x 32x32x3 -> 16x16): the library (`scale_translate_sample`, the separable
path), the exact fused path, the fused path with TensorFlow's own (inexact)
box gradient, and each forward pass alone. Every variant is compared with
the library, also at a glimpse on pixel centres.

    python benchmarks/fused_crop_attempt.py --output benchmarks/results/fused_crop_attempt.json

Stop background training while it runs (the file records the load average).
"""

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")

import argparse  # noqa: E402
import datetime  # noqa: E402
import json  # noqa: E402
import pathlib  # noqa: E402
import sys  # noqa: E402

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from cram_keras.ops import sampling  # noqa: E402
from cram_keras.platform_info import describe  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from sampler import SHAPES, make_inputs, measure  # noqa: E402


def padded_size(size):
    """Smallest padded size >= size + 2 with padded size - 1 a power of two."""
    span = 1
    while span < size + 1:
        span *= 2
    return span + 1


def fused_crop(images, x, y, exact_gradient=True):
    """Samples images (B, H, W, C) at pixel coordinates x (B, w), y (B, h),
    zeros padding, with `crop_and_resize` (see the module docstring)."""
    height, width, channels = images.shape[1:]
    out_h, out_w = y.shape[1], x.shape[1]
    hp, wp = padded_size(height), padded_size(width)
    paddings = [[0, 0], [1, hp - height - 1], [1, wp - width - 1], [0, 0]]
    index = tf.range(tf.shape(images)[0])

    def boxes_of(x, y):
        return tf.stack(
            [
                (y[:, 0] + 1.0) / (hp - 1),
                (x[:, 0] + 1.0) / (wp - 1),
                (y[:, -1] + 1.0) / (hp - 1),
                (x[:, -1] + 1.0) / (wp - 1),
            ],
            axis=-1,
        )

    if not exact_gradient:  # TensorFlow's registered gradients throughout.
        padded = tf.pad(images, paddings)
        return tf.image.crop_and_resize(
            padded, boxes_of(x, y), index, (out_h, out_w), extrapolation_value=0.0
        )

    @tf.custom_gradient
    def sample(images, x, y):
        padded = tf.pad(images, paddings)
        boxes = boxes_of(x, y)
        output = tf.image.crop_and_resize(
            padded, boxes, index, (out_h, out_w), extrapolation_value=0.0
        )

        def grad(upstream):
            grad_images = tf.raw_ops.CropAndResizeGradImage(
                grads=upstream,
                boxes=boxes,
                box_ind=index,
                image_size=tf.shape(padded),
                T=images.dtype,
            )[:, 1 : height + 1, 1 : width + 1]
            # Rows floor(y_i) of p[r+1] - p[r], interpolated along x.
            rows = tf.reshape(tf.floor(y + 1.0), [-1]) / (hp - 2)
            row_boxes = tf.stack(
                [
                    rows,
                    tf.repeat(boxes[:, 1], out_h),
                    rows,
                    tf.repeat(boxes[:, 3], out_h),
                ],
                axis=-1,
            )
            slope_y = tf.image.crop_and_resize(
                padded[:, 1:] - padded[:, :-1],
                row_boxes,
                tf.repeat(index, out_h),
                (1, out_w),
                extrapolation_value=0.0,
            )
            slope_y = tf.reshape(slope_y, (-1, out_h, out_w, channels))
            grad_y = tf.reduce_sum(slope_y * upstream, axis=[2, 3])
            cols = tf.reshape(tf.floor(x + 1.0), [-1]) / (wp - 2)
            col_boxes = tf.stack(
                [
                    tf.repeat(boxes[:, 0], out_w),
                    cols,
                    tf.repeat(boxes[:, 2], out_w),
                    cols,
                ],
                axis=-1,
            )
            slope_x = tf.image.crop_and_resize(
                padded[:, :, 1:] - padded[:, :, :-1],
                col_boxes,
                tf.repeat(index, out_w),
                (out_h, 1),
                extrapolation_value=0.0,
            )
            slope_x = tf.reshape(slope_x, (-1, out_w, out_h, channels))
            grad_x = tf.reduce_sum(
                slope_x * tf.transpose(upstream, (0, 2, 1, 3)), [2, 3]
            )
            return grad_images, grad_x, grad_y

        return output, grad

    return sample(images, x, y)


def make_steps(images, params, cotangent):
    height, width = images.shape[1:3]
    out_h, out_w = cotangent.shape[1:3]

    def library(images, p):
        return sampling.scale_translate_sample(images, p, (out_h, out_w))

    def fused(exact):
        def forward(images, p):
            x = sampling._scale_translate_coordinates(p[:, 0::2], width, out_w, False)
            y = sampling._scale_translate_coordinates(p[:, 1::2], height, out_h, False)
            return fused_crop(images, x, y, exact)

        return forward

    forwards = {
        "library": library,
        "fused_exact": fused(True),
        "fused_tf_gradient": fused(False),
    }
    images_t, cotangent_t = tf.constant(images), tf.constant(cotangent)
    steps = {}
    for name, forward in forwards.items():

        @tf.function
        def full(images, p, cotangent, forward=forward):
            with tf.GradientTape() as tape:
                tape.watch([images, p])
                output = forward(images, p)
            return [output, *tape.gradient(output, [images, p], cotangent)]

        @tf.function
        def forward_only(images, p, forward=forward):
            return forward(images, p)

        steps[name] = lambda p, full=full: [
            t.numpy() for t in full(images_t, tf.constant(p), cotangent_t)
        ]
        if name != "fused_tf_gradient":  # the same forward as fused_exact
            steps[f"{name}_forward"] = lambda p, fo=forward_only: fo(
                images_t, tf.constant(p)
            ).numpy()
    return steps


def max_relative(a, b):
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-30))


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=6, help="default: 6")
    parser.add_argument("--calls", type=int, default=20, help="per round; default 20")
    parser.add_argument("--warmup", type=int, default=5, help="default: 5")
    parser.add_argument("--output", default=None, help="results JSON (optional)")
    parser.add_argument(
        "--note",
        default="",
        help="recorded in the results, e.g. what else ran on the machine",
    )
    args = parser.parse_args(argv)

    shape = SHAPES["cram"]
    images, _, layer_params, cotangent = make_inputs(shape)
    s, tx, ty = layer_params.T
    params = np.stack([s, s, tx, ty], -1).astype(np.float32)
    # A glimpse at half scale, centred: every sample on a pixel centre.
    on_centres = np.tile(np.float32([[0.5, 0.5, 0.0, 0.0]]), (len(params), 1))
    steps = make_steps(images, params, cotangent)

    agreement = {}
    for case, p in (("random", params), ("pixel_centres", on_centres)):
        reference = steps["library"](p)
        for name in ("fused_exact", "fused_tf_gradient"):
            agreement[f"{name}/{case}"] = {
                key: max_relative(a, b)
                for key, a, b in zip(
                    ("output", "grad_images", "grad_params"),
                    steps[name](p),
                    reference,
                    strict=True,
                )
            }
    for key, value in agreement.items():
        print(f"{key}: max relative difference to the library {value}")

    times = measure(
        {name: (lambda step=step: step(params)) for name, step in steps.items()},
        args.rounds,
        args.calls,
        args.warmup,
    )
    base = times["library"]["median"]
    for name, t in times.items():
        ref = times["library_forward"]["median"] if name.endswith("_forward") else base
        t["ratio_to_library"] = t["median"] / ref
        print(
            f"{name}: {t['median']:.3f} ms (x{t['ratio_to_library']:.2f} the library)"
        )

    result = {
        "command": "python benchmarks/fused_crop_attempt.py "
        + " ".join(argv if argv is not None else sys.argv[1:]),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(),
        "hardware": describe(),
        "load_average_at_start": os.getloadavg(),
        "note": args.note,
        "shape": shape,
        "tensorflow": tf.__version__,
        "protocol": "forward + gradients wrt images and params (sx, sy, tx, ty) in "
        "one tf.function, no XLA; sampler.py's rotating rounds, median per call "
        "in ms; *_forward: the forward pass alone",
        "times_ms": times,
        "agreement_with_library": agreement,
    }
    if args.output:
        path = pathlib.Path(args.output)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
