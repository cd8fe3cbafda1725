"""Two-stage gradient clipping: `clip_gradients_two_stage` and
`TwoStageClipOptimizer` against NumPy references (RMSprop and SGD steps), on
TensorFlow, on JAX (in a subprocess) and under tf.distribute with two
replicas; `.keras` and weights-file round trips with the optimizer state;
argument checks."""

import json
import os
import pathlib
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

from cram_keras.models.rnn_spn import RNNSPN
from cram_keras.training.clipping import (
    TwoStageClipOptimizer,
    clip_gradients_two_stage,
)

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parents[1]


def numpy_two_stage(grads, value, norm):
    clipped = [np.clip(g, -value, value) for g in grads]
    total = np.sqrt(sum(float(np.sum(g.astype(np.float64) ** 2)) for g in clipped))
    scale = norm / max(total, norm)
    return [g * scale for g in clipped]


# === clip_gradients_two_stage ===


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


@pytest.mark.parametrize(
    "kwargs", [dict(clip_value=0.0), dict(clip_norm=-1.0), dict(clip_value="1")]
)
def test_bad_thresholds_rejected(kwargs):
    name = next(iter(kwargs))
    with pytest.raises(ValueError, match=f"{name}="):
        clip_gradients_two_stage([], **kwargs)
    with pytest.raises(ValueError, match=f"{name}="):
        TwoStageClipOptimizer(keras.optimizers.SGD(), **kwargs)


# === TwoStageClipOptimizer: one device, against NumPy ===

# A linear least-squares problem whose gradients exceed both thresholds. The
# RMSprop epsilon is large against the clipped gradients' squares, so that
# the step depends on the clipping scale (with a tiny epsilon RMSprop
# divides most of it out again).
LR, RHO, EPS = 0.1, 0.9, 0.05
CLIP_VALUE, CLIP_NORM = 1.0, 0.5


def linear_problem():
    rng = np.random.default_rng(0)
    x = rng.normal(0, 3, size=(8, 4)).astype("float32")
    y = rng.normal(0, 3, size=(8, 3)).astype("float32")
    w = rng.normal(0, 1, size=(4, 3)).astype("float32")
    b = np.zeros(3, "float32")
    return x, y, w, b


def linear_model(w, b, clip_value=CLIP_VALUE, clip_norm=CLIP_NORM):
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    model.set_weights([w, b])
    model.compile(
        optimizer=TwoStageClipOptimizer(
            keras.optimizers.RMSprop(LR, rho=RHO, epsilon=EPS),
            clip_value=clip_value,
            clip_norm=clip_norm,
        ),
        loss="mse",
        jit_compile=keras.backend.backend() == "jax",
    )
    return model


def mse_gradients(x, y, w, b):
    err = x @ w + b - y
    return 2 * x.T @ err / err.size, 2 * err.sum(axis=0) / err.size


def numpy_rmsprop(x, y, w, b, batch_size, steps, clip=True, velocity=None):
    """`steps` RMSprop steps (Keras' rule: epsilon inside the square root) on
    consecutive batches, gradients clipped in two stages; float64."""
    w, b = w.astype(np.float64), b.astype(np.float64)
    vw, vb = velocity or (np.zeros_like(w), np.zeros_like(b))
    for step in range(steps):
        index = slice(step * batch_size, (step + 1) * batch_size)
        gw, gb = mse_gradients(x[index], y[index], w, b)
        if clip:
            gw, gb = numpy_two_stage([gw, gb], CLIP_VALUE, CLIP_NORM)
        vw = RHO * vw + (1 - RHO) * gw**2
        vb = RHO * vb + (1 - RHO) * gb**2
        w = w - LR * gw / np.sqrt(vw + EPS)
        b = b - LR * gb / np.sqrt(vb + EPS)
    return [w, b], [vw, vb]


def fit_linear(batch_size=4, epochs=1):
    """Two fit steps (batches of 4) of the linear problem; final weights."""
    x, y, w, b = linear_problem()
    model = linear_model(w, b)
    model.fit(x, y, batch_size=batch_size, epochs=epochs, shuffle=False, verbose=0)
    return [keras.ops.convert_to_numpy(v) for v in model.get_weights()]


