"""Loading an epoch checkpoint (weights and optimizer state) into a model
built to evaluate or ship: the weights load, Keras' warning about the skipped
optimizer state is not shown, and other warnings still are."""

import warnings

import keras
import numpy as np

from cram_keras.training.checkpoint import (
    load_weights_without_optimizer,
    optimizer_state_skipped,
)


def model():
    net = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    net.compile("adam", "mse")
    return net


def checkpoint(tmp_path):
    """A weight file written after one training step: it holds Adam's state."""
    trained = model()
    trained.fit(np.ones((4, 3)), np.zeros((4, 2)), epochs=1, verbose=0)
    path = str(tmp_path / "epoch.weights.h5")
    trained.save_weights(path)
    return trained, path


def test_loads_the_weights_without_the_optimizer_warning(tmp_path):
    trained, path = checkpoint(tmp_path)
    # Plain loading into a fresh model warns (what the helper hides).
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model().load_weights(path)
    assert any(
        "Skipping variable loading for optimizer" in str(w.message) for w in caught
    )

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fresh = load_weights_without_optimizer(model(), path)
    assert [str(w.message) for w in caught if "optimizer" in str(w.message)] == []
    for a, b in zip(fresh.get_weights(), trained.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


def test_other_warnings_still_show():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with optimizer_state_skipped():
            warnings.warn("something else", UserWarning, stacklevel=1)
    assert [str(w.message) for w in caught] == ["something else"]
