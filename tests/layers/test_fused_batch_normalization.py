"""The package's `BatchNormalization` (fused when training on TensorFlow) against a NumPy batch norm, against Keras' own
layer (values, gradients, moving statistics), and where it falls back to
Keras' ops."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from cram_keras.layers.batch_normalization import (
    BatchNormalization as FusedBatchNormalization,
)


def numpy_batch_norm(x, gamma, beta, epsilon):
    """Training-mode batch norm over every axis but the last; the output and
    the batch mean and (uncorrected) variance."""
    axes = tuple(range(x.ndim - 1))
    mean = x.astype(np.float64).mean(axis=axes)
    variance = x.astype(np.float64).var(axis=axes)
    y = (x - mean) / np.sqrt(variance + epsilon) * gamma + beta
    return y, mean, variance


def pair(shape, **kwargs):
    """A fused layer and a Keras one, built alike with the same weights
    (random gamma, beta and moving statistics)."""
    rng = np.random.default_rng(0)
    fused = FusedBatchNormalization(**kwargs)
    plain = keras.layers.BatchNormalization(**kwargs)
    for layer in (fused, plain):
        layer.build(shape)
    weights = [
        rng.uniform(0.5, 2.0, w.shape).astype("float32") for w in fused.get_weights()
    ]
    fused.set_weights(weights)
    plain.set_weights(weights)
    return fused, plain


def fused_ops_in(layer, x, training):
    """The op types of `layer(x, training)` traced as a graph."""
    graph = tf.function(lambda t: layer(t, training=training)).get_concrete_function(
        tf.TensorSpec(x.shape, x.dtype)
    )
    return {op.type for op in graph.graph.get_operations()}


@pytest.mark.parametrize("shape", [(16, 5), (8, 6, 7, 4)])
def test_training_matches_numpy_and_moving_statistics(shape):
    x = np.random.default_rng(1).normal(2.0, 3.0, shape).astype("float32")
    layer, _ = pair(shape, momentum=0.9, epsilon=1e-3)
    gamma, beta, moving_mean, moving_variance = layer.get_weights()
    y = layer(x, training=True)
    expected, mean, variance = numpy_batch_norm(x, gamma, beta, 1e-3)
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(
        layer.moving_mean, 0.9 * moving_mean + 0.1 * mean, rtol=1e-5
    )
    np.testing.assert_allclose(
        layer.moving_variance, 0.9 * moving_variance + 0.1 * variance, rtol=1e-5
    )
    assert "FusedBatchNormV3" in fused_ops_in(layer, x, training=True)


# (1, 5): one example, where the op's n / (n - 1) correction must not divide
# by zero.
@pytest.mark.parametrize("shape", [(16, 5), (8, 6, 7, 4), (1, 5)])
@pytest.mark.parametrize("center,scale", [(True, True), (False, False)])
def test_values_and_gradients_match_keras(shape, center, scale):
    x = tf.constant(np.random.default_rng(2).normal(0, 2, shape).astype("float32"))
    upstream = tf.constant(np.random.default_rng(3).normal(size=shape), "float32")
    results = []
    for layer in pair(shape, center=center, scale=scale):
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = tf.reduce_sum(layer(x, training=True) * upstream)
        sources = [x] + [v.value for v in layer.trainable_variables]
        results.append(
            [np.asarray(g) for g in tape.gradient(loss, sources)]
            + [np.asarray(layer.moving_mean), np.asarray(layer.moving_variance)]
        )
    for fused_value, keras_value in zip(*results, strict=True):
        np.testing.assert_allclose(fused_value, keras_value, rtol=2e-4, atol=2e-5)


def test_inference_is_keras_layer():
    shape = (4, 3, 3, 2)
    x = np.random.default_rng(4).normal(size=shape).astype("float32")
    fused, plain = pair(shape)
    np.testing.assert_array_equal(fused(x, training=False), plain(x, training=False))
    assert "FusedBatchNormV3" not in fused_ops_in(fused, x, training=False)


@pytest.mark.parametrize(
    "case",
    [
        "float16 policy",
        "bfloat16 variables",
        "rank 3",
        "channels first",
        "tiny epsilon",
        "synchronized",
    ],
)
def test_falls_back_to_keras_ops(case):
    shape, kwargs = (4, 3, 3, 2), {}
    if case == "float16 policy":
        kwargs["dtype"] = "mixed_float16"
    elif case == "bfloat16 variables":
        kwargs["dtype"] = "bfloat16"
    elif case == "rank 3":
        shape = (4, 5, 2)
    elif case == "channels first":
        kwargs["axis"] = 1
    elif case == "tiny epsilon":
        kwargs["epsilon"] = 1e-6
    else:
        kwargs["synchronized"] = True
    x = np.random.default_rng(5).normal(size=shape).astype("float32")
    fused, plain = pair(shape, **kwargs)
    np.testing.assert_allclose(
        np.asarray(fused(x, training=True), "float32"),
        np.asarray(plain(x, training=True), "float32"),
        rtol=1e-6,
        atol=1e-6,
    )
    assert "FusedBatchNormV3" not in fused_ops_in(fused, x, training=True)


@pytest.mark.parametrize("shape", [(64, 5), (8, 6, 7, 4)])
def test_mixed_bfloat16_fuses_with_float32_statistics(shape):
    """Under mixed_bfloat16 the op takes and returns bfloat16, as Keras'
    layer does; the moments are those of the bfloat16 inputs, in float32."""
    x = tf.constant(np.random.default_rng(6).normal(1, 2, shape).astype("float32"))
    upstream = tf.constant(np.random.default_rng(7).normal(size=shape), "float32")
    fused, plain = pair(shape, dtype="mixed_bfloat16", momentum=0.5)
    gamma, beta, moving_mean, moving_variance = fused.get_weights()
    results = []
    for layer in (fused, plain):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x, training=True)
            loss = tf.reduce_sum(tf.cast(y, "float32") * upstream)
        assert y.dtype == tf.bfloat16
        sources = [x] + [v.value for v in layer.trainable_variables]
        results.append(
            [np.asarray(tf.cast(y, "float32"))]
            + [np.asarray(g) for g in tape.gradient(loss, sources)]
            + [np.asarray(layer.moving_mean), np.asarray(layer.moving_variance)]
        )
    # Against NumPy on the bfloat16-rounded inputs.
    rounded = np.asarray(tf.cast(tf.cast(x, "bfloat16"), "float32"))
    expected, mean, variance = numpy_batch_norm(rounded, gamma, beta, 1e-3)
    np.testing.assert_allclose(results[0][0], expected, rtol=1e-2, atol=2e-2)
    np.testing.assert_allclose(
        results[0][-2], 0.5 * moving_mean + 0.5 * mean, rtol=1e-5, atol=1e-6
    )
    np.testing.assert_allclose(
        results[0][-1], 0.5 * moving_variance + 0.5 * variance, rtol=1e-5
    )
    # Against Keras' layer: outputs and gradients to bfloat16 rounding, the
    # statistics (float32 on both sides) to float32 round-off.
    for fused_value, keras_value in zip(results[0][:-2], results[1][:-2], strict=True):
        scale = np.abs(keras_value).max()
        np.testing.assert_allclose(fused_value, keras_value, atol=2e-2 * scale)
    for fused_value, keras_value in zip(results[0][-2:], results[1][-2:], strict=True):
        np.testing.assert_allclose(fused_value, keras_value, rtol=1e-5, atol=1e-6)
    assert "FusedBatchNormV3" in fused_ops_in(fused, x, training=True)


def test_serialises_and_keeps_weights(tmp_path):
    inputs = keras.Input((4, 4, 3))
    model = keras.Model(inputs, FusedBatchNormalization(momentum=0.8)(inputs))
    path = str(tmp_path / "bn.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    layer = loaded.layers[-1]
    assert type(layer) is FusedBatchNormalization
    assert layer.momentum == 0.8
    for a, b in zip(model.get_weights(), loaded.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


def test_weight_files_interchangeable_with_keras_layer(tmp_path):
    """Keras files a layer's weights under its class name: files written with
    Keras' layer load into the package's and back."""

    def model(normalization):
        return keras.Sequential(
            [keras.Input((4, 4, 3)), keras.layers.Conv2D(2, 3), normalization()]
        )

    rng = np.random.default_rng(6)
    for source, target in [
        (keras.layers.BatchNormalization, FusedBatchNormalization),
        (FusedBatchNormalization, keras.layers.BatchNormalization),
    ]:
        written = model(source)
        weights = [
            rng.uniform(0.5, 2, w.shape).astype("float32")
            for w in written.get_weights()
        ]
        written.set_weights(weights)
        path = str(tmp_path / f"{source.__module__}.weights.h5")
        written.save_weights(path)
        read = model(target)
        read.load_weights(path)
        for a, b in zip(weights, read.get_weights(), strict=True):
            np.testing.assert_array_equal(a, b)
