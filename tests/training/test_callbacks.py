import contextlib
import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from cram_keras.training.callbacks import (
    DropoutRamp,
    ramped_dropout_rate,
    step_decay_after,
)


def test_step_decay_matches_released_code_schedule():
    # Hand-traced from the released rnn_spn.py: the rate first drops for epoch
    # 32 (0-indexed), then every 12 epochs.
    lrs = [step_decay_after(e, 1.0) for e in range(70)]
    drops = [e for e in range(1, 70) if lrs[e] < lrs[e - 1]]
    assert drops == [32, 44, 56, 68]
    assert lrs[31] == 1.0
    assert lrs[32] == pytest.approx(1 / 1.5)
    assert lrs[69] == pytest.approx(1 / 1.5**4)


# === The dropout ramp ===

RATE = 0.5
# The released rnn_spn.py, at the start of each 0-indexed epoch:
#     if epoch < 5: rate = epoch * p / 5.0   else: rate = p
# written out for p = 0.5, epochs 0..6.
RELEASED_RAMP = [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.5]


def test_ramp_matches_released_code_formula():
    assert [ramped_dropout_rate(e, RATE) for e in range(7)] == pytest.approx(
        RELEASED_RAMP, abs=1e-12
    )
    assert [ramped_dropout_rate(e, 0.3, ramp_epochs=2) for e in range(4)] == (
        pytest.approx([0.0, 0.15, 0.3, 0.3], abs=1e-12)
    )
    assert [ramped_dropout_rate(e, 0.3, ramp_epochs=0) for e in range(3)] == [0.3] * 3


@pytest.mark.parametrize("bad", [-1, 2.5, True, None])
def test_ramp_callback_refuses_bad_epochs(bad):
    with pytest.raises(ValueError, match="ramp_epochs="):
        DropoutRamp(bad)


UNITS = 20000  # dropped fraction of 20,000 units: std <= 0.0036 per epoch


def ramp_history(jit_compile=False, strategy=None):
    """Fits a model whose training output is ``RampedDropout(0.5)`` of ones
    for 7 epochs with `DropoutRamp`, then 1 more epoch with a fresh callback
    from ``initial_epoch=3`` (a resumed run). Returns the fraction of units
    the training steps dropped in each epoch (a metric of the step's own
    output) and the layer's rate after the resumed epoch."""
    import keras

    from cram_keras.models.rnn_spn import RampedDropout

    x = np.ones((2, UNITS, 1), "float32")
    with strategy.scope() if strategy else contextlib.nullcontext():
        dropout = RampedDropout(RATE, seed=1)
        model = keras.Sequential(
            [
                keras.Input((UNITS, 1)),
                dropout,
                # A trainable weight that the zero learning rate never moves.
                keras.layers.Dense(1, use_bias=False, kernel_initializer="ones"),
            ]
        )
        model.compile(
            optimizer=keras.optimizers.SGD(0.0),
            loss="mse",
            metrics=[
                keras.metrics.MeanMetricWrapper(
                    lambda y, p: keras.ops.mean(keras.ops.cast(p == 0, "float32")),
                    name="dropped",
                )
            ],
            jit_compile=jit_compile,
        )
    history = model.fit(
        x, x, batch_size=2, epochs=7, callbacks=[DropoutRamp(5)], verbose=0
    )
    fresh = model.fit(
        x,
        x,
        batch_size=2,
        initial_epoch=3,
        epochs=4,
        callbacks=[DropoutRamp(5)],
        verbose=0,
    )
    return dict(
        dropped=[float(v) for v in history.history["dropped"]],
        resumed=float(fresh.history["dropped"][0]),
        rate_after_resume=dropout.current_rate,
    )


def _check_ramp(result):
    expected = np.asarray(RELEASED_RAMP)
    dropped = np.asarray(result["dropped"])
    assert dropped[0] == 0.0  # epoch 0: no unit dropped at all
    np.testing.assert_allclose(dropped, expected, atol=0.02)
    assert result["resumed"] == pytest.approx(0.3, abs=0.02)
    assert result["rate_after_resume"] == pytest.approx(0.3, abs=1e-7)


@pytest.mark.parametrize("jit_compile", [False, True])
def test_ramp_sets_the_rate_the_compiled_steps_use(jit_compile):
    _check_ramp(ramp_history(jit_compile))


HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parents[1]

_SUBPROCESS = {
    # Two mirrored replicas on two logical CPUs (set before TensorFlow starts).
    "mirrored": (
        "tensorflow",
        "import tensorflow as tf\n"
        "cpu = tf.config.list_physical_devices('CPU')[0]\n"
        "tf.config.set_logical_device_configuration(\n"
        "    cpu, [tf.config.LogicalDeviceConfiguration()] * 2)\n"
        "strategy = tf.distribute.MirroredStrategy(['/cpu:0', '/cpu:1'])\n"
        "assert strategy.num_replicas_in_sync == 2\n"
        "import test_callbacks\n"
        "result = test_callbacks.ramp_history(strategy=strategy)\n",
    ),
    # JAX: the step is always jax.jit-compiled, the rate a traced state value.
    "jax": (
        "jax",
        "import keras\n"
        "assert keras.backend.backend() == 'jax'\n"
        "import test_callbacks\n"
        "result = test_callbacks.ramp_history(jit_compile=True)\n",
    ),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(_SUBPROCESS))
def test_ramp_under_mirrored_strategy_and_on_jax(case, tmp_path):
    if case == "jax":
        pytest.importorskip("jax")
    backend, body = _SUBPROCESS[case]
    out = tmp_path / "result.json"
    code = (
        f"import json, sys\nsys.path.insert(0, {str(HERE)!r})\n"
        + body
        + f"open({str(out)!r}, 'w').write(json.dumps(result))\n"
    )
    env = {
        **os.environ,
        "KERAS_BACKEND": backend,
        "JAX_PLATFORMS": "cpu",
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "CRAM_KERAS_OFFLINE": "1",
    }
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True,
        text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    _check_ramp(json.loads(out.read_text()))
