#!/usr/bin/env python
"""The RNN-SPN step's convolutions written as matrix products, against
TensorFlow's own (oneDNN) convolution: does lowering them pay on the CPU?

    python benchmarks/conv_lowering.py

The profile of the RNN-SPN training step (`benchmarks/profile_steps.py`)
shows the gradients of the classifier's first convolution (one input
channel: the 50x50 crops) taking about five times its forward pass. Two
lowerings are timed here against `tf.nn.conv2d`, each as forward, ReLU, a
scalar loss and both gradients (image and kernel) in one `tf.function`:

- ``im2col``: the whole convolution as shifted slices of the input,
  concatenated, times the kernel as a matrix; TensorFlow differentiates it;
- ``matmul_gradients``: the forward pass by `tf.nn.conv2d`, the two
  gradients as matrix products (the image gradient as patch gradients
  summed back into place, the kernel gradient as patches times the output
  gradient).

Shapes: the classifier's first convolution (300 crops of 50x50, 1 -> 32
filters 3x3), the localisation network's (100 images pooled to 50x50,
1 -> 20) and the classifier's second (32 -> 32 on 24x24). Prints the median time per call of `--calls`
calls after a warm-up, in `--rounds` alternating rounds, and the largest
relative difference of the gradients from `tf.nn.conv2d`'s. Run it on an
otherwise idle machine.
"""

import argparse
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from cram_keras.platform_info import busy_fraction, describe  # noqa: E402

# (crops, side, input channels, filters, kernel): the step's shapes.
SHAPES = {
    "classifier conv0": (300, 50, 1, 32, 3),
    "localisation conv0": (100, 50, 1, 20, 3),
    "classifier conv1": (300, 24, 32, 32, 3),
}


def tensorflow_conv(x, w):
    return tf.nn.conv2d(x, w, 1, "VALID")


def _patches(x, kh, kw):
    """(N, Ho, Wo, kh * kw * C): each output pixel's window, in the order
    of the kernel's (kh, kw, C) axes."""
    ho, wo = x.shape[1] - kh + 1, x.shape[2] - kw + 1
    return tf.concat(
        [x[:, i : i + ho, j : j + wo, :] for i in range(kh) for j in range(kw)], -1
    )


def im2col_conv(x, w):
    kh, kw, ci, co = w.shape
    p = _patches(x, kh, kw)
    y = tf.matmul(tf.reshape(p, (-1, kh * kw * ci)), tf.reshape(w, (-1, co)))
    return tf.reshape(y, (-1, p.shape[1], p.shape[2], co))


@tf.custom_gradient
def matmul_gradients_conv(x, w):
    y = tf.nn.conv2d(x, w, 1, "VALID")

    def grad(dy):
        kh, kw, ci, co = w.shape
        ho, wo = y.shape[1], y.shape[2]
        dy2 = tf.reshape(dy, (-1, co))
        dp = tf.matmul(dy2, tf.reshape(w, (-1, co)), transpose_b=True)
        dp = tf.reshape(dp, (-1, ho, wo, kh * kw, ci))
        dx = tf.add_n(
            [
                tf.pad(
                    dp[:, :, :, k, :],
                    [
                        [0, 0],
                        [k // kw, kh - 1 - k // kw],
                        [k % kw, kw - 1 - k % kw],
                        [0, 0],
                    ],
                )
                for k in range(kh * kw)
            ]
        )
        p = tf.reshape(_patches(x, kh, kw), (-1, kh * kw * ci))
        dw = tf.matmul(p, dy2, transpose_a=True)
        return dx, tf.reshape(dw, w.shape)

    return y, grad


VARIANTS = {
    "tf.nn.conv2d": tensorflow_conv,
    "im2col": im2col_conv,
    "matmul_gradients": matmul_gradients_conv,
}


def step_of(conv):
    @tf.function
    def step(x, w):
        with tf.GradientTape() as tape:
            tape.watch([x, w])
            y = tf.nn.relu(conv(x, w))
            loss = tf.reduce_sum(y * y)
        return tape.gradient(loss, [x, w])

    return step


def main(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--calls", type=int, default=20, help="timed calls per round")
    p.add_argument("--rounds", type=int, default=2, help="alternating rounds")
    p.add_argument("--threads", type=int, default=2, help="TensorFlow threads")
    args = p.parse_args(argv)
    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    print(f"{describe()}; CPU busy before: {busy_fraction():.0%}")
    rng = np.random.default_rng(0)
    for label, (n, side, ci, co, k) in SHAPES.items():
        x = tf.constant(rng.standard_normal((n, side, side, ci)).astype("float32"))
        w = tf.constant(0.1 * rng.standard_normal((k, k, ci, co)).astype("float32"))
        steps = {name: step_of(conv) for name, conv in VARIANTS.items()}
        grads = {name: step(x, w) for name, step in steps.items()}
        times = {name: [] for name in steps}
        for _ in range(args.rounds):
            for name, step in steps.items():
                for _ in range(3):
                    step(x, w)
                for _ in range(args.calls):
                    start = time.perf_counter()
                    step(x, w)[0].numpy()
                    times[name].append(time.perf_counter() - start)
        reference = np.median(times["tf.nn.conv2d"])
        print(f"\n{label}: {n} x {side}x{side}x{ci} -> {co} filters {k}x{k}")
        for name, values in times.items():
            error = max(
                float(tf.reduce_max(tf.abs(a - b)) / tf.reduce_max(tf.abs(a)))
                for a, b in zip(grads["tf.nn.conv2d"], grads[name], strict=True)
            )
            median = np.median(values)
            print(
                f"  {name:18s} {1e3 * median:7.2f} ms  "
                f"{reference / median:5.2f}x tf.nn.conv2d's speed  "
                f"gradients within {error:.1e} (relative)"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
