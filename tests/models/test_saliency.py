"""SaliencyNetwork (CRAM's CNN-DecNN clue maker): shapes for sizes that are not
a multiple of the pooling, argument checks, `.keras` round trip, and that it
learns a tiny saliency task better than an all-zeros mask and than the best
constant prediction, on held-out images."""

import keras
import numpy as np
import pytest
from testing import run_model_saving_test

from cram_keras.models.saliency import SaliencyNetwork


def numpy(x):
    return keras.ops.convert_to_numpy(x)


def test_output_shape_and_range_for_any_size():
    net = SaliencyNetwork(filters=(2, 3))
    x = np.random.default_rng(0).random((2, 15, 13, 3)).astype("float32")
    y = numpy(net(x))
    assert y.shape == (2, 15, 13, 1)
    assert net.compute_output_shape((2, 15, 13, 3)) == (2, 15, 13, 1)
    assert np.all((y > 0) & (y < 1))


def test_rejects_bad_arguments_with_the_received_value():
    with pytest.raises(ValueError, match="Received: filters=\\(\\)"):
        SaliencyNetwork(filters=())
    with pytest.raises(ValueError, match="Received: kernel_size=0"):
        SaliencyNetwork(kernel_size=0)
    with pytest.raises(ValueError, match="known height and width"):
        SaliencyNetwork(filters=(2,)).build((None, None, None, 1))


def test_config_and_keras_file_round_trip(tmp_path):
    net = SaliencyNetwork(filters=(2, 3), kernel_size=5)
    x = np.random.default_rng(1).random((2, 12, 12, 1)).astype("float32")
    net(x)
    config = net.get_config()
    assert SaliencyNetwork.from_config(config).get_config() == config
    revived = keras.saving.deserialize_keras_object(
        keras.saving.serialize_keras_object(net)
    )
    assert isinstance(revived, SaliencyNetwork) and revived.get_config() == config
    run_model_saving_test(net, x, str(tmp_path / "saliency.keras"))
    assert net.get_config()["filters"] == [2, 3]


def squares_with_dots(n, seed, size=16):
    """A bright 6x6 square (salient) and four bright 2x2 dots (not salient) on
    dim noise: brightness alone cannot tell them apart; shape and extent can."""
    rng = np.random.default_rng(seed)
    images = rng.uniform(0.0, 0.2, (n, size, size, 1)).astype("float32")
    masks = np.zeros((n, size, size, 1), "float32")
    for i in range(n):
        for _ in range(4):
            y, x = rng.integers(0, size - 2, 2)
            images[i, y : y + 2, x : x + 2] = 1.0
        y, x = rng.integers(0, size - 6, 2)
        images[i, y : y + 6, x : x + 6] = 1.0
        masks[i, y : y + 6, x : x + 6] = 1.0
    return images, masks


def iou(pred, target):
    inter = np.logical_and(pred, target).sum((1, 2, 3))
    union = np.logical_or(pred, target).sum((1, 2, 3))
    return float(np.mean(inter / np.maximum(union, 1)))


def bce(prob, target):
    prob = np.clip(prob, 1e-7, 1 - 1e-7)
    return float(-np.mean(target * np.log(prob) + (1 - target) * np.log(1 - prob)))


@pytest.mark.slow
def test_learns_a_tiny_saliency_task_better_than_zeros_and_constant():
    keras.utils.set_random_seed(0)
    x_train, m_train = squares_with_dots(128, seed=0)
    x_test, m_test = squares_with_dots(32, seed=1)
    net = SaliencyNetwork(filters=(8, 16))
    net.compile(
        optimizer=keras.optimizers.Adam(3e-3),
        loss=keras.losses.BinaryCrossentropy(),
        jit_compile=False,
    )
    net.fit(x_train, m_train, batch_size=16, epochs=25, verbose=0)
    prob = numpy(net(x_test, training=False))

    zeros = np.zeros_like(m_test, bool)
    prior = np.full_like(m_test, m_train.mean())  # the best constant prediction
    assert iou(zeros, m_test > 0) == 0.0
    assert iou(prob > 0.5, m_test > 0) > 0.8
    assert bce(prob, m_test) < 0.5 * bce(prior, m_test)
    # The dots are as bright as the square: a brightness threshold scores lower.
    assert iou(prob > 0.5, m_test > 0) > iou(x_test > 0.5, m_test > 0) + 0.1
