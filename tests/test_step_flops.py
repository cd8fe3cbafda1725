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
    # TensorFlow's own profiler counts the forward convolution and the three
    # matmuls (MatMul ops, forward and gradients) alike.
    check = train_speed.tf_profiler_flops(step, batch)[
        "forward convolutions and matmuls"
    ]
    assert check["ours"] == check["tensorflow_profiler"] == conv + 3 * dense


def _op_types(graph):
    """The types of the ops of `graph` and of the functions it calls."""
    types = set()
    for op in graph.get_operations():
        types.add(op.type)
        if op.type in ("PartitionedCall", "StatefulPartitionedCall"):
            types |= _op_types(graph._get_function(op.get_attr("f").name).graph)
    return types


class _FirstLayers(keras.layers.Layer):
    """A trainable scale of the images (so that they need a gradient when
    `scaled`), then `conv_relu_max_pool` with its own kernel and bias."""

    def __init__(self, scaled, **kwargs):
        super().__init__(**kwargs)
        self.scaled = scaled

    def build(self, input_shape):
        self.kernel = self.add_weight(shape=(3, 2, 1, 5), name="kernel")
        self.bias = self.add_weight(shape=(5,), name="bias")
        if self.scaled:
            self.scale = self.add_weight(shape=(), name="scale")

    def call(self, images):
        from cram_keras.ops import conv_relu_max_pool

        if self.scaled:
            images = images * self.scale
        return conv_relu_max_pool(images, self.kernel, self.bias)


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="TensorFlow")
@pytest.mark.parametrize("scaled", [False, True])
def test_the_compiled_first_layers_count_as_the_layers_they_replace(native, scaled):
    """The same model counted with the compiled op and with its keras.ops
    layers (convolution, bias, ReLU, max-pooling and their gradients): the
    same FLOPs of each kind, the input gradient counted only where the
    images need one."""
    train_speed = _train_speed()
    batch = 4
    x = np.zeros((batch, 9, 10, 1), "float32")
    y = np.zeros((batch, 2), "float32")
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(batch)
    counts = {}
    for on in (True, False):
        with native.native_sampler(on):
            keras.utils.set_random_seed(0)
            model = keras.Sequential(
                [
                    keras.Input((9, 10, 1)),
                    _FirstLayers(scaled, name="first"),
                    keras.layers.Flatten(),
                    keras.layers.Dense(2),
                ]
            )
            model.compile(optimizer="sgd", loss="mse")
            model.fit(dataset, verbose=0)
            step = train_speed._step(model, dataset)
            count = train_speed.step_flops(step, batch)
            graph = (
                tf.function(model.train_step)
                .get_concrete_function(step.element_spec)
                .graph
            )
            counts[on] = count["by_kind"], _op_types(graph)
    (fused, fused_ops), (layers, layer_ops) = counts[True], counts[False]
    assert "CramConvReluPoolGrad" in fused_ops and "Conv2D" not in fused_ops
    assert "CramConvReluPool" not in layer_ops
    conv = 2 * batch * 7 * 9 * 5 * 3 * 2  # output positions x kernel taps
    # The convolution and its filter gradient, and the input gradient where
    # the images are scaled by a weight.
    assert layers["convolution"] == (3 if scaled else 2) * conv
    assert fused == layers


class _Glimpse(keras.layers.Layer):
    """A SpatialTransformer whose affine parameters are weights."""

    def build(self, input_shape):
        self.params = self.add_weight(shape=(1, 6), name="params")

    def call(self, images):
        from cram_keras.layers import SpatialTransformer

        params = keras.ops.repeat(self.params, keras.ops.shape(images)[0], axis=0)
        return SpatialTransformer("affine", output_size=(4, 5))([images, params])


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="TensorFlow")
def test_the_compiled_sampler_counts_10_and_26_flops_per_output_value(native):
    train_speed = _train_speed()
    batch = 3
    x = np.zeros((batch, 8, 8, 2), "float32")
    y = np.zeros((batch, 2), "float32")
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(batch)
    model = keras.Sequential(
        [
            keras.Input((8, 8, 2)),
            _Glimpse(),
            keras.layers.Flatten(),
            keras.layers.Dense(2),
        ]
    )
    model.compile(optimizer="sgd", loss="mse")
    model.fit(dataset, verbose=0)
    step = train_speed._step(model, dataset)
    graph = tf.function(model.train_step).get_concrete_function(step.element_spec).graph
    assert {"CramTransformSample", "CramTransformSampleGrad"} <= _op_types(graph)
    count = train_speed.step_flops(step, batch)
    assert count["by_kind"]["sampler"] == (10 + 26) * batch * 4 * 5 * 2
