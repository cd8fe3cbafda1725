"""CRAM encoder and classifier: shapes, the default parameter count (counted by
hand), the start glimpse, the loss with and without the clue term, gradients
into the localisation network, `.keras` round trip. Backend-agnostic (also run
under JAX); the gradient helper has one branch per backend."""

import inspect
import json

import keras
import numpy as np
import pytest
from testing import TINY_ENCODER as TINY

from cram_keras.layers.spatial_transformer import SpatialTransformer
from cram_keras.losses import clue_loss
from cram_keras.models.cram import CRAMClassifier, CRAMEncoder

SIZE = 16
# One-layer CNNs keep the JAX run short (the 3-layer stacks are tested in
# tests/layers/test_cram_layers.py and by the default parameter count).


def numpy(x):
    return keras.ops.convert_to_numpy(x)


def data(batch=4, seed=0, classes=3):
    # One batch size (4, and 2 for "another batch") keeps the JAX run fast:
    # eager JAX compiles every primitive once per shape.
    rng = np.random.default_rng(seed)
    images = rng.random((batch, SIZE, SIZE, 1)).astype("float32")
    clue = np.zeros((batch, SIZE, SIZE, 1), "float32")
    clue[:, 4:12, 2:10] = 1.0
    labels = rng.integers(0, classes, size=(batch,))
    return [images, clue], labels


def tiny_classifier(clue_weight=0.1, **encoder_kwargs):
    encoder = CRAMEncoder(**(TINY | encoder_kwargs))
    return CRAMClassifier(
        encoder, num_classes=3, decoder_units=(5, 4), clue_weight=clue_weight
    )


def cross_entropy(labels, logits):
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    return float(numpy(loss(labels, logits)))


def compile_tiny(model, run_eagerly=None):
    # Fastest per backend for one or two steps: eager TensorFlow (no tracing),
    # jitted JAX (one compile instead of one per primitive); no XLA on TF.
    tensorflow = keras.backend.backend() == "tensorflow"
    model.compile(
        optimizer=keras.optimizers.SGD(0.01),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        run_eagerly=tensorflow if run_eagerly is None else run_eagerly,
        jit_compile=not tensorflow,
    )


# === Encoder ===


def test_encoder_shapes_for_any_batch():
    encoder = CRAMEncoder(**TINY)
    (x, c), _ = data()
    z, tau, patches = encoder([x, c], return_glimpses=True)
    assert tuple(z.shape) == (4, 8)
    assert tuple(tau.shape) == (4, 2, 3)
    assert tuple(patches.shape) == (4, 2, 6, 6, 1)
    (x, c), _ = data(2)
    assert tuple(encoder([x, c]).shape) == (2, 8)
    assert encoder.compute_output_shape([(None, SIZE, SIZE, 1)] * 2) == (None, 8)
    # RGB images with a one-channel clue.
    rgb = CRAMEncoder(**TINY)
    _, _, patches = rgb([np.zeros((2, SIZE, SIZE, 3)), c], return_glimpses=True)
    assert tuple(patches.shape) == (2, 2, 6, 6, 3)


def test_encoder_starts_with_the_centred_glimpse_of_the_image():
    encoder = CRAMEncoder(**TINY, min_scale=0.25, initial_scale=0.5)
    (x, c), _ = data()
    _, tau, patches = encoder([x, c], training=False, return_glimpses=True)
    np.testing.assert_allclose(
        numpy(tau), np.broadcast_to([0.5, 0.0, 0.0], (4, 2, 3)), atol=1e-6
    )
    # The patch is the image's centre window, sampled independently here.
    st = SpatialTransformer(transform="attention", output_size=(6, 6))
    expected = numpy(st([x, np.tile([[0.5, 0.0, 0.0]], (4, 1)).astype("float32")]))
    for n in range(2):
        np.testing.assert_allclose(numpy(patches)[:, n], expected, atol=1e-5)


