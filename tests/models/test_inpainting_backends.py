"""The inpainter trains alike on TensorFlow and JAX: from the same weights and
batches, two `fit` steps give the same logged losses, the same weights of all
three networks (batch-norm statistics included) and the same state of the
three optimizers; the trained model then evaluates, completes images and
recalibrates its batch-norm statistics alike.

The optimizers differ on purpose and clip on purpose: encoder + generator
Adam with `global_clipnorm`, local discriminator SGD with momentum and
`clipvalue`, global discriminator SGD with `global_clipnorm`; each clip is
far below the gradients it meets, so it is active. The warm-up ends after
the first step, so the second generator step has the adversarial term; the
encoder has one trainable glimpse, so the clue loss takes part. The JAX step
is compiled (`jax.jit`, as the training script runs it), the TensorFlow one
not (its default).

Keras picks its backend once per process: the JAX side runs in a
subprocess, which imports this module with `KERAS_BACKEND=jax` and calls
`jax_main`; weights, batches and results go through .npz files.

Tolerance: the largest weight difference must stay below 1e-4 of the
largest weight change of the two steps (float32 rounding of two different
compilers; as the CRAM classifier check of tests/test_jax_backend.py), every
optimizer variable within the same absolute bound, every logged loss and
evaluation score within a relative 1e-5 (atol 1e-6). Measured: 1.2e-7, i.e.
4e-6 of the largest change (2.8e-2). Adam's epsilon is 1e-3 so that
rounding-level gradients (of a weight the losses do not depend on, such as a
dense bias before batch norm) stay rounding-level instead of being scaled up
to a full Adam step, which would differ between the backends by up to the
step itself. Checked by hand, each failing: the JAX step returning the
batch-norm statistics it was given (difference 1.0x the change, i.e. 10^4
times the bound), without its optimizers' clipping (2.3x), with the global
discriminator's gradients taken from the generator's objective (38 times the
bound), and with the optimizer state left out of the forward pass (the step
cannot read the warm-up's step counter: an error).
"""

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("jax")

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parents[1]
RELATIVE_TOLERANCE = 1e-4
LOSS_RTOL = 1e-5
BATCH = 4
STEPS = 2


def data():
    from cram_keras.data.masks import random_rectangle_masks

    rng = np.random.default_rng(3)
    images = rng.random((BATCH * STEPS, 32, 32, 1)).astype("float32")
    masks = random_rectangle_masks(BATCH * STEPS, 32, 4, 12, seed=3)
    return images, masks


def build(weights=None):
    """The tiny inpainter, compiled as the training script compiles it."""
    import keras
    from keras import ops

    from cram_keras.models.inpainting import (
        CNNEncoder,
        CRAMInpainter,
        GlobalDiscriminator,
        InpaintingGenerator,
        LocalDiscriminator,
    )

    class GlimpseEncoder(keras.layers.Layer):
        """A CNNEncoder plus one trainable glimpse (the clue loss takes part)."""

        glimpse_size = 8

        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.cnn = CNNEncoder(units=8, filters=(4, 4, 4))

        def build(self, input_shape):
            self.cnn.build(input_shape)
            self.tau = self.add_weight(
                shape=(3,), initializer=keras.initializers.Constant([0.5, 0.1, -0.1])
            )

        def call(self, inputs, training=None, return_glimpses=False):
            z = self.cnn(inputs, training=training)
            tau = ops.broadcast_to(self.tau[None, None, :], (ops.shape(z)[0], 1, 3))
            return (z, tau, None) if return_glimpses else z

    keras.utils.set_random_seed(0)
    model = CRAMInpainter(
        GlimpseEncoder(),
        InpaintingGenerator(32, 1, filters=(8, 4, 4)),
        LocalDiscriminator(16, filters=(4, 4, 4, 4), units=8),
        GlobalDiscriminator(filters=(4, 4, 4), units=8),
        beta=0.5,
        clue_weight=0.3,
        warmup_steps=1,
    )
    model.build([(None, 32, 32, 1), (None, 32, 32, 1)])
    if weights is not None:
        model.set_weights(weights)
    model.compile(
        g_optimizer=keras.optimizers.Adam(1e-2, epsilon=1e-3, global_clipnorm=0.05),
        local_d_optimizer=keras.optimizers.SGD(0.05, momentum=0.5, clipvalue=1e-3),
        global_d_optimizer=keras.optimizers.SGD(0.05, global_clipnorm=1e-2),
        jit_compile=keras.backend.backend() == "jax",
    )
    return model


