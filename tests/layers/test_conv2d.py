"""The package's `Conv2D` (the kernel taps that only meet zero padding
skipped) against a NumPy "same" convolution, against Keras' own layer (values
and gradients), and where it is Keras' layer unchanged."""

import itertools

import keras
import numpy as np
import pytest
import tensorflow as tf

from cram_keras.layers.conv2d import Conv2D, tap_window


def numpy_same_conv(x, kernel, stride):
    """A "same" convolution (TensorFlow's padding: the smaller half before)
    by its definition, in float64: (B, H, W, C) * (kh, kw, C, F)."""
    batch, height, width, _ = x.shape
    kh, kw, _, filters = kernel.shape
    sh, sw = stride
    out_h, out_w = -(-height // sh), -(-width // sw)
    top = max((out_h - 1) * sh + kh - height, 0) // 2
    left = max((out_w - 1) * sw + kw - width, 0) // 2
    y = np.zeros((batch, out_h, out_w, filters))
    for i, j, a, b in itertools.product(
        range(out_h), range(out_w), range(kh), range(kw)
    ):
        r, c = i * sh + a - top, j * sw + b - left
        if 0 <= r < height and 0 <= c < width:
            y[:, i, j] += x[:, r, c].astype(np.float64) @ kernel[a, b]
    return y


@pytest.mark.parametrize("size", range(1, 12))
@pytest.mark.parametrize("kernel", [1, 2, 3, 5, 7])
@pytest.mark.parametrize("stride", [1, 2, 3])
def test_tap_window_keeps_exactly_the_taps_that_reach_the_input(size, kernel, stride):
    outputs = -(-size // stride)
    before = max((outputs - 1) * stride + kernel - size, 0) // 2
    reaching = [
        t
        for t in range(kernel)
        if any(0 <= o * stride + t - before < size for o in range(outputs))
    ]
    first, stop, pad_before, pad_after = tap_window(size, kernel, stride)
    assert list(range(first, stop)) == reaching
    assert pad_before >= 0 and pad_after >= 0
    # The valid convolution of the kept taps gives the same number of outputs.
    padded = size + pad_before + pad_after
    assert (padded - (stop - first)) // stride + 1 == outputs


# (input height, width), kernel, strides: the local discriminator's last
# layer (one output, a matrix product), cropped convolutions with and
# without padding left, one axis cropped, and whole kernels (Keras' op).
CASES = [
    ((2, 2), (5, 5), (2, 2)),
    ((1, 1), (3, 3), (1, 1)),
    ((3, 3), (5, 5), (2, 2)),
    ((2, 3), (7, 7), (1, 1)),
    ((4, 2), (5, 5), (2, 2)),
    ((1, 6), (3, 3), (1, 2)),
    ((4, 4), (5, 5), (2, 2)),
    ((8, 8), (3, 3), (1, 1)),
]


def pair(input_shape, kernel, strides, seed=0):
    ours = Conv2D(3, kernel, strides=strides, padding="same", use_bias=True)
    plain = keras.layers.Conv2D(
        3, kernel, strides=strides, padding="same", use_bias=True
    )
    for layer in (ours, plain):
        layer.build(input_shape)
    rng = np.random.default_rng(seed)
    weights = [rng.normal(size=w.shape).astype("float32") for w in ours.get_weights()]
    ours.set_weights(weights)
    plain.set_weights(weights)
    return ours, plain


@pytest.mark.parametrize("spatial, kernel, strides", CASES)
def test_values_match_numpy_and_gradients_match_keras(spatial, kernel, strides):
    shape = (4, *spatial, 2)
    x = np.random.default_rng(1).normal(size=shape).astype("float32")
    ours, plain = pair(shape, kernel, strides)
    kernel_value, bias = ours.get_weights()
    expected = numpy_same_conv(x, kernel_value, strides) + bias
    np.testing.assert_allclose(ours(x), expected, rtol=1e-5, atol=1e-5)

    cotangent = np.random.default_rng(2).normal(size=expected.shape).astype("float32")
    gradients = []
    for layer in (ours, plain):
        inputs = tf.constant(x)
        with tf.GradientTape() as tape:
            tape.watch(inputs)
            y = layer(inputs)
        gradients.append(
            tape.gradient(y, [inputs, *layer.trainable_variables], cotangent)
        )
    for got, want in zip(*gradients, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    # The taps that meet only zero padding get exactly zero gradient.
    (top, bottom, *_), (left, right, *_) = (
        tap_window(n, k, s) for n, k, s in zip(spatial, kernel, strides, strict=True)
    )
    unused = np.ones(kernel, bool)
    unused[top:bottom, left:right] = False
    assert np.all(np.asarray(gradients[0][1])[unused] == 0.0)


def op_types(layer, shape):
    graph = tf.function(layer).get_concrete_function(tf.TensorSpec(shape, "float32"))
    return {op.type for op in graph.graph.get_operations()}


def test_one_output_seeing_the_whole_input_is_a_matrix_product():
    layer = Conv2D(8, 5, strides=2, padding="same", use_bias=False)
    ops_seen = op_types(layer, (3, 2, 2, 4))
    assert "MatMul" in ops_seen and "Conv2D" not in ops_seen
    assert layer.kernel.shape == (5, 5, 4, 8)  # the kernel keeps its shape


@pytest.mark.parametrize(
    "kwargs, shape",
    [
        (dict(padding="valid"), (2, 6, 6, 2)),  # valid padding
        (dict(padding="same", dilation_rate=2), (2, 3, 3, 2)),  # dilation
        (dict(padding="same"), (2, 8, 8, 2)),  # every tap reaches the input
    ],
)
def test_falls_back_to_keras_convolution(kwargs, shape):
    ours = Conv2D(4, 5, **kwargs)
    assert ours._windows(keras.KerasTensor(shape)) is None
    x = np.random.default_rng(3).normal(size=shape).astype("float32")
    plain = keras.layers.Conv2D(4, 5, **kwargs)
    ours.build(shape)
    plain.build(shape)
    plain.set_weights(ours.get_weights())
    np.testing.assert_array_equal(ours(x), plain(x))


def test_an_input_of_unknown_size_uses_keras_convolution():
    layer = Conv2D(4, 5, strides=2, padding="same")
    assert layer._windows(keras.KerasTensor((None, None, None, 2))) is None
    ops_seen = op_types(layer, (None, None, None, 2))
    assert "Conv2D" in ops_seen


def test_weight_files_interchangeable_with_keras_layer(tmp_path):
    shape = (2, 2, 2, 3)
    ours, plain = pair(shape, (5, 5), (2, 2))
    model = keras.Sequential([keras.Input(shape[1:]), ours])
    model.save_weights(tmp_path / "ours.weights.h5")
    other = keras.Sequential(
        [keras.Input(shape[1:]), keras.layers.Conv2D(3, 5, strides=2, padding="same")]
    )
    other.load_weights(tmp_path / "ours.weights.h5")
    for a, b in zip(other.get_weights(), model.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    restored = keras.Sequential(
        [keras.Input(shape[1:]), Conv2D(3, 5, strides=2, padding="same")]
    )
    other.save_weights(tmp_path / "keras.weights.h5")
    restored.load_weights(tmp_path / "keras.weights.h5")
    for a, b in zip(restored.get_weights(), model.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


def test_serialises(tmp_path):
    layer = Conv2D(3, 5, strides=2, padding="same", name="c")
    model = keras.Sequential([keras.Input((2, 2, 1)), layer])
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    assert type(loaded.layers[0]) is Conv2D
    x = np.ones((1, 2, 2, 1), "float32")
    np.testing.assert_array_equal(loaded(x), model(x))


# === On JAX ===
# Keras picks its backend once per process: `jax_main` runs in a JAX
# subprocess on the cases above and its values and gradients are checked
# against Keras' layer on TensorFlow here.


def case_arrays(index):
    spatial, kernel, strides = CASES[index]
    shape = (4, *spatial, 2)
    rng = np.random.default_rng(10 + index)
    x = rng.normal(size=shape).astype("float32")
    weights = [
        rng.normal(size=(*kernel, 2, 3)).astype("float32"),
        rng.normal(size=3).astype("float32"),
    ]
    out = [-(-n // s) for n, s in zip(spatial, strides, strict=True)]
    cotangent = rng.normal(size=(4, *out, 3)).astype("float32")
    return x, weights, cotangent


def jax_main(directory):
    import jax

    assert keras.backend.backend() == "jax", keras.backend.backend()
    results = {}
    for index, (_, kernel, strides) in enumerate(CASES):
        x, weights, cotangent = case_arrays(index)
        layer = Conv2D(3, kernel, strides=strides, padding="same")
        layer.build(x.shape)
        layer.set_weights(weights)

        def loss(x, kernel_value, bias, layer=layer, cotangent=cotangent):
            y, _ = layer.stateless_call([kernel_value, bias], [], x)
            return (y * cotangent).sum()

        grads = jax.grad(loss, argnums=(0, 1, 2))(x, *weights)
        results.update(
            {
                f"y{index}": np.asarray(layer(x)),
                **{f"g{index}_{i}": np.asarray(g) for i, g in enumerate(grads)},
            }
        )
    np.savez(f"{directory}/jax.npz", **results)


@pytest.mark.slow
def test_values_and_gradients_on_jax_match_keras_on_tensorflow(tmp_path):
    import os
    import pathlib
    import subprocess
    import sys

    pytest.importorskip("jax")
    tests = pathlib.Path(__file__).parent
    code = (
        f"import sys; sys.path.insert(0, {str(tests)!r}); "
        f"import test_conv2d; test_conv2d.jax_main({str(tmp_path)!r})"
    )
    env = {**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu"}
    proc = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    on_jax = np.load(tmp_path / "jax.npz")
    for index, (_, kernel, strides) in enumerate(CASES):
        x, weights, cotangent = case_arrays(index)
        plain = keras.layers.Conv2D(3, kernel, strides=strides, padding="same")
        plain.build(x.shape)
        plain.set_weights(weights)
        inputs = tf.constant(x)
        with tf.GradientTape() as tape:
            tape.watch(inputs)
            y = plain(inputs)
        grads = tape.gradient(y, [inputs, *plain.trainable_variables], cotangent)
        np.testing.assert_allclose(on_jax[f"y{index}"], y, rtol=1e-5, atol=1e-5)
        for i, g in enumerate(grads):
            np.testing.assert_allclose(on_jax[f"g{index}_{i}"], g, rtol=1e-5, atol=1e-5)