def test_both_stages_are_active_on_the_linear_problem():
    # Guards the references below: without either stage the step differs.
    x, y, w, b = linear_problem()
    gw, gb = mse_gradients(x[:4], y[:4], w, b)
    assert max(np.abs(gw).max(), np.abs(gb).max()) > CLIP_VALUE
    clipped = [np.clip(g, -CLIP_VALUE, CLIP_VALUE) for g in (gw, gb)]
    assert np.sqrt(sum(np.sum(g**2) for g in clipped)) > CLIP_NORM
    clipped_step, _ = numpy_rmsprop(x, y, w, b, 4, 1)
    plain_step, _ = numpy_rmsprop(x, y, w, b, 4, 1, clip=False)
    assert np.abs(clipped_step[0] - plain_step[0]).max() > 1e-2


def test_fit_steps_match_numpy_rmsprop_with_two_stage_clipping():
    x, y, w, b = linear_problem()
    expected, _ = numpy_rmsprop(x, y, w, b, batch_size=4, steps=2)
    for got, ref in zip(fit_linear(), expected, strict=True):
        np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6)


def test_delegates_learning_rate_and_iterations_to_the_inner_optimizer():
    inner = keras.optimizers.RMSprop(LR)
    optimizer = TwoStageClipOptimizer(inner)
    assert float(keras.ops.convert_to_numpy(optimizer.learning_rate)) == (
        pytest.approx(LR)
    )
    optimizer.learning_rate = 0.25
    assert float(keras.ops.convert_to_numpy(inner.learning_rate)) == 0.25
    variable = keras.Variable(np.ones(3, "float32"))
    optimizer.apply([np.full(3, 10.0, "float32")], [variable])
    assert int(keras.ops.convert_to_numpy(optimizer.iterations)) == 1
    assert optimizer.iterations is inner.iterations
    assert all(any(v is w for w in optimizer.variables) for v in inner.variables)


# === Serialisation and checkpoints ===


def slot_values(optimizer):
    return [keras.ops.convert_to_numpy(v) for v in optimizer.variables]


def test_keras_file_round_trip_restores_the_wrapped_optimizer(tmp_path):
    x, y, w, b = linear_problem()
    model = linear_model(w, b)
    model.fit(x[:4], y[:4], batch_size=4, verbose=0)
    path = str(tmp_path / "linear.keras")
    model.save(path)
    restored = keras.models.load_model(path)
    optimizer = restored.optimizer
    assert isinstance(optimizer, TwoStageClipOptimizer)
    assert isinstance(optimizer.inner_optimizer, keras.optimizers.RMSprop)
    assert (optimizer.clip_value, optimizer.clip_norm) == (CLIP_VALUE, CLIP_NORM)
    assert optimizer.inner_optimizer.rho == pytest.approx(RHO)
    assert optimizer.inner_optimizer.epsilon == pytest.approx(EPS)
    assert int(keras.ops.convert_to_numpy(optimizer.iterations)) == 1
    for got, ref in zip(
        slot_values(optimizer), slot_values(model.optimizer), strict=True
    ):
        np.testing.assert_array_equal(got, ref)
    # The restored model continues exactly as the NumPy reference.
    restored.fit(x[4:], y[4:], batch_size=4, verbose=0)
    expected, _ = numpy_rmsprop(x, y, w, b, batch_size=4, steps=2)
    for got, ref in zip(restored.get_weights(), expected, strict=True):
        np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6)


