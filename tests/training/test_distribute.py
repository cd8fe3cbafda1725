"""Distribution equivalence: a few MirroredStrategy training steps on two
logical CPUs give the weights (and logged losses) of one device on the same
global batches, for

(a) a small RNN-SPN with `TwoStageClipOptimizer` (clipping of the global
    gradient; different examples on the two replicas),
(b) a small CRAMClassifier with the clue loss (an `add_loss` term, which
    Keras must divide by the number of replicas),
(c) a small CRAMInpainter (custom train_step, three optimizers, a clue loss
    from one trainable glimpse).

CRAM's networks use batch normalisation, whose training-mode statistics are
per replica; for (b) and (c) every global batch is therefore one batch twice
over, `[x, x]`, so that each replica's statistics are the one device's, as in
tests/models/test_inpainting.py. Everything is deterministic (no dropout, no
random masks), so the two runs differ only by float32 rounding.

Tolerance: the largest weight difference must stay below 1e-4 of the largest
weight change over the steps (the runs here: 2e-6 to 2e-5). Checked by hand
once, each far over that bound: (a) with per-replica clipping
(`TwoStageClipOptimizer._replica_sum` returning the gradients unchanged) the
difference is 1.7 times the change; (b) with the clue term not divided by the
replicas (`_aggregate_additional_loss` without `scale_loss_for_distribution`)
0.62 of it; (c) with the inpainter's losses not divided by the replicas
(`replicas = 1` in `compute_losses_and_gradients`) 1.3 times, and with only
its clue term not divided (`clue_weight * clue` without `/ replicas`) 0.12.

The cases run in one subprocess (the CPU must be split before TensorFlow
initialises); this module is imported there with `KERAS_BACKEND=tensorflow`,
so its top level imports nothing heavy.
"""

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
from testing import TINY_ENCODER

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parents[1]
STEPS = 3
RELATIVE_TOLERANCE = 1e-4


def _dataset(*arrays, batch_size):
    import tensorflow as tf

    return tf.data.Dataset.from_tensor_slices(arrays).batch(batch_size)


