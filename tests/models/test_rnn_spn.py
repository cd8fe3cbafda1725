"""RNN-SPN, FFN-SPN and ConvNet: shapes, parameter counts (counted by hand
from the paper's appendix), identity start, learning, serialisation, and
where dropout acts (the released code's and the appendix's placements)."""

import keras
import numpy as np
import pytest

from cram_keras.models.rnn_spn import FFNSPN, RNNSPN, ConvNet, RampedDropout


def conv_params(cin, cout, k=3):
    return k * k * cin * cout + cout


def dense_params(cin, cout):
    return cin * cout + cout


def gru_params(inputs, units):
    # Keras GRU, reset_after=True: 3 gates, input and recurrent kernels, two biases.
    return 3 * (inputs * units + units * units + 2 * units)


def test_rnn_spn_shapes_and_parameter_count():
    model = RNNSPN()  # d = 2, dense 400
    x = np.zeros((2, 100, 100, 1), "float32")
    logits, theta = model(x, return_transforms=True)
    assert tuple(logits.shape) == (2, 3, 10)
    assert tuple(theta.shape) == (2, 3, 2, 3)
    assert tuple(model.crops(x).shape) == (2, 3, 50, 50, 1)
    # Localisation: 100 -pool-> 50 -conv-> 48 -pool-> 24 -conv-> 22 -pool-> 11 -conv-> 9.
    loc = conv_params(1, 20) + 2 * conv_params(20, 20)
    rnn = gru_params(9 * 9 * 20, 256)
    head = dense_params(256, 6)
    # Classifier on 50x50: 48 -> 24 -> 22 -> 11 -> 9.
    cls = conv_params(1, 32) + 2 * conv_params(32, 32)
    cls += dense_params(9 * 9 * 32, 400) + dense_params(400, 10)
    assert model.count_params() == loc + rnn + head + cls


@pytest.mark.parametrize("d, crop", [(1.0, 100), (3.0, 33), (4.0, 25)])
def test_rnn_spn_downsample_sets_crop_size(d, crop):
    model = RNNSPN(downsample_factor=d, rnn_units=8, dense_units=8)
    crops = model.crops(np.zeros((1, 100, 100, 1), "float32"))
    assert tuple(crops.shape) == (1, 3, crop, crop, 1)


def test_ffn_spn_and_conv_parameter_counts():
    x = np.zeros((1, 100, 100, 1), "float32")
    ffn = FFNSPN()
    assert tuple(ffn(x).shape) == (1, 3, 10)
    loc = conv_params(1, 20) + 2 * conv_params(20, 20)
    loc += dense_params(9 * 9 * 20, 200) + dense_params(200, 6)
    cls = conv_params(1, 96) + 2 * conv_params(96, 96)
    cls += dense_params(9 * 9 * 96, 400) + 3 * dense_params(400, 10)
    assert ffn.count_params() == loc + cls

    conv = ConvNet()
    assert tuple(conv(x).shape) == (1, 3, 10)
    # 100 -conv-> 98 -pool-> 49 -conv-> 47 -pool-> 23 -conv-> 21.
    cls = conv_params(1, 96) + 2 * conv_params(96, 96)
    cls += dense_params(21 * 21 * 96, 400) + 3 * dense_params(400, 10)
    assert conv.count_params() == cls


def test_identity_start_first_crop_is_the_2x2_average_of_the_input():
    # With d = 2 and align_corners=False, the identity samples pixel centres
    # 2j + 0.5: exactly the mean of each 2x2 block.
    rng = np.random.default_rng(0)
    x = rng.random((2, 100, 100, 1)).astype("float32")
    model = RNNSPN()
    _, theta = model(x, return_transforms=True)
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(theta),
        np.broadcast_to([[1, 0, 0], [0, 1, 0]], (2, 3, 2, 3)),
    )
    crops = keras.ops.convert_to_numpy(model.crops(x))
    reference = x.reshape(2, 50, 2, 50, 2, 1).mean(axis=(2, 4))
    np.testing.assert_allclose(crops[:, 0], reference, rtol=0, atol=1e-6)