def train(weights):
    """Two fit steps from `weights`, then evaluate, predict and a batch-norm
    recalibration; everything as NumPy."""
    import keras

    from cram_keras.data.pipelines import inpainting_eval_dataset

    images, masks = data()
    model = build(weights)
    batch_logs = []

    class Record(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            batch_logs.append({k: float(v) for k, v in logs.items()})

    model.fit(
        images,
        masks,
        batch_size=BATCH,
        epochs=1,
        shuffle=False,
        verbose=0,
        callbacks=[Record()],
    )
    results = {
        "weights": [np.asarray(w) for w in model.get_weights()],
        "optimizer": [
            np.asarray(keras.ops.convert_to_numpy(v)) for v in model.optimizer.variables
        ],
        "steps": [int(o.iterations) for o in model.optimizer.optimizers],
    }
    scores = model.evaluate(
        images, masks, batch_size=BATCH, verbose=0, return_dict=True
    )
    results["completed"] = model.predict(
        inpainting_eval_dataset(images, masks, BATCH), verbose=0
    )
    # Two batches (TensorFlow: eager; JAX: compiled), then five (compiled
    # on both).
    batches = [(images[:BATCH], masks[:BATCH]), (images[BATCH:], masks[BATCH:])] * 3
    model.recalibrate_batch_norm(batches[:2], num_batches=2)
    results["recalibrated_two"] = [np.asarray(w) for w in model.get_weights()]
    model.recalibrate_batch_norm(batches[:5], num_batches=5)
    results["recalibrated"] = [np.asarray(w) for w in model.get_weights()]
    # Inference outside `predict` (figures, diagnostics): TensorFlow eager,
    # JAX one compiled program; a batch of 3, then of 5 (a second program).
    for n in (3, 5):
        generated, tau = model.infer(images[:n], masks[:n])
        results[f"inferred_{n}"], results[f"tau_{n}"] = generated, tau
    logs = {"batches": batch_logs, "evaluate": {k: float(v) for k, v in scores.items()}}
    return results, logs


def save(path, results):
    arrays = {}
    for key, value in results.items():
        if isinstance(value, list) and value and isinstance(value[0], np.ndarray):
            for i, array in enumerate(value):
                arrays[f"{key}/{i}"] = array
        else:
            arrays[key] = np.asarray(value)
    np.savez(path, **arrays)


def load(path):
    results = {}
    with np.load(path) as f:
        for name in f.files:
            key, _, index = name.partition("/")
            if index:
                results.setdefault(key, {})[int(index)] = f[name]
            else:
                results[key] = f[name]
    return {
        k: [v[i] for i in sorted(v)] if isinstance(v, dict) else v
        for k, v in results.items()
    }


def jax_main(directory):
    import keras

    assert keras.backend.backend() == "jax", keras.backend.backend()
    directory = pathlib.Path(directory)
    initial = load(directory / "initial.npz")["weights"]
    results, logs = train(initial)
    save(directory / "jax.npz", results)
    (directory / "jax.json").write_text(json.dumps(logs))


@pytest.fixture(scope="module")
def both_backends(tmp_path_factory):
    import keras

    assert keras.backend.backend() == "tensorflow"
    directory = tmp_path_factory.mktemp("backends")
    initial = [np.asarray(w) for w in build().get_weights()]
    save(directory / "initial.npz", {"weights": initial})
    code = (
        f"import sys; sys.path.insert(0, {str(HERE)!r}); "
        "import test_inpainting_backends as t; "
        f"t.jax_main({str(directory)!r})"
    )
    env = dict(os.environ, KERAS_BACKEND="jax", JAX_PLATFORMS="cpu")
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    on_jax = load(directory / "jax.npz")
    jax_logs = json.loads((directory / "jax.json").read_text())
    on_tf, tf_logs = train(initial)
    return initial, on_tf, tf_logs, on_jax, jax_logs


def largest_difference(a, b):
    return max(float(np.abs(x - y).max()) for x, y in zip(a, b, strict=True))


@pytest.mark.slow
def test_two_steps_on_jax_give_the_weights_of_tensorflow(both_backends):
    initial, on_tf, _, on_jax, _ = both_backends
    moved = largest_difference(on_tf["weights"], initial)
    worst = largest_difference(on_jax["weights"], on_tf["weights"])
    assert moved > 1e-3 and worst < RELATIVE_TOLERANCE * moved, (worst, moved)
    # Every variable the step should change changed on both backends alike
    # (all trainable weights, the batch-norm moving statistics).
    for before, a, b in zip(initial, on_tf["weights"], on_jax["weights"], strict=True):
        assert np.array_equal(before, a) == np.array_equal(before, b)
    # The optimizers' state: iteration counters, learning rates, Adam's
    # moments, SGD's momentum; then written back into their variables.
    assert list(on_jax["steps"]) == list(on_tf["steps"]) == [STEPS] * 3
    assert len(on_jax["optimizer"]) == len(on_tf["optimizer"])
    for a, b in zip(on_tf["optimizer"], on_jax["optimizer"], strict=True):
        assert a.shape == b.shape
        np.testing.assert_allclose(b, a, rtol=0, atol=RELATIVE_TOLERANCE * moved)


@pytest.mark.slow
def test_two_steps_on_jax_log_the_losses_of_tensorflow(both_backends):
    _, _, tf_logs, _, jax_logs = both_backends
    assert len(jax_logs["batches"]) == len(tf_logs["batches"]) == STEPS
    names = {
        "g_loss", "recon_loss", "clue_loss", "adv_loss", "local_d_loss",
        "global_d_loss",
    }  # fmt: skip
    for step, (tf_step, jax_step) in enumerate(
        zip(tf_logs["batches"], jax_logs["batches"], strict=True)
    ):
        assert set(tf_step) == set(jax_step) == names
        for name in names:
            assert jax_step[name] == pytest.approx(
                tf_step[name], rel=LOSS_RTOL, abs=1e-6
            ), (step, name)
    first, second = tf_logs["batches"]
    assert first["clue_loss"] > 0.0 and first["adv_loss"] > 0.0
    # The warm-up: L_gan is off in step 1 and on in step 2, on both backends
    # (the trackers log the running mean of g_loss over the steps).
    for logs in (tf_logs, jax_logs):
        one, two = logs["batches"]
        np.testing.assert_allclose(
            one["g_loss"], 0.3 * one["clue_loss"] + one["recon_loss"], rtol=1e-5
        )
        assert two["g_loss"] > 0.3 * two["clue_loss"] + two["recon_loss"] + 1e-3


@pytest.mark.slow
def test_the_trained_model_evaluates_completes_and_recalibrates_alike(both_backends):
    _, on_tf, tf_logs, on_jax, jax_logs = both_backends
    assert set(jax_logs["evaluate"]) == {"hole_psnr", "hole_l1", "ssim"}
    for name, value in tf_logs["evaluate"].items():
        assert jax_logs["evaluate"][name] == pytest.approx(
            value, rel=LOSS_RTOL, abs=1e-6
        ), name
    np.testing.assert_allclose(on_jax["completed"], on_tf["completed"], atol=1e-4)
    # The recalibration changed the batch-norm statistics (and only them)
    # alike on both backends.
    changed = [
        not np.array_equal(a, b)
        for a, b in zip(on_tf["weights"], on_tf["recalibrated"], strict=True)
    ]
    assert any(changed)
    for key in ("recalibrated_two", "recalibrated"):
        for a, b in zip(on_tf[key], on_jax[key], strict=True):
            np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-5)
    assert not all(
        np.array_equal(a, b)
        for a, b in zip(on_tf["recalibrated_two"], on_tf["recalibrated"], strict=True)
    )
    # `infer` gives NumPy arrays of the generator's output and the glimpses,
    # the same on both backends, for each batch size.
    for n in (3, 5):
        generated, tau = on_jax[f"inferred_{n}"], on_jax[f"tau_{n}"]
        assert generated.shape == (n, 32, 32, 1) and tau.shape == (n, 1, 3)
        np.testing.assert_allclose(generated, on_tf[f"inferred_{n}"], atol=1e-4)
        np.testing.assert_allclose(tau, on_tf[f"tau_{n}"], atol=1e-6)