def _twice(array, batch):
    """Each global batch of `2 * batch` is `batch` examples twice over."""
    chunks = np.split(array, len(array) // batch)
    return np.concatenate([np.concatenate([c, c]) for c in chunks])


def rnn_spn_case():
    """RNN-SPN, RMSprop in TwoStageClipOptimizer, thresholds that always clip."""
    import keras

    from cram_keras.models.rnn_spn import RNNSPN
    from cram_keras.training.clipping import TwoStageClipOptimizer

    rng = np.random.default_rng(0)
    x = rng.random((4 * STEPS, 40, 40, 1)).astype("float32")
    y = rng.integers(0, 10, size=(4 * STEPS, 3))

    def build():
        model = RNNSPN(
            localization_filters=2, rnn_units=4, classifier_filters=2, dense_units=4
        )
        model(x[:1])
        model.compile(
            optimizer=TwoStageClipOptimizer(
                keras.optimizers.RMSprop(1e-2, rho=0.9, epsilon=1e-6),
                clip_value=1e-3,
                clip_norm=2e-3,
            ),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            jit_compile=False,
        )
        return model

    return build, lambda: _dataset(x, y, batch_size=4)


def cram_classifier_case():
    """CRAMClassifier, clue weight 0.5, SGD with momentum."""
    import keras

    from cram_keras.models.cram import CRAMClassifier, CRAMEncoder

    rng = np.random.default_rng(1)
    x = rng.random((2 * STEPS, 16, 16, 1)).astype("float32")
    clue = np.zeros_like(x)
    clue[:, 4:12, 2:10] = 1.0
    y = rng.integers(0, 3, size=(2 * STEPS,))

    def build():
        model = CRAMClassifier(
            CRAMEncoder(**TINY_ENCODER),
            num_classes=3,
            decoder_units=(5, 4),
            clue_weight=0.5,
        )
        model([x[:1], clue[:1]])
        model.compile(
            optimizer=keras.optimizers.SGD(0.1, momentum=0.5),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            jit_compile=False,
        )
        return model

    def dataset():
        twice = [_twice(a, 2) for a in (x, clue, y)]
        return _dataset((twice[0], twice[1]), twice[2], batch_size=4)

    return build, dataset


def cram_inpainter_case():
    """CRAMInpainter, three SGD optimizers; its encoder is a CNNEncoder plus
    one trainable glimpse (as tests/models/test_inpainting.py), so that the
    clue loss takes part without the cost of tracing a CRAM encoder (case (b)
    covers that)."""
    import keras
    from keras import ops

    from cram_keras.data.masks import random_rectangle_masks
    from cram_keras.models.inpainting import (
        CNNEncoder,
        CRAMInpainter,
        GlobalDiscriminator,
        InpaintingGenerator,
        LocalDiscriminator,
    )

    class GlimpseEncoder(keras.layers.Layer):
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

    rng = np.random.default_rng(2)
    images = rng.random((2 * STEPS, 32, 32, 1)).astype("float32")
    masks = random_rectangle_masks(2 * STEPS, 32, 4, 12, seed=2)

    def build():
        model = CRAMInpainter(
            GlimpseEncoder(),
            InpaintingGenerator(32, 1, filters=(8, 4, 4)),
            LocalDiscriminator(16, filters=(4, 4, 4, 4), units=8),
            GlobalDiscriminator(filters=(4, 4, 4), units=8),
            beta=0.5,
            clue_weight=0.3,
        )
        model.build([(None, 32, 32, 1), (None, 32, 32, 1)])
        model.compile(
            g_optimizer=keras.optimizers.SGD(0.05),
            local_d_optimizer=keras.optimizers.SGD(0.05),
            global_d_optimizer=keras.optimizers.SGD(0.05),
            jit_compile=False,
        )
        return model

    def dataset():
        return _dataset(_twice(images, 2), _twice(masks, 2), batch_size=4)

    return build, dataset


CASES = {
    "rnn_spn": rnn_spn_case,
    "cram_classifier": cram_classifier_case,
    "cram_inpainter": cram_inpainter_case,
}


def _train(build, dataset, strategy, initial=None):
    import keras

    keras.utils.set_random_seed(0)
    with strategy.scope():
        model = build()
    if initial is not None:
        model.set_weights(initial)
    start = [np.array(w) for w in model.get_weights()]
    history = model.fit(dataset(), epochs=1, verbose=0, shuffle=False)
    optimizer = model.optimizer or model.g_optimizer
    assert int(keras.ops.convert_to_numpy(optimizer.iterations)) == STEPS
    logs = {k: float(v[-1]) for k, v in history.history.items()}
    return start, [np.array(w) for w in model.get_weights()], logs


def main(path):
    """Runs every case on one device and on two mirrored replicas."""
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * 2
    )
    import keras

    assert keras.backend.backend() == "tensorflow"
    mirrored = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    assert mirrored.num_replicas_in_sync == 2
    results = {}
    for name, case in CASES.items():
        build, dataset = case()
        initial, single, single_logs = _train(
            build, dataset, tf.distribute.get_strategy()
        )
        _, multi, multi_logs = _train(build, dataset, mirrored, initial)
        results[name] = dict(
            moved=max(
                float(np.abs(a - b).max()) for a, b in zip(single, initial, strict=True)
            ),
            worst=max(
                float(np.abs(a - b).max()) for a, b in zip(single, multi, strict=True)
            ),
            single_logs=single_logs,
            multi_logs=multi_logs,
        )
    pathlib.Path(path).write_text(json.dumps(results))


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    path = tmp_path_factory.mktemp("distribute") / "results.json"
    code = (
        f"import sys; sys.path[:0] = [{str(HERE)!r}, {str(HERE.parent)!r}]; "
        f"import test_distribute; test_distribute.main({str(path)!r})"
    )
    env = dict(os.environ, KERAS_BACKEND="tensorflow", TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads(path.read_text())


@pytest.mark.slow
@pytest.mark.parametrize("case", list(CASES))
def test_mirrored_steps_give_the_one_device_weights(results, case):
    result = results[case]
    # The steps really moved the weights, and the replicas moved them alike.
    assert result["moved"] > 1e-3, result
    assert result["worst"] <= RELATIVE_TOLERANCE * result["moved"], result
    # The logged losses (the global-batch means) agree too; for the
    # classifier these include `clue_loss`, for the inpainter every term.
    single, multi = result["single_logs"], result["multi_logs"]
    assert set(single) == set(multi)
    if case == "cram_classifier":
        assert "clue_loss" in single
    for key, value in single.items():
        assert multi[key] == pytest.approx(value, rel=1e-4, abs=1e-6), key