@pytest.mark.parametrize("cls", [RNNSPN, FFNSPN, ConvNet])
def test_a_few_steps_lower_the_loss(cls):
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    # 60x60 keeps a 4x4 feature map after the classifier's convolutions
    # on RNN-SPN's 30x30 crops.
    x = rng.random((16, 60, 60, 1)).astype("float32")
    y = rng.integers(0, 10, size=(16, 3))
    kwargs = dict(classifier_filters=8, dense_units=16)
    if cls is RNNSPN:
        kwargs.update(rnn_units=16)
    model = cls(**kwargs)
    model.compile(
        optimizer=keras.optimizers.RMSprop(1e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=False,
    )
    before = model.evaluate(x, y, verbose=0)
    model.fit(x, y, epochs=20, batch_size=8, verbose=0)
    after = model.evaluate(x, y, verbose=0)
    # Chance level is ln(10) = 2.30; memorising part of the set goes below.
    # (RNN-SPN starts slowest: its three crops are identical at the identity
    # start, so it must first move them apart.)
    assert after < before - 0.05


@pytest.mark.parametrize("dropout", [{}, dict(dropout=0.3, dropout_placement="paper")])
@pytest.mark.parametrize("cls", [RNNSPN, FFNSPN, ConvNet])
def test_keras_round_trip_gives_identical_outputs(cls, dropout, tmp_path):
    kwargs = dict(classifier_filters=4, dense_units=8, **dropout)
    if cls is RNNSPN:
        kwargs.update(rnn_units=8, downsample_factor=3.0)
    model = cls(**kwargs)
    x = np.random.default_rng(1).random((3, 60, 60, 1)).astype("float32")
    expected = keras.ops.convert_to_numpy(model(x))
    path = str(tmp_path / "model.keras")
    model.save(path)
    restored = keras.models.load_model(path)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(restored(x)), expected)
    assert restored.get_config() == model.get_config()


@pytest.mark.parametrize(
    "kwargs, name",
    [
        (dict(num_steps=0), "num_steps"),
        (dict(rnn_units=2.5), "rnn_units"),
        (dict(dropout=1.0), "dropout"),
        (dict(dropout_placement="appendix"), "dropout_placement"),
    ],
)
def test_bad_arguments_name_themselves(kwargs, name):
    with pytest.raises(ValueError, match=f"{name}="):
        RNNSPN(**kwargs)


def gru_weights(**kwargs):
    keras.utils.set_random_seed(0)
    model = RNNSPN(rnn_units=32, classifier_filters=2, dense_units=4, **kwargs)
    model(np.zeros((1, 100, 100, 1), "float32"))
    cell = model.rnn.cell
    return model, [
        keras.ops.convert_to_numpy(w)
        for w in (cell.kernel, cell.recurrent_kernel, cell.bias)
    ]


def test_lasagne_gru_initializer_draws_normal_0_1_weights_and_zero_biases():
    # lasagne.layers.GRULayer's defaults: W_in, W_hid ~ Normal(0, 0.1), b = 0.
    model, (kernel, recurrent, bias) = gru_weights(gru_initializer="lasagne")
    assert kernel.shape == (9 * 9 * 20, 3 * 32)  # 155,520 draws
    assert recurrent.shape == (32, 3 * 32)  # 3,072 draws
    assert abs(kernel.std() - 0.1) < 0.002 and abs(kernel.mean()) < 0.002
    assert abs(recurrent.std() - 0.1) < 0.005 and abs(recurrent.mean()) < 0.01
    np.testing.assert_array_equal(bias, np.zeros_like(bias))
    assert model.get_config()["gru_initializer"] == "lasagne"
    assert RNNSPN.from_config(model.get_config()).gru_initializer == "lasagne"


def test_default_gru_initializer_is_keras_glorot_and_orthogonal():
    model, (kernel, recurrent, bias) = gru_weights()
    assert model.gru_initializer == "keras"
    # Glorot uniform: U(-a, a), a = sqrt(6 / (fan_in + fan_out)).
    limit = np.sqrt(6.0 / sum(kernel.shape))
    assert np.abs(kernel).max() <= limit
    assert kernel.std() == pytest.approx(limit / np.sqrt(3.0), rel=0.01)
    # Orthogonal (32, 96): orthonormal rows.
    np.testing.assert_allclose(recurrent @ recurrent.T, np.eye(32), atol=1e-5)
    np.testing.assert_array_equal(bias, np.zeros_like(bias))


def test_bad_gru_initializer_names_itself():
    with pytest.raises(ValueError, match="gru_initializer='glorot'"):
        RNNSPN(gru_initializer="glorot")


# === Dropout: where it acts, and what it does ===

