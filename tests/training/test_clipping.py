"""Two-stage gradient clipping, checked against a NumPy reference, on one
device and under tf.distribute with two replicas."""

import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

from cram_keras.training.clipping import clip_gradients_two_stage


def numpy_two_stage(grads, value, norm):
    clipped = [np.clip(g, -value, value) for g in grads]
    total = np.sqrt(sum(float(np.sum(g.astype(np.float64) ** 2)) for g in clipped))
    scale = norm / max(total, norm)
    return [g * scale for g in clipped]


def test_elementwise_then_global_norm_matches_numpy():
    rng = np.random.default_rng(0)
    grads = [
        rng.normal(0, 3, size=(4, 5)).astype("float32"),
        rng.normal(0, 3, size=(7,)).astype("float32"),
    ]
    ours = clip_gradients_two_stage(
        [keras.ops.convert_to_tensor(g) for g in grads], 1.0, 2.0
    )
    ref = numpy_two_stage(grads, 1.0, 2.0)
    for a, b in zip(ours, ref, strict=True):
        np.testing.assert_allclose(keras.ops.convert_to_numpy(a), b, rtol=1e-6)
    total = np.sqrt(sum(np.sum(keras.ops.convert_to_numpy(g) ** 2) for g in ours))
    assert total == pytest.approx(2.0, rel=1e-6)


def test_small_gradients_untouched_and_none_passed_through():
    g = np.array([0.1, -0.2, 0.3], "float32")
    out = clip_gradients_two_stage([keras.ops.convert_to_tensor(g), None], 1.0, 5.0)
    assert out[1] is None
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(out[0]), g)


def test_elementwise_stage_clips_each_entry():
    g = np.array([3.0, -4.0, 0.5], "float32")
    out = clip_gradients_two_stage([keras.ops.convert_to_tensor(g)], 1.0, None)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(out[0]), [1.0, -1.0, 0.5])


@pytest.mark.parametrize("kwargs", [dict(clip_value=0.0), dict(clip_norm=-1.0)])
def test_bad_thresholds_rejected(kwargs):
    name = next(iter(kwargs))
    with pytest.raises(ValueError, match=f"{name}="):
        clip_gradients_two_stage([], **kwargs)


def test_compile_rejects_optimizer_that_clips_too():
    from cram_keras.training.clipping import TwoStageClipModel

    class Tiny(TwoStageClipModel):
        def __init__(self):
            super().__init__()
            self.dense = keras.layers.Dense(1)

        def call(self, x):
            return self.dense(x)

    with pytest.raises(ValueError, match="clipvalue"):
        Tiny().compile(optimizer=keras.optimizers.SGD(clipvalue=1.0), loss="mse")


# The distributed check runs in a fresh interpreter: the CPU must be split into
# two logical devices before TensorFlow initialises.
DISTRIBUTED_SCRIPT = textwrap.dedent(
    """
    import os, json
    os.environ["KERAS_BACKEND"] = "tensorflow"
    import numpy as np, tensorflow as tf, keras
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from cram_keras.training.clipping import TwoStageClipModel

    class Tiny(TwoStageClipModel):
        def __init__(self):
            super().__init__()
            self.dense = keras.layers.Dense(3, kernel_initializer="ones")
        def call(self, x):
            return self.dense(x)

    rng = np.random.default_rng(0)
    x = rng.normal(0, 10, size=(8, 4)).astype("float32")
    # Targets chosen so that the two halves of the batch pull in different
    # directions: per-replica clipping would differ from global clipping.
    y = np.concatenate([np.full((4, 3), 50.0), np.full((4, 3), -5.0)]).astype("float32")

    def one_step(strategy):
        with strategy.scope():
            model = Tiny()
            model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse",
                          gradient_clip_value=1.0, gradient_clip_norm=0.5,
                          jit_compile=False)
            model(x[:1])
        ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(8)
        model.fit(ds, epochs=1, verbose=0, shuffle=False)
        return [np.asarray(v) for v in model.dense.weights]

    mirrored = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    assert mirrored.num_replicas_in_sync == 2
    single = one_step(tf.distribute.get_strategy())
    multi = one_step(mirrored)
    print(json.dumps({"single": [w.tolist() for w in single],
                      "multi": [w.tolist() for w in multi]}))
    """
)


@pytest.mark.slow
def test_two_replicas_clip_the_global_gradient():
    env = dict(os.environ, KERAS_BACKEND="tensorflow", TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.run(
        [sys.executable, "-c", DISTRIBUTED_SCRIPT],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    import json

    result = json.loads(proc.stdout.strip().splitlines()[-1])
    # Independent reference: the same SGD step computed in NumPy.
    rng = np.random.default_rng(0)
    x = rng.normal(0, 10, size=(8, 4))
    y = np.concatenate([np.full((4, 3), 50.0), np.full((4, 3), -5.0)])
    w, b = np.ones((4, 3)), np.zeros(3)
    err = x @ w + b - y
    gw = 2 * x.T @ err / err.size
    gb = 2 * err.sum(axis=0) / err.size
    gw, gb = numpy_two_stage([gw, gb], 1.0, 0.5)
    expected = [w - 0.1 * gw, b - 0.1 * gb]
    for got_single, got_multi, ref in zip(
        result["single"], result["multi"], expected, strict=True
    ):
        np.testing.assert_allclose(got_single, ref, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(got_multi, ref, rtol=1e-5, atol=1e-6)