def test_encoder_spread_start_samples_each_window():
    encoder = CRAMEncoder(
        **TINY, min_scale=0.25, initial_scale=0.5, glimpse_start="spread"
    )
    (x, c), _ = data()
    _, tau, patches = encoder([x, c], training=False, return_glimpses=True)
    # Two glimpses: right of the centre, then left (r = s0 / 2 = 0.25).
    starts = np.array([[0.5, 0.25, 0.0], [0.5, -0.25, 0.0]], "float32")
    np.testing.assert_allclose(
        numpy(tau), np.broadcast_to(starts, (4, 2, 3)), atol=1e-6
    )
    st = SpatialTransformer(transform="attention", output_size=(6, 6))
    for n in range(2):
        expected = numpy(st([x, np.tile(starts[n : n + 1], (4, 1))]))
        np.testing.assert_allclose(numpy(patches)[:, n], expected, atol=1e-5)


def test_encoder_bad_arguments_name_themselves():
    with pytest.raises(ValueError, match="glimpse_start='ring'"):
        CRAMEncoder(glimpse_start="ring")
    with pytest.raises(ValueError, match="num_glimpses="):
        CRAMEncoder(num_glimpses=0)
    with pytest.raises(ValueError, match="initial_scale="):
        CRAMEncoder(min_scale=0.5, initial_scale=0.3)
    with pytest.raises(ValueError, match=r"\[images, clue\]"):
        CRAMEncoder(**TINY)(np.zeros((1, SIZE, SIZE, 1)))


# === Classifier ===


def conv_bn(cin, cout, k):
    return k * k * cin * cout + 4 * cout  # no bias; BN gamma, beta, mean, var


def dense_bn(cin, cout):
    return cin * cout + 4 * cout


def dense(cin, cout):
    return cin * cout + cout


def lstm(cin, units):
    return 4 * (cin * units + units * units + units)


@pytest.mark.skipif(
    keras.backend.backend() == "jax",
    reason="the count does not depend on the backend; JAX's eager init is slow",
)
def test_default_classifier_parameter_count_for_60x60():
    model = CRAMClassifier()
    model.build([(None, 60, 60, 1), (None, 60, 60, 1)])  # variables only

    def cnn(filters, k):
        cins = (1,) + filters[:-1]
        return sum(conv_bn(i, o, k) for i, o in zip(cins, filters, strict=True))

    # Context: 60 -avg 4-> 15 -> 8 -> 4 -> 2; 2 x 256 features; heads 256 -> 512.
    context = 2 * cnn((16, 32, 64), 3) + 2 * (dense_bn(512, 256) + dense(256, 512))
    # Localisation: 60 -> 30 -> 15 -> 8 (5x5, stride 2); 2 x 8 * 8 * 32 features.
    loc = 2 * cnn((8, 16, 32), 5)
    loc += dense_bn(512, 256) + dense_bn(256, 256)  # MLP_r
    loc += dense_bn(2 * 2048 + 256, 256) + dense(256, 3)  # MLP_loc
    # Glimpse: 12 -> 6 -> 3 -> 2, 256 features; what and where 256 each.
    glimpse = cnn((16, 32, 64), 3) + dense(256, 256) + dense(3, 256)
    core = lstm(256, 512) + lstm(512, 512)
    decoder = dense_bn(512, 256) + dense_bn(256, 256) + dense(256, 10)
    expected = context + loc + glimpse + core + decoder
    assert model.count_params() == expected == 5_887_821


def test_classifier_returns_glimpses_for_plotting():
    model = tiny_classifier()
    x, _ = data()
    logits, tau, patches = model(x, return_glimpses=True)
    assert tuple(logits.shape) == (4, 3)
    assert tuple(tau.shape) == (4, 2, 3)
    assert tuple(patches.shape) == (4, 2, 6, 6, 1)
    assert tuple(model(data(2)[0]).shape) == (2, 3)