# Each dropout layer named by the sub-network holding it and the layer it
# follows. "code": the released rnn_spn.py (DropoutLayer after l_conv1_loc,
# l_pool1_out and l_pool2_out) and ffn_spn.py (after l_pool1_out and
# l_pool2_out; its third DropoutLayer feeds l_conv3_out, which nothing uses).
# The CNN has no released script: the FFN-SPN classifier's. "paper": the
# appendix, 6.1 and 6.2 (dropout after both poolings and after the third
# convolution of each classifier; none in a localisation network).
CLASSIFIER_CODE = [("classifier", "pool0"), ("classifier", "pool1")]
CLASSIFIER_PAPER = CLASSIFIER_CODE + [("classifier", "conv2")]
PLACEMENTS = {
    (RNNSPN, "code"): [("localization_cnn", "conv1")] + CLASSIFIER_CODE,
    (RNNSPN, "paper"): CLASSIFIER_PAPER,
    (FFNSPN, "code"): CLASSIFIER_CODE,
    (FFNSPN, "paper"): CLASSIFIER_PAPER,
    (ConvNet, "code"): CLASSIFIER_CODE,
    (ConvNet, "paper"): CLASSIFIER_PAPER,
}


def tiny(cls, **kwargs):
    kwargs = dict(classifier_filters=4, dense_units=8, **kwargs)
    if cls is RNNSPN:
        kwargs.update(rnn_units=8)
    model = cls(**kwargs)
    model(np.zeros((1, 60, 60, 1), "float32"))
    return model


@pytest.mark.parametrize("cls, placement", sorted(PLACEMENTS, key=str))
def test_dropout_layers_are_where_the_placement_puts_them(cls, placement):
    model = tiny(cls, dropout=0.25, dropout_placement=placement)
    found = []
    for network in model.layers:
        if isinstance(network, keras.Sequential):
            children = network.layers
            found += [
                (network.name, children[i - 1].name)
                for i, layer in enumerate(children)
                if isinstance(layer, RampedDropout)
            ]
    assert found == PLACEMENTS[cls, placement]
    # No dropout anywhere else in the model, every one at the model's rate.
    everywhere = [
        layer
        for layer in model._flatten_layers(include_self=True, recursive=True)
        if isinstance(layer, keras.layers.Dropout | RampedDropout)
    ]
    assert len(everywhere) == len(found)
    assert {layer.rate for layer in everywhere} == {0.25}
    assert model.get_config()["dropout_placement"] == placement


@pytest.mark.parametrize("placement", ["code", "paper"])
@pytest.mark.parametrize("cls", [RNNSPN, FFNSPN, ConvNet])
def test_inference_has_no_dropout(cls, placement):
    x = np.random.default_rng(0).random((4, 60, 60, 1)).astype("float32")
    keras.utils.set_random_seed(0)
    plain = tiny(cls, dropout_placement=placement)
    dropped = tiny(cls, dropout=0.5, dropout_placement=placement)
    dropped.set_weights(plain.get_weights())
    expected = keras.ops.convert_to_numpy(plain(x, training=False))
    # Rate 0: no dropout in training either.
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(plain(x, training=True)), expected
    )
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(dropped(x, training=False)), expected
    )
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(dropped(x)), expected)
    trained = keras.ops.convert_to_numpy(dropped(x, training=True))
    assert np.abs(trained - expected).max() > 1e-3


@pytest.mark.parametrize("cls", [RNNSPN, FFNSPN])
def test_initial_weights_do_not_depend_on_dropout(cls):
    def weights(**kwargs):
        keras.utils.set_random_seed(0)
        return tiny(cls, **kwargs).get_weights()

    plain = weights()
    for kwargs in (dict(dropout=0.3), dict(dropout=0.3, dropout_placement="paper")):
        for a, b in zip(plain, weights(**kwargs), strict=True):
            np.testing.assert_array_equal(a, b)


def test_ramped_dropout_drops_the_current_rate_and_rescales():
    n = 200_000
    x = np.ones((n,), "float32")
    layer = RampedDropout(0.3, seed=3)
    for rate in (0.3, 0.12):
        layer.set_current_rate(rate)
        y = keras.ops.convert_to_numpy(layer(x, training=True))
        dropped = np.mean(y == 0)
        # Binomial(n, rate) / n: within 5 standard deviations.
        assert abs(dropped - rate) < 5 * np.sqrt(rate * (1 - rate) / n)
        np.testing.assert_allclose(y[y != 0], 1 / (1 - rate), rtol=1e-6)
        # A fresh mask at each call.
        again = keras.ops.convert_to_numpy(layer(x, training=True))
        assert np.mean((again == 0) != (y == 0)) > rate / 2
    layer.set_current_rate(0.0)
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(layer(x, training=True)), x
    )
    layer.set_current_rate(0.3)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(layer(x)), x)
    with pytest.raises(ValueError, match="current_rate=1.0"):
        layer.set_current_rate(1.0)