def test_weights_file_restores_iterations_and_slots(tmp_path):
    # What the experiment runner does: save_weights in the checkpoint, then
    # a fresh model, compile, build the optimizer, load_weights.
    x, y, w, b = linear_problem()
    model = linear_model(w, b)
    model.fit(x[:4], y[:4], batch_size=4, verbose=0)
    path = str(tmp_path / "linear.weights.h5")
    model.save_weights(path)
    fresh = linear_model(np.zeros_like(w), np.zeros_like(b))
    fresh.optimizer.build(fresh.trainable_variables)
    fresh.load_weights(path)
    assert int(keras.ops.convert_to_numpy(fresh.optimizer.iterations)) == 1
    _, velocity = numpy_rmsprop(x, y, w, b, batch_size=4, steps=1)
    inner = fresh.optimizer.inner_optimizer
    velocities = [v for v in inner.variables if "velocity" in v.name]
    for got, ref in zip(velocities, velocity, strict=True):
        np.testing.assert_allclose(keras.ops.convert_to_numpy(got), ref, rtol=1e-5)
    fresh.fit(x[4:], y[4:], batch_size=4, verbose=0)
    expected, _ = numpy_rmsprop(x, y, w, b, batch_size=4, steps=2)
    for got, ref in zip(fresh.get_weights(), expected, strict=True):
        np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6)


def test_config_round_trip():
    optimizer = TwoStageClipOptimizer(
        keras.optimizers.RMSprop(5e-4, rho=0.9, epsilon=1e-6),
        clip_value=None,
        clip_norm=3.0,
        name="clip",
    )
    config = optimizer.get_config()
    assert json.loads(json.dumps(config)) == config
    for clone in (
        TwoStageClipOptimizer.from_config(config),
        keras.optimizers.deserialize(keras.optimizers.serialize(optimizer)),
    ):
        assert isinstance(clone, TwoStageClipOptimizer)
        assert (clone.name, clone.clip_value, clone.clip_norm) == ("clip", None, 3.0)
        assert clone.inner_optimizer.get_config() == (
            optimizer.inner_optimizer.get_config()
        )


# === Argument checks ===


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(clipvalue=1.0),
        dict(clipnorm=1.0),
        dict(global_clipnorm=5.0),
        dict(loss_scale_factor=128.0),
        dict(gradient_accumulation_steps=2),
    ],
)
def test_rejects_an_inner_optimizer_that_clips_scales_or_accumulates(kwargs):
    name = next(iter(kwargs))
    with pytest.raises(ValueError, match=f"{name}="):
        TwoStageClipOptimizer(keras.optimizers.RMSprop(**kwargs))


def test_rejects_a_loss_scale_optimizer_or_a_non_optimizer_inside():
    inner = keras.optimizers.LossScaleOptimizer(keras.optimizers.SGD())
    with pytest.raises(ValueError, match="LossScaleOptimizer"):
        TwoStageClipOptimizer(inner)
    with pytest.raises(ValueError, match="inner_optimizer='rmsprop'"):
        TwoStageClipOptimizer("rmsprop")


# === JAX, in a subprocess ===

# A small RNN-SPN on 40x40 images (the smallest that keeps both CNNs' maps
# non-empty): RMSprop with thresholds so small that both stages always clip,
# and an epsilon that keeps the step proportional to the clipped gradient.
RNN_SPN = dict(localization_filters=2, rnn_units=4, classifier_filters=2, dense_units=4)


def rnn_spn_data():
    rng = np.random.default_rng(3)
    x = rng.random((4, 40, 40, 1)).astype("float32")
    y = rng.integers(0, 10, size=(4, 3))
    return x, y


def initial_rnn_spn_weights():
    keras.utils.set_random_seed(7)
    model = RNNSPN(**RNN_SPN)
    model(np.zeros((1, 40, 40, 1), "float32"))  # builds every layer
    return [keras.ops.convert_to_numpy(v) for v in model.get_weights()]


def fit_rnn_spn(weights):
    """Two fit steps (batches of 2) from `weights`; final weights and losses."""
    x, y = rnn_spn_data()
    model = RNNSPN(**RNN_SPN)
    model(x[:1])
    model.set_weights(weights)
    model.compile(
        optimizer=TwoStageClipOptimizer(
            keras.optimizers.RMSprop(1e-2, rho=0.9, epsilon=1e-6),
            clip_value=1e-3,
            clip_norm=2e-3,
        ),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=keras.backend.backend() == "jax",
    )
    history = model.fit(x, y, batch_size=2, epochs=1, shuffle=False, verbose=0)
    weights = [keras.ops.convert_to_numpy(v) for v in model.get_weights()]
    return weights, history.history["loss"]


