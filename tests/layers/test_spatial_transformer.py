"""Tests of the SpatialTransformer layer (runs on TensorFlow and, through
tests/test_jax_backend.py, on JAX). Serialisation, `.keras` saving, a
training step and mixed-precision dtypes: tests/layers/test_public_layers.py."""

import os

import keras
import numpy as np
import pytest
from testing import (
    backend,
    reference_affine_grid,
    reference_bilinear_sample,
    to_numpy,
    vjp,
)

from cram_keras.layers import SpatialTransformer

# Every test runs with the keras.ops sampler and the compiled kernel.
pytestmark = pytest.mark.usefixtures("sampler_kernel")

IDENTITY = {
    "affine": [1.0, 0.0, 0.0, 0.0, 1.0, 0.0],
    "attention": [1.0, 0.0, 0.0],
    "anisotropic": [1.0, 1.0, 0.0, 0.0],
}


def identity_params(transform, batch):
    return np.tile(np.array(IDENTITY[transform], np.float32), (batch, 1))


def reference_theta(transform, params):
    """The 2x3 matrices of the docstring, built independently of the layer."""
    params = np.asarray(params, np.float64)
    theta = np.zeros((len(params), 2, 3))
    for b, p in enumerate(params):
        if transform == "affine":
            theta[b] = p.reshape(2, 3)
        elif transform == "attention":
            s, tx, ty = p
            theta[b] = [[s, 0, tx], [0, s, ty]]
        else:
            sx, sy, tx, ty = p
            theta[b] = [[sx, 0, tx], [0, sy, ty]]
    return theta


# Shared shapes (as in tests/ops): on JAX, eager ops compile once per shape.
IN_SIZE, OUT_SIZE = (5, 6), (4, 5)


def random_images(rng, batch=2, size=IN_SIZE, channels=3):
    return rng.random((batch, *size, channels)).astype(np.float32)


def random_params(transform, batch, rng):
    jitter = rng.uniform(-0.3, 0.3, (batch, len(IDENTITY[transform])))
    return (identity_params(transform, batch) * 0.8 + jitter).astype(np.float32)


def reference(layer_kwargs, transform, images, params, out_size):
    grid = reference_affine_grid(
        reference_theta(transform, params),
        *out_size,
        layer_kwargs.get("align_corners", False),
    )
    return reference_bilinear_sample(
        images,
        grid,
        layer_kwargs.get("padding", "zeros"),
        layer_kwargs.get("align_corners", False),
    )


def test_backend_matches_environment():
    assert backend() == os.environ["KERAS_BACKEND"]


# === Values ===


@pytest.mark.parametrize("transform", list(IDENTITY))
@pytest.mark.parametrize("align_corners", [False, True])
@pytest.mark.parametrize("size", [IN_SIZE, (7, 9), (1, 4), (3, 1)])
def test_identity_params_reproduce_input_exactly(transform, align_corners, size):
    images = random_images(np.random.default_rng(0), size=size)
    layer = SpatialTransformer(transform, output_size=size, align_corners=align_corners)
    output = to_numpy(layer([images, identity_params(transform, 2)]))
    np.testing.assert_array_equal(output, images)
    same = SpatialTransformer(transform, downsample_factor=1)
    output = to_numpy(same([images, identity_params(transform, 2)]))
    np.testing.assert_array_equal(output, images)


@pytest.mark.parametrize("transform", list(IDENTITY))
@pytest.mark.parametrize(
    "layer_kwargs",
    [
        {},
        {"padding": "border"},
        {"align_corners": True},
        {"padding": "border", "align_corners": True},
    ],
)
def test_transforms_match_reference(transform, layer_kwargs):
    rng = np.random.default_rng(1)
    images = random_images(rng)
    params = random_params(transform, 2, rng)
    layer = SpatialTransformer(transform, output_size=OUT_SIZE, **layer_kwargs)
    output = to_numpy(layer([images, params]))
    expected = reference(layer_kwargs, transform, images, params, OUT_SIZE)
    np.testing.assert_allclose(output, expected, atol=2e-6)


def test_integer_translation_is_a_shift():
    """attention (1, 2k/W, 2m/H) samples pixel (i + m, j + k), zeros outside."""
    images = random_images(np.random.default_rng(2))
    k, m = 2, -1
    params = np.tile(np.array([1.0, 2 * k / 6, 2 * m / 5], np.float32), (2, 1))
    output = to_numpy(SpatialTransformer("attention", IN_SIZE)([images, params]))
    expected = np.zeros_like(images)
    expected[:, 1:, :4] = images[:, :4, 2:]
    np.testing.assert_allclose(output, expected, atol=1e-6)


