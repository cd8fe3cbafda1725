"""Shared helpers for the layer and op tests (our own; no `keras.src` imports).

Test modules import it as `from testing import ...` (pytest puts `tests/` on
`sys.path` because `tests/conftest.py` lives there).

- `run_serialization_test(layer, inputs)`: config and Keras-serialisation
  round trips rebuild an equal layer with equal outputs.
- `run_model_saving_test(model, inputs, path)`: a `.keras` save and load
  gives identical outputs.
- `vjp(fn, primals, cotangent)`: output and vector-Jacobian products on the
  current backend (TensorFlow, JAX or PyTorch).
- `supports_float64()`: whether keras.ops compute in float64 on this
  backend (only TensorFlow; elsewhere Keras promotes float64 to float32).
- `reference_affine_grid`, `reference_bilinear_sample`, `pixel_coordinates`:
  a NumPy loop reference of PyTorch's `affine_grid` / `grid_sample`
  (bilinear, zeros or border padding, both `align_corners`), one output pixel
  at a time in float64, written from the definitions.
"""

import keras
import numpy as np


def backend():
    return keras.backend.backend()


def supports_float64():
    """Whether keras.ops keep float64 (they promote it to float32 on JAX and
    PyTorch, e.g. in `matmul`)."""
    ones = np.ones((1, 1), np.float64)
    product = keras.ops.matmul(ones, ones)
    return keras.backend.standardize_dtype(product.dtype) == "float64"


def to_numpy(x):
    return keras.ops.convert_to_numpy(x)


def vjp(fn, primals, cotangent):
    """Returns `(fn(*primals), grads)`, grads of `sum(fn(*primals) * cotangent)`.

    `primals` is a sequence of arrays; `grads` a tuple of NumPy arrays, one
    per primal.
    """
    name = backend()
    if name == "tensorflow":
        import tensorflow as tf

        primals = [tf.convert_to_tensor(p) for p in primals]
        with tf.GradientTape() as tape:
            tape.watch(primals)
            output = fn(*primals)
        grads = tape.gradient(
            output, primals, output_gradients=tf.cast(cotangent, output.dtype)
        )
    elif name == "jax":
        import jax
        import jax.numpy as jnp

        primals = [jnp.asarray(p) for p in primals]
        output, pullback = jax.vjp(fn, *primals)
        grads = pullback(jnp.asarray(cotangent, output.dtype))
    elif name == "torch":
        import torch

        primals = [torch.tensor(np.asarray(p), requires_grad=True) for p in primals]
        output = fn(*primals)
        grads = torch.autograd.grad(
            output, primals, torch.tensor(np.asarray(cotangent), dtype=output.dtype)
        )
    else:
        raise NotImplementedError(f"vjp() does not support backend={name!r}")
    return to_numpy(output), tuple(to_numpy(g) for g in grads)


def run_serialization_test(layer, inputs):
    """Rebuilds `layer` from its config and from `keras.saving.serialize_keras_object`.

    Asserts that the configs survive both round trips unchanged and that the
    rebuilt layers give the same outputs on `inputs`.
    """
    expected = to_numpy(layer(inputs))
    config = layer.get_config()
    rebuilt = layer.__class__.from_config(config)
    assert rebuilt.get_config() == config
    np.testing.assert_array_equal(to_numpy(rebuilt(inputs)), expected)

    serialized = keras.saving.serialize_keras_object(layer)
    revived = keras.saving.deserialize_keras_object(serialized)
    assert type(revived) is type(layer)
    assert revived.get_config() == config
    np.testing.assert_array_equal(to_numpy(revived(inputs)), expected)
    return rebuilt


def run_model_saving_test(model, inputs, path):
    """Saves `model` to `path` (a `.keras` file), reloads it, compares outputs."""
    expected = to_numpy(model(inputs))
    model.save(path)
    restored = keras.saving.load_model(path)
    np.testing.assert_array_equal(to_numpy(restored(inputs)), expected)
    return restored


# === NumPy reference of torch's affine_grid / grid_sample ===


def reference_positions(size, align_corners):
    """Normalised coordinates of the pixel centres along one axis."""
    if size == 1:
        return np.zeros(1)
    k = np.arange(size, dtype=np.float64)
    if align_corners:
        return -1.0 + 2.0 * k / (size - 1)
    return (2.0 * k + 1.0) / size - 1.0


def reference_affine_grid(theta, out_h, out_w, align_corners):
    xs = reference_positions(out_w, align_corners)
    ys = reference_positions(out_h, align_corners)
    grid = np.zeros((len(theta), out_h, out_w, 2))
    for b, t in enumerate(np.asarray(theta, np.float64)):
        for i in range(out_h):
            for j in range(out_w):
                grid[b, i, j] = t @ np.array([xs[j], ys[i], 1.0])
    return grid


def reference_bilinear_sample(images, grid, padding, align_corners):
    images = np.asarray(images, np.float64)
    batch, height, width, channels = images.shape
    out = np.zeros((*grid.shape[:3], channels))
    for b, i, j in np.ndindex(*grid.shape[:3]):
        gx, gy = grid[b, i, j]
        if align_corners:
            x, y = (gx + 1) / 2 * (width - 1), (gy + 1) / 2 * (height - 1)
        else:
            x, y = ((gx + 1) * width - 1) / 2, ((gy + 1) * height - 1) / 2
        if padding == "border":
            x, y = np.clip(x, 0, width - 1), np.clip(y, 0, height - 1)
        x0, y0 = int(np.floor(x)), int(np.floor(y))
        for yy, wy in ((y0, 1 - (y - y0)), (y0 + 1, y - y0)):
            for xx, wx in ((x0, 1 - (x - x0)), (x0 + 1, x - x0)):
                if 0 <= yy < height and 0 <= xx < width:
                    out[b, i, j] += wy * wx * images[b, yy, xx]
    return out


def pixel_coordinates(theta, in_h, in_w, out_h, out_w, align_corners):
    """Reference pixel coordinates (x, y) of every output pixel, float64."""
    grid = reference_affine_grid(theta, out_h, out_w, align_corners)
    if align_corners:
        return (grid[..., 0] + 1) / 2 * (in_w - 1), (grid[..., 1] + 1) / 2 * (in_h - 1)
    return ((grid[..., 0] + 1) * in_w - 1) / 2, ((grid[..., 1] + 1) * in_h - 1) / 2