def jax_main(directory):
    """Entry point of the JAX subprocess: runs both fits, writes npz files."""
    assert keras.backend.backend() == "jax", keras.backend.backend()
    directory = pathlib.Path(directory)
    np.savez(directory / "linear.npz", *fit_linear())
    with np.load(directory / "initial.npz") as f:
        initial = [f[f"arr_{i}"] for i in range(len(f.files))]
    weights, _ = fit_rnn_spn(initial)
    np.savez(directory / "rnn_spn.npz", *weights)


def load_list(path):
    with np.load(path) as f:
        return [f[f"arr_{i}"] for i in range(len(f.files))]


@pytest.mark.slow
def test_jax_fit_matches_numpy_and_tensorflow(tmp_path):
    pytest.importorskip("jax")
    initial = initial_rnn_spn_weights()
    np.savez(tmp_path / "initial.npz", *initial)
    code = (
        f"import sys; sys.path.insert(0, {str(HERE)!r}); "
        f"import test_clipping; test_clipping.jax_main({str(tmp_path)!r})"
    )
    env = {**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu"}
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    # The linear problem against NumPy.
    x, y, w, b = linear_problem()
    expected, _ = numpy_rmsprop(x, y, w, b, batch_size=4, steps=2)
    for got, ref in zip(load_list(tmp_path / "linear.npz"), expected, strict=True):
        np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6)
    # The RNN-SPN against the same two steps on TensorFlow (the NumPy-checked
    # backend): both clipped, RMSprop, from the same weights.
    on_jax = load_list(tmp_path / "rnn_spn.npz")
    on_tf, _ = fit_rnn_spn(initial)
    moved = max(float(np.abs(a - b).max()) for a, b in zip(on_tf, initial, strict=True))
    worst = max(float(np.abs(a - b).max()) for a, b in zip(on_jax, on_tf, strict=True))
    # Tolerance: 1e-3 of the largest weight change (float32, XLA vs TF kernels).
    assert moved > 1e-3 and worst < 1e-3 * moved, (worst, moved)


# === tf.distribute, in a subprocess ===

# The CPU must be split into two logical devices before TensorFlow
# initialises. Checked by hand: with per-replica clipping (each replica
# clipping its half of the gradient before the sum: `_replica_sum` returning
# the gradients unchanged) the two-replica weights miss the NumPy reference
# by 0.013, three orders of magnitude over the tolerance (about 1e-5).
DISTRIBUTED_SCRIPT = textwrap.dedent(
    """
    import os, json
    os.environ["KERAS_BACKEND"] = "tensorflow"
    import numpy as np, tensorflow as tf, keras
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from cram_keras.training.clipping import TwoStageClipOptimizer

    class Tiny(keras.Model):
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
            model.compile(
                optimizer=TwoStageClipOptimizer(
                    keras.optimizers.SGD(0.1), clip_value=1.0, clip_norm=0.5),
                loss="mse", jit_compile=False)
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
        cwd=ROOT,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    # Independent reference: the same SGD step computed in NumPy.
    rng = np.random.default_rng(0)
    x = rng.normal(0, 10, size=(8, 4))
    y = np.concatenate([np.full((4, 3), 50.0), np.full((4, 3), -5.0)])
    w, b = np.ones((4, 3)), np.zeros(3)
    gw, gb = numpy_two_stage(mse_gradients(x, y, w, b), 1.0, 0.5)
    expected = [w - 0.1 * gw, b - 0.1 * gb]
    for got_single, got_multi, ref in zip(
        result["single"], result["multi"], expected, strict=True
    ):
        np.testing.assert_allclose(got_single, ref, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(got_multi, ref, rtol=1e-5, atol=1e-6)
