"""The sampler benchmarks' shapes, inputs and agreement check, in NumPy
only, so that the TensorFlow benchmark (`sampler.py`) and the JAX one on a
GPU (`gpu_speed.py`) time the same problems."""

import numpy as np

SHAPES = {
    # RNN-SPN: 100x100 cluttered MNIST sequences, downsample factor d = 2,
    # full affine transforms.
    "rnn_spn": {
        "batch": 64,
        "input": (100, 100, 1),
        "output": (50, 50),
        "transform": "affine",
    },
    # CRAM: 32x32 SVHN, 16x16 glimpses, attention transforms (s, tx, ty).
    "cram": {
        "batch": 64,
        "input": (32, 32, 3),
        "output": (16, 16),
        "transform": "attention",
    },
}


def make_inputs(shape, seed=0):
    """Images, theta (B, 2, 3), the layer's params and an upstream cotangent."""
    rng = np.random.default_rng(seed)
    batch, (height, width, channels), (out_h, out_w) = (
        shape["batch"],
        shape["input"],
        shape["output"],
    )
    images = rng.random((batch, height, width, channels), dtype=np.float32)
    if shape["transform"] == "affine":
        # Mild zooms, rotations and shifts around a crop: most samples inside.
        theta = np.array([[0.8, 0.1, 0.05], [-0.1, 0.7, 0.02]])
        theta = theta + 0.05 * rng.standard_normal((batch, 2, 3))
        params = theta.reshape(batch, 6)
    else:
        # Glimpses at half scale, anywhere on the image.
        scale = 0.5 + 0.05 * rng.standard_normal(batch)
        shift = rng.uniform(-0.5, 0.5, (batch, 2))
        params = np.stack([scale, shift[:, 0], shift[:, 1]], axis=-1)
        zero = np.zeros(batch)
        theta = np.stack([scale, zero, shift[:, 0], zero, scale, shift[:, 1]], -1)
        theta = theta.reshape(batch, 2, 3)
    cotangent = rng.random((batch, out_h, out_w, channels), dtype=np.float32)
    return images, theta.astype(np.float32), params.astype(np.float32), cotangent


def relative_error(ours, reference, transform):
    """max |ours - torch| / max |torch| for the output and both gradients."""
    output, grad_images, grad_theta = reference
    if ours[2].shape != grad_theta.shape:  # the attention layer's (s, tx, ty)
        grad_theta = np.stack(
            [
                grad_theta[:, 0, 0] + grad_theta[:, 1, 1],
                grad_theta[:, 0, 2],
                grad_theta[:, 1, 2],
            ],
            axis=-1,
        )
    return {
        key: float(np.max(np.abs(a - b)) / np.max(np.abs(b)))
        for key, a, b in zip(
            ("output", "grad_images", "grad_params"),
            ours,
            (output, grad_images, grad_theta),
            strict=True,
        )
    }