@pytest.mark.parametrize(
    "factor, in_size, out_size",
    [(2, (100, 100), (50, 50)), (3, (100, 100), (33, 33)), (1.5, (9, 10), (6, 6))],
)
def test_downsample_factor_sets_the_output_size(factor, in_size, out_size):
    layer = SpatialTransformer(downsample_factor=factor)
    shape = layer.compute_output_shape([(None, *in_size, 1), (None, 6)])
    assert shape == (None, *out_size, 1)


def test_downsample_factor_output():
    images = random_images(np.random.default_rng(11))
    # int(5 / 1.2) = 4, int(6 / 1.2) = 5.
    output = SpatialTransformer(downsample_factor=1.2)(
        [images, identity_params("affine", 2)]
    )
    assert tuple(output.shape) == (2, *OUT_SIZE, 3)
    grid = reference_affine_grid(
        reference_theta("affine", [IDENTITY["affine"]] * 2), *OUT_SIZE, False
    )
    expected = reference_bilinear_sample(images, grid, "zeros", False)
    np.testing.assert_allclose(to_numpy(output), expected, atol=2e-6)


# === Gradients and robustness ===


@pytest.mark.parametrize("transform", list(IDENTITY))
def test_params_gradient_matches_finite_differences_of_the_reference(transform):
    rng = np.random.default_rng(3)
    images = random_images(rng)
    params = random_params(transform, 2, rng)
    cotangent = rng.standard_normal((2, *OUT_SIZE, 3)).astype(np.float32)
    layer = SpatialTransformer(transform, output_size=OUT_SIZE, padding="border")
    _, (grad,) = vjp(lambda p: layer([images, p]), [params], cotangent)

    def loss(p):
        return np.sum(
            reference({"padding": "border"}, transform, images, p, OUT_SIZE) * cotangent
        )

    eps = 1e-6
    numeric = np.zeros(params.shape)
    for index in np.ndindex(*params.shape):
        step = np.zeros(params.shape)
        step[index] = eps
        numeric[index] = (loss(params + step) - loss(params - step)) / (2 * eps)
    np.testing.assert_allclose(grad, numeric, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("transform", list(IDENTITY))
def test_bad_params_give_finite_outputs_and_gradients(transform):
    rng = np.random.default_rng(4)
    images = random_images(rng)
    clean = random_params(transform, 2, rng)
    layer = SpatialTransformer(transform, output_size=OUT_SIZE)
    for k, bad in enumerate([np.nan, np.inf, -np.inf, 1e30, 3e38]):
        params = clean.copy()
        params[0] = bad  # all parameters
        params[1, k % params.shape[1]] = bad  # one parameter
        output, grads = vjp(
            lambda i, p: layer([i, p]), [images, params], np.ones((2, *OUT_SIZE, 3))
        )
        assert np.all(np.isfinite(output))
        assert all(np.all(np.isfinite(g)) for g in grads)


# === Keras integration ===


def functional_model():
    images = keras.Input((*IN_SIZE, 3), name="images")
    params = keras.Input((3,), name="params")
    glimpse = SpatialTransformer("attention", output_size=OUT_SIZE, name="st")(
        [images, params]
    )
    return keras.Model([images, params], glimpse)


def test_layer_built_on_one_batch_size_serves_another():
    rng = np.random.default_rng(7)
    layer = SpatialTransformer("affine", output_size=OUT_SIZE)
    for batch in (2, 5):
        images = random_images(rng, batch=batch)
        params = random_params("affine", batch, rng)
        output = to_numpy(layer([images, params]))
        expected = reference({}, "affine", images, params, OUT_SIZE)
        np.testing.assert_allclose(output, expected, atol=2e-6)
    model = functional_model()
    for batch in (2, 5):
        inputs = [
            random_images(rng, batch=batch),
            random_params("attention", batch, rng),
        ]
        output = model.predict(inputs, batch_size=batch, verbose=0)
        expected = reference({}, "attention", *inputs, OUT_SIZE)
        np.testing.assert_allclose(output, expected, atol=2e-6)


class GlimpseModel(keras.Model):
    """Subclassed model: a localisation head starting at the identity."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.flatten = keras.layers.Flatten()
        self.localisation = keras.layers.Dense(
            3,
            kernel_initializer="zeros",
            bias_initializer=keras.initializers.Constant(IDENTITY["attention"]),
        )
        self.transformer = SpatialTransformer("attention", output_size=IN_SIZE)

    def call(self, images):
        return self.transformer([images, self.localisation(self.flatten(images))])


def test_subclassed_model_trains_through_the_transformer():
    rng = np.random.default_rng(8)
    images = random_images(rng)
    model = GlimpseModel()
    np.testing.assert_array_equal(to_numpy(model(images)), images)
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    # Target: a zoomed-in glimpse; only the localisation head can move.
    target = reference({}, "attention", images, [[0.5, 0.1, 0.0]] * 2, IN_SIZE)
    kernel_before = to_numpy(model.localisation.kernel).copy()
    model.fit(images, target, epochs=1, batch_size=2, verbose=0)
    assert not np.allclose(to_numpy(model.localisation.kernel), kernel_before)


@pytest.mark.skipif(
    backend() != "tensorflow", reason="tf.function / XLA are TensorFlow-only"
)
@pytest.mark.parametrize("jit_compile", [False, True])
def test_tf_function_and_xla(jit_compile):
    import tensorflow as tf

    rng = np.random.default_rng(9)
    images = tf.constant(random_images(rng))
    params = tf.constant(random_params("affine", 2, rng))
    layer = SpatialTransformer("affine", output_size=OUT_SIZE, padding="border")

    def step(images, params):
        with tf.GradientTape() as tape:
            tape.watch(params)
            output = layer([images, params])
        return output, tape.gradient(output, params)

    compiled = tf.function(step, jit_compile=jit_compile)
    for got, want in zip(compiled(images, params), step(images, params), strict=True):
        np.testing.assert_allclose(got.numpy(), want.numpy(), atol=1e-5)


@pytest.mark.skipif(backend() != "jax", reason="jax.jit is JAX-only")
def test_jax_jit():
    import jax

    rng = np.random.default_rng(10)
    images = random_images(rng)
    params = random_params("affine", 2, rng)
    layer = SpatialTransformer("affine", output_size=OUT_SIZE)
    expected = to_numpy(layer([images, params]))
    np.testing.assert_allclose(
        np.asarray(jax.jit(lambda i, p: layer([i, p]))(images, params)),
        expected,
        atol=1e-6,
    )


@pytest.fixture
def mixed_precision():
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_float16")
    yield
    keras.config.set_dtype_policy(previous)


def test_mixed_precision_keeps_coordinates_in_float32(mixed_precision):
    """A 1024-wide sawtooth (0, 1, 0, 1, ...) sampled at scale 1.001: each
    output is |fractional part of x| away from a pixel centre, so an error in
    x shows up one for one. In float16, 1.001 rounds to 1.00098 (x off by up
    to 0.02 px) and x near 1000 has a spacing of 0.5 px."""
    width = 1024
    images = np.tile(np.arange(width) % 2, (1, 1, 1)).reshape(1, 1, width, 1)
    images = images.astype(np.float32)
    params = np.array([[1.001, 1.0, 0.0, 0.0]], np.float32)
    layer = SpatialTransformer("anisotropic", output_size=(1, width))
    output = layer([images, params])
    assert keras.backend.standardize_dtype(output.dtype) == "float16"
    assert layer.compute_dtype == "float16"
    expected = reference({}, "anisotropic", images, params, (1, width))
    np.testing.assert_allclose(to_numpy(output).astype(np.float32), expected, atol=2e-3)


@pytest.mark.parametrize("transform", list(IDENTITY))
def test_mixed_precision_outputs_the_compute_dtype(mixed_precision, transform):
    rng = np.random.default_rng(12)
    images = random_images(rng)
    params = random_params(transform, 2, rng)
    output = SpatialTransformer(transform, output_size=OUT_SIZE)([images, params])
    assert keras.backend.standardize_dtype(output.dtype) == "float16"
    expected = reference({}, transform, images, params, OUT_SIZE)
    np.testing.assert_allclose(to_numpy(output).astype(np.float32), expected, atol=2e-3)


# === Input validation ===

IMAGES = np.zeros((2, 6, 6, 1), np.float32)  # only reaches the checks

BAD_LAYERS = {
    "transform": (
        {"transform": "rotation", "output_size": (2, 2)},
        r"`transform` must be one of \('affine', 'attention', 'anisotropic'\)\. "
        r"Received: transform='rotation'",
    ),
    "both sizes": (
        {"output_size": (2, 2), "downsample_factor": 2},
        r"Pass exactly one of `output_size` and `downsample_factor`\. "
        r"Received: output_size=\(2, 2\), downsample_factor=2",
    ),
    "no size": (
        {},
        r"Pass exactly one of `output_size` and `downsample_factor`\. "
        r"Received: output_size=None, downsample_factor=None",
    ),
    "output_size": (
        {"output_size": (2, -1)},
        r"`output_size` must be a tuple of two positive ints \(height, width\)\. "
        r"Received: output_size=\(2, -1\)",
    ),
    "downsample_factor": (
        {"downsample_factor": 0},
        r"`downsample_factor` must be a positive number\. "
        r"Received: downsample_factor=0",
    ),
    "padding": (
        {"output_size": (2, 2), "padding": "reflect"},
        r"`padding` must be one of \('zeros', 'border'\)\. Received: padding='reflect'",
    ),
    "align_corners": (
        {"output_size": (2, 2), "align_corners": 1},
        r"`align_corners` must be a bool\. Received: align_corners=1",
    ),
}


@pytest.mark.parametrize("case", list(BAD_LAYERS))
def test_bad_constructor_arguments_raise(case):
    kwargs, match = BAD_LAYERS[case]
    with pytest.raises(ValueError, match=match):
        SpatialTransformer(**kwargs)


BAD_CALLS = {
    "params width (call)": (
        lambda: SpatialTransformer("attention", (2, 2))(
            [IMAGES, np.zeros((2, 6), np.float32)]
        ),
        r"`params` must have shape \(batch, 3\) for transform='attention'\. "
        r"Received: params\.shape=\(2, 6\)",
    ),
    "params width (build)": (
        lambda: SpatialTransformer("affine", (2, 2))(
            [keras.Input((6, 6, 1)), keras.Input((4,))]
        ),
        r"`params` must have shape \(batch, 6\) for transform='affine'\. "
        r"Received: params\.shape=\(None, 4\)",
    ),
    "batch mismatch": (
        lambda: SpatialTransformer("affine", (2, 2))(
            [IMAGES, np.zeros((3, 6), np.float32)]
        ),
        r"`images` and `params` must have the same batch size\.",
    ),
    "images rank": (
        lambda: SpatialTransformer("affine", (2, 2))(
            [np.zeros((6, 6, 1), np.float32), np.zeros((6, 6), np.float32)]
        ),
        r"`images` must be a 4D tensor .*Received: images\.shape=\(6, 6, 1\)",
    ),
    "integer images": (
        lambda: SpatialTransformer("affine", (2, 2))(
            [IMAGES.astype(np.int32), identity_params("affine", 2)]
        ),
        r"`images` must be a floating-point tensor.*Received: images\.dtype=int32",
    ),
    "images without height": (
        lambda: SpatialTransformer("affine", (2, 2))(
            [IMAGES[:, :0], identity_params("affine", 2)]
        ),
        r"`images` must have a height, width and channels of at least 1: .*"
        r"Received: images\.shape=\(2, 0, 6, 1\)",
    ),
    "images without channels (build)": (
        lambda: SpatialTransformer("attention", (2, 2))(
            [keras.Input((6, 6, 0)), keras.Input((3,))]
        ),
        r"`images` must have a height, width and channels of at least 1: .*"
        r"Received: images\.shape=\(None, 6, 6, 0\)",
    ),
    "not a list": (
        lambda: SpatialTransformer("affine", (2, 2))(IMAGES),
        r"`SpatialTransformer` expects two inputs \[images, params\]\.",
    ),
    "downsample too large": (
        lambda: SpatialTransformer(downsample_factor=7)(
            [IMAGES, identity_params("affine", 2)]
        ),
        r"`downsample_factor` is too large for 6x6 images: the output would be "
        r"0x0\. Received: downsample_factor=7",
    ),
}


@pytest.mark.parametrize("case", list(BAD_CALLS))
def test_bad_inputs_raise(case):
    call, match = BAD_CALLS[case]
    with pytest.raises(ValueError, match=match):
        call()


@pytest.mark.parametrize("transform", list(IDENTITY))
def test_an_empty_batch_gives_an_empty_output_and_gradients(transform):
    """The layer on a replica's empty batch: an empty output, and gradients
    of the inputs' shapes."""
    layer = SpatialTransformer(transform, (3, 4))
    images = np.zeros((0, 5, 6, 2), np.float32)
    params = identity_params(transform, 0)
    output, grads = vjp(
        lambda x, p: layer([x, p]), (images, params), np.zeros((0, 3, 4, 2), "float32")
    )
    assert output.shape == (0, 3, 4, 2)
    assert [g.shape for g in grads] == [images.shape, params.shape]