def test_clue_weight_zero_is_exactly_the_cross_entropy():
    model = tiny_classifier(clue_weight=0.0)
    compile_tiny(model)
    x, y = data()
    # What `train_step` does: a training-mode call, then `compute_loss`.
    for training in (True, False):
        logits = model(x, training=training)
        assert len(model.losses) == 0
        loss = model.compute_loss(x, y, logits, training=training)
        assert float(numpy(loss)) == pytest.approx(cross_entropy(y, logits), rel=1e-6)
    # The clue loss is still reported, but not added.
    assert 0.0 < float(numpy(model.clue_loss_tracker.result())) < 1.0


def test_clue_loss_metric_counts_only_the_forward_pass_of_its_logits():
    # Shape inference calls `compute_loss` with a `y_pred` of its own trace:
    # only the logits `call` returned may carry that call's clue term.
    model = tiny_classifier(clue_weight=0.0)
    compile_tiny(model)
    x, y = data()
    logits, tau, _ = model(x, training=False, return_glimpses=True)
    model.compute_loss(x, y, logits + 0.0, training=False)
    assert float(numpy(model.clue_loss_tracker.count)) == 0.0
    model.compute_loss(x, y, logits, training=False)
    model.compute_loss(x, y, logits, training=False)  # used once only
    assert float(numpy(model.clue_loss_tracker.count)) == 1.0
    expected = float(numpy(clue_loss(x[1], tau, 6)))
    assert float(numpy(model.clue_loss_tracker.result())) == pytest.approx(expected)


def test_no_private_keras_imports():
    import cram_keras.models.cram as cram_module

    assert "keras.src" not in inspect.getsource(cram_module)


@pytest.mark.slow  # two compiled steps (train, validation)
def test_clue_loss_is_added_and_reported_in_fit_logs():
    model = tiny_classifier(clue_weight=0.5)
    compile_tiny(model, run_eagerly=False)
    x, y = data()
    logits, tau, _ = model(x, training=True, return_glimpses=True)
    clue_term = float(numpy(clue_loss(x[1], tau, 6)))
    hand = cross_entropy(y, logits) + 0.5 * clue_term
    history = model.fit(
        x,
        y,
        batch_size=4,
        epochs=1,
        shuffle=False,
        verbose=0,
        validation_data=(x, y),
    )
    logs = {k: v[0] for k, v in history.history.items()}
    assert logs["loss"] == pytest.approx(hand, rel=1e-5)
    assert logs["clue_loss"] == pytest.approx(clue_term, rel=1e-5)
    # Validation: inference mode, after the update.
    logits, tau, _ = model(x, training=False, return_glimpses=True)
    clue_term = float(numpy(clue_loss(x[1], tau, 6)))
    assert logs["val_clue_loss"] == pytest.approx(clue_term, rel=1e-5)
    assert logs["val_loss"] == pytest.approx(
        cross_entropy(y, logits) + 0.5 * clue_term, rel=1e-5
    )


def classification_gradients(model, x, y):
    """A function returning the gradients of the cross-entropy alone wrt
    `model.trainable_variables` at their current values."""
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        def gradients():
            with tf.GradientTape() as tape:
                loss = loss_fn(y, model(x, training=True))
            return tape.gradient(loss, model.trainable_variables)

        return gradients
    if backend == "jax":
        import jax

        def loss_of(trainable, non_trainable):
            logits, _ = model.stateless_call(trainable, non_trainable, x, training=True)
            return loss_fn(y, logits)

        grad = jax.jit(jax.grad(loss_of))  # one compile, not one per primitive

        def gradients():
            return grad(
                [v.value for v in model.trainable_variables],
                [v.value for v in model.non_trainable_variables],
            )

        return gradients
    pytest.skip(f"no gradient helper for the {backend} backend")