def test_ramped_dropout_is_state_not_a_weight():
    layer = RampedDropout(0.4, seed=7)
    layer.build((None, 4))
    assert layer.weights == [] and layer.count_params() == 0
    assert layer.current_rate == pytest.approx(0.4)
    assert any(v is layer._current_rate for v in layer.non_trainable_variables)
    clone = RampedDropout.from_config(layer.get_config())
    assert (clone.rate, clone.seed, clone.name) == (0.4, 7, layer.name)
    with pytest.raises(ValueError, match="rate=1.0"):
        RampedDropout(1.0)


def test_weights_saved_with_keras_dropout_load_into_ramped_dropout(tmp_path):
    # The networks' earlier layers were keras.layers.Dropout (no dropout in
    # the localisation network): their checkpoints must keep loading.
    def stack(*dropouts):
        first, second = dropouts
        layers = [keras.Input((20, 20, 1)), keras.layers.Conv2D(3, 3)]
        layers += [first] if first is not None else []
        layers += [keras.layers.MaxPooling2D(2), keras.layers.Conv2D(2, 3), second]
        return keras.Sequential(
            layers + [keras.layers.Flatten(), keras.layers.Dense(4)]
        )

    old = stack(None, keras.layers.Dropout(0.0))
    path = str(tmp_path / "old.weights.h5")
    old.save_weights(path)
    new = stack(RampedDropout(0.2), RampedDropout(0.2))
    new.load_weights(path)
    for a, b in zip(old.get_weights(), new.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


def test_experiment_builds_the_placement_and_ramps_the_rate():
    from cram_keras.experiments import rnn_spn
    from cram_keras.experiments.experiment import Run
    from cram_keras.training.callbacks import DropoutRamp

    config = rnn_spn.Config(
        model="ffn_spn", dropout=0.2, dropout_placement="paper", dropout_ramp_epochs=3
    )
    model = rnn_spn.build_model(config)
    assert (model.dropout, model.dropout_placement) == (0.2, "paper")
    run = Run("unused", config)
    (ramp,) = [
        c for c in rnn_spn.EXPERIMENT.epoch_callbacks(run) if isinstance(c, DropoutRamp)
    ]
    assert ramp.ramp_epochs == 3
    assert rnn_spn.Config().dropout_placement == "code"
    assert rnn_spn.Config().dropout_ramp_epochs == 5
    for bad in (dict(dropout_placement="both"), dict(dropout_ramp_epochs=-1)):
        with pytest.raises(ValueError, match=next(iter(bad))):
            rnn_spn.Config(**bad)


@pytest.mark.parametrize("cls", [RNNSPN, FFNSPN, ConvNet])
def test_the_fused_first_layers_give_the_layers_results(cls, monkeypatch, request):
    """With the compiled kernel, each one-channel 3x3 convolution with ReLU
    followed by a 2x2 max-pooling runs as one fused op (the classifier's
    first pair; the localisation network's conv0 and pool1): the same
    weights, and the outputs and every weight's gradient of the layers run
    one by one, to float32 rounding. Without the kernel the model runs its
    Keras layers."""
    from testing import native_sampler_unavailable

    from cram_keras.ops import native_sampler

    if native_sampler_unavailable():
        pytest.skip(native_sampler_unavailable())
    import tensorflow as tf

    monkeypatch.setenv(
        native_sampler.CACHE_VARIABLE,
        str(request.getfixturevalue("native_sampler_cache")),
    )
    keras.utils.set_random_seed(0)
    model = cls(dense_units=16)
    x = np.random.default_rng(0).random((3, 100, 100, 1)).astype("float32")
    model(x)

    def run(native):
        with native_sampler.native_sampler(native):

            @tf.function
            def step(x):
                with tf.GradientTape() as tape:
                    loss = tf.reduce_sum(tf.sin(model(x, training=True)))
                return model(x), tape.gradient(loss, model.trainable_variables)

            graph = step.get_concrete_function(tf.TensorSpec(x.shape)).graph
            types = {op.type for op in graph.get_operations()}
            outputs, grads = step(x)
        return types, outputs.numpy(), [g.numpy() for g in grads]

    fused_types, fused, fused_grads = run(True)
    layer_types, layers, layer_grads = run(False)
    assert "CramConvReluPool" in fused_types and "CramConvReluPoolGrad" in fused_types
    assert not any(t.startswith("CramConv") for t in layer_types)
    np.testing.assert_allclose(fused, layers, rtol=0, atol=1e-5)
    for variable, a, b in zip(
        model.trainable_variables, fused_grads, layer_grads, strict=True
    ):
        scale = max(1e-3, float(np.abs(b).max()))
        np.testing.assert_allclose(
            a, b, rtol=0, atol=1e-4 * scale, err_msg=variable.path
        )
