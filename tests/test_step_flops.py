"""`benchmarks/train_speed.py --flops`: the FLOPs of a training step counted
on its graph match the textbook count of a small model."""

import importlib.util
import pathlib

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")

REPO = pathlib.Path(__file__).resolve().parent.parent


def _train_speed():
    spec = importlib.util.spec_from_file_location(
        "train_speed", REPO / "benchmarks" / "train_speed.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="TensorFlow")
def test_a_conv_and_dense_step_counts_as_by_hand():
    train_speed = _train_speed()
    batch = 8
    model = keras.Sequential(
        [
            keras.Input((6, 6, 1)),
            keras.layers.Conv2D(4, 3, name="conv"),
            keras.layers.Flatten(name="flatten"),
            keras.layers.Dense(2, name="dense"),
        ]
    )
    model.compile(optimizer="sgd", loss="mse")
    x = np.zeros((batch, 6, 6, 1), "float32")
    y = np.zeros((batch, 2), "float32")
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(batch)
    model.fit(dataset, verbose=0)
    step = train_speed._step(model, dataset)
    count = train_speed.step_flops(step, batch)
    conv = 2 * batch * 4 * 4 * 4 * 3 * 3 * 1  # output positions x kernel
    dense = 2 * batch * 64 * 2
    # The convolution and its filter gradient (the images need no gradient);
    # the dense layer and both of its gradients.
    assert count["by_kind"]["convolution"] == 2 * conv
    assert count["by_kind"]["matmul"] == 3 * dense
    assert count["by_layer"]["conv"] >= 2 * conv
    assert count["flops_per_step"] > 2 * conv + 3 * dense