def test_classification_gradients_reach_the_localisation_network():
    model = tiny_classifier(clue_weight=0.0)
    x, y = data()
    model(x)
    loc = model.encoder.localization
    index = {id(v): i for i, v in enumerate(model.trainable_variables)}
    gradients = classification_gradients(model, x, y)

    def loc_gradients():
        grads = gradients()
        return {v.path: grads[index[id(v)]] for v in loc.trainable_variables}

    # At the start the head kernel is zero: its own gradient must not be.
    grads = loc_gradients()
    assert all(g is not None for g in grads.values())
    assert np.any(numpy(grads[loc.head.kernel.path]) != 0)
    # With a non-zero head, every localisation variable gets a gradient.
    kernel = np.random.default_rng(1).normal(size=loc.head.kernel.shape) * 0.5
    loc.head.kernel.assign(kernel.astype("float32"))
    for path, grad in loc_gradients().items():
        assert np.any(numpy(grad) != 0), path


def test_keras_round_trip_gives_identical_predictions(tmp_path):
    model = tiny_classifier(
        clue_weight=0.25, min_scale=0.1, initial_scale=0.3, glimpse_start="spread"
    )
    compile_tiny(model)
    x, _ = data()
    model(x, training=True)  # moves the batch-norm statistics off their start
    expected = numpy(model(x, training=False))
    path = str(tmp_path / "cram.keras")
    model.save(path)
    restored = keras.models.load_model(path)
    np.testing.assert_array_equal(numpy(restored(x, training=False)), expected)
    assert json_normalised(restored.get_config()) == json_normalised(model.get_config())
    assert restored.clue_weight == 0.25
    assert restored.encoder.initial_scale == 0.3
    assert restored.encoder.glimpse_start == "spread"
    _, tau, _ = restored(x, training=False, return_glimpses=True)
    assert tuple(tau.shape) == (4, 2, 3)


def json_normalised(config):
    return json.loads(json.dumps(config))


@pytest.mark.parametrize(
    "kwargs, name",
    [
        (dict(clue_weight=-0.1), "clue_weight"),
        (dict(clue_reduction="max"), "clue_reduction"),
        (dict(num_classes=0), "num_classes"),
        (dict(encoder="cram"), "encoder"),
    ],
)
def test_classifier_bad_arguments_name_themselves(kwargs, name):
    with pytest.raises(ValueError, match=f"{name}="):
        CRAMClassifier(**kwargs)


def _zeroed(layer, monkeypatch):
    """Makes `layer` return zeros of its usual output structure."""
    call = layer.call

    def zeros(*args, **kwargs):
        return keras.tree.map_structure(keras.ops.zeros_like, call(*args, **kwargs))

    monkeypatch.setattr(layer, "call", zeros)


def test_ablations_cut_exactly_one_pathway(monkeypatch):
    """`ablate="glimpses"` is the encoder with an all-zero transformer output;
    `ablate="context"` the encoder with an all-zero context state; both
    differ from the full encoder."""
    (images, clue), _ = data()
    encoder = CRAMEncoder(**TINY)
    full = numpy(encoder([images, clue]))
    no_glimpses = numpy(encoder([images, clue], ablate="glimpses"))
    no_context = numpy(encoder([images, clue], ablate="context"))
    with pytest.raises(ValueError, match="ablate='patches'"):
        encoder([images, clue], ablate="patches")
    assert np.abs(full - no_glimpses).max() > 1e-6
    assert np.abs(full - no_context).max() > 1e-6
    with monkeypatch.context() as patch:
        _zeroed(encoder.transformer, patch)
        reference_glimpses = numpy(encoder([images, clue]))
    with monkeypatch.context() as patch:
        _zeroed(encoder.context, patch)
        reference_context = numpy(encoder([images, clue]))
    np.testing.assert_allclose(no_glimpses, reference_glimpses, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(no_context, reference_context, rtol=1e-6, atol=1e-7)
