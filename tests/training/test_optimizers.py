"""`FusedAdam` against a NumPy Adam and against Keras' Adam (to a few units
in the last place),
and where it falls back to Keras' updates."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from cram_keras.training.optimizers import FusedAdam

KWARGS = dict(learning_rate=3e-3, beta_1=0.5, beta_2=0.99, epsilon=1e-6)


def numpy_adam(value, gradients, learning_rate, beta_1, beta_2, epsilon):
    """Adam (Kingma & Ba, 2015, with epsilon outside the root, as Keras)."""
    value = value.astype(np.float64)
    m = np.zeros_like(value)
    v = np.zeros_like(value)
    for t, g in enumerate(gradients, start=1):
        m = beta_1 * m + (1 - beta_1) * g
        v = beta_2 * v + (1 - beta_2) * g * g
        step = learning_rate * np.sqrt(1 - beta_2**t) / (1 - beta_1**t)
        value = value - step * m / (np.sqrt(v) + epsilon)
    return value


def trajectory(optimizer, steps=5, compiled=True):
    """Two variables after `steps` updates with fixed gradients."""
    rng = np.random.default_rng(0)
    initial = [rng.normal(size=(3, 4)), rng.normal(size=(5,))]
    variables = [keras.Variable(w.astype("float32")) for w in initial]
    gradients = [
        [rng.normal(size=w.shape).astype("float32") for w in initial]
        for _ in range(steps)
    ]
    optimizer.build(variables)
    apply = optimizer.apply
    if compiled:
        apply = tf.function(lambda grads: optimizer.apply(grads, variables))
    for grads in gradients:
        apply([tf.constant(g) for g in grads]) if compiled else apply(
            [tf.constant(g) for g in grads], variables
        )
    return initial, gradients, [np.asarray(v) for v in variables]


@pytest.mark.parametrize("compiled", [True, False])
def test_matches_numpy_adam(compiled):
    initial, gradients, values = trajectory(FusedAdam(**KWARGS), compiled=compiled)
    for i, value in enumerate(values):
        expected = numpy_adam(initial[i], [g[i] for g in gradients], **KWARGS)
        np.testing.assert_allclose(value, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("compiled", [True, False])
def test_agrees_with_keras_adam_to_round_off(compiled):
    _, _, fused = trajectory(FusedAdam(**KWARGS), compiled=compiled)
    _, _, plain = trajectory(keras.optimizers.Adam(**KWARGS), compiled=compiled)
    for a, b in zip(fused, plain, strict=True):
        np.testing.assert_array_max_ulp(a, b, maxulp=4)


def update_ops(optimizer):
    """The op types of one `apply` traced as a graph."""
    variable = keras.Variable(np.ones((2, 2), "float32"))
    optimizer.build([variable])
    graph = tf.function(
        lambda g: optimizer.apply([g], [variable])
    ).get_concrete_function(tf.TensorSpec((2, 2), "float32"))
    return {op.type for op in graph.graph.get_operations()}


def test_one_fused_op_per_update():
    assert "ResourceApplyAdam" in update_ops(FusedAdam(**KWARGS))
    assert "ResourceApplyAdam" not in update_ops(FusedAdam(amsgrad=True))


def test_keras_updates_under_a_strategy():
    strategy = tf.distribute.OneDeviceStrategy("/cpu:0")
    with strategy.scope():
        variable = keras.Variable(np.ones((2, 2), "float32"))
        optimizer = FusedAdam(**KWARGS)
        optimizer.build([variable])
    gradient = tf.constant(np.full((2, 2), 0.5, "float32"))
    strategy.run(lambda: optimizer.apply([gradient], [variable]))
    expected = numpy_adam(np.ones((2, 2)), [np.full((2, 2), 0.5)], **KWARGS)
    np.testing.assert_allclose(variable, expected, rtol=1e-6)


def test_serialises():
    optimizer = keras.optimizers.deserialize(
        keras.optimizers.serialize(FusedAdam(**KWARGS))
    )
    assert type(optimizer) is FusedAdam
    assert optimizer.beta_1 == 0.5 and optimizer.epsilon == 1e-6
