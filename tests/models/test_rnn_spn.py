"""RNN-SPN, FFN-SPN and ConvNet: shapes, parameter counts (counted by hand
from the paper's appendix), identity start, learning, serialisation."""

import keras
import numpy as np
import pytest

from cram_keras.models.rnn_spn import FFNSPN, RNNSPN, ConvNet


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


@pytest.mark.parametrize("cls", [RNNSPN, FFNSPN, ConvNet])
def test_keras_round_trip_gives_identical_outputs(cls, tmp_path):
    kwargs = dict(classifier_filters=4, dense_units=8)
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
