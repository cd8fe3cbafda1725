"""cram_keras.ops.conv_relu_max_pool: a one-channel convolution, its ReLU
and a 2x2 max-pooling, against a NumPy reference written here (values and
the gradients of the images, kernel and bias, in float64) on both paths:
the keras.ops reference (every backend) and the compiled op (TensorFlow,
the `sampler_kernel` fixture); and against Keras' own `Conv2D(activation=
"relu")` and `MaxPooling2D(2)` layers. Then what is particular to the
compiled op: that it runs where it applies and steps aside elsewhere,
ties, determinism, second derivatives and bad shapes."""

import keras
import numpy as np
import pytest
from testing import native_sampler_unavailable

from cram_keras.ops import conv_relu_max_pool

# (batch, height, width, kernel height, kernel width, filters): odd sizes
# (the last row and column of an odd map are not pooled), filters that are
# and are not a multiple of 8, non-square kernels, maps too small to pool,
# an empty batch.
SHAPES = [
    (3, 13, 11, 3, 3, 20),
    (2, 20, 18, 3, 3, 32),
    (1, 7, 8, 2, 3, 5),
    (2, 9, 9, 5, 5, 1),
    (1, 12, 10, 3, 3, 33),
    (2, 3, 3, 3, 3, 4),
    (2, 4, 9, 3, 3, 8),
    (0, 10, 10, 3, 3, 8),
]


def numpy_reference(images, kernel, bias, upstream):
    """Values and gradients in float64: the convolution as a sum over taps,
    ReLU, and each pooled value's gradient sent to the first (row-major)
    largest of its window's four convolution outputs."""
    images, kernel, bias, upstream = (
        np.asarray(a, np.float64) for a in (images, kernel, bias, upstream)
    )
    batch, height, width, _ = images.shape
    kh, kw, _, filters = kernel.shape
    ch, cw = height - kh + 1, width - kw + 1
    ph, pw = upstream.shape[1:3]
    taps = [(dy, dx) for dy in range(kh) for dx in range(kw)]
    patches = np.stack(
        [images[:, dy : dy + ch, dx : dx + cw, 0] for dy, dx in taps], axis=-1
    )  # (B, ch, cw, taps)
    z = np.einsum("byxt,tf->byxf", patches, kernel.reshape(len(taps), filters))
    windows = (
        z[:, : 2 * ph, : 2 * pw]
        .reshape(batch, ph, 2, pw, 2, filters)
        .transpose(0, 1, 3, 2, 4, 5)
        .reshape(batch, ph, pw, 4, filters)
    )
    which = windows.argmax(axis=3)  # the first of equal ones
    best = np.take_along_axis(windows, which[:, :, :, None], axis=3)[:, :, :, 0]
    pooled = np.maximum(best + bias, 0.0)
    gz = np.where(pooled > 0, upstream, 0.0)
    dz = np.zeros_like(z)
    for q in range(4):
        qy, qx = divmod(q, 2)
        dz[:, qy : 2 * ph : 2, qx : 2 * pw : 2] += np.where(which == q, gz, 0.0)
    grad_kernel = np.einsum("byxt,byxf->tf", patches, dz).reshape(kernel.shape)
    grad_bias = dz.sum(axis=(0, 1, 2))
    grad_images = np.zeros_like(images)
    for t, (dy, dx) in enumerate(taps):
        grad_images[:, dy : dy + ch, dx : dx + cw, 0] += (
            dz @ kernel.reshape(len(taps), filters)[t]
        )
    return pooled, grad_images, grad_kernel, grad_bias


def values_and_gradients(fn, images, kernel, bias, upstream):
    """fn's output and the gradients of sum(output * upstream) with respect
    to the images, kernel and bias, as NumPy arrays (TensorFlow or JAX)."""
    if keras.backend.backend() == "jax":
        import jax

        def loss(images, kernel, bias):
            out = fn(images, kernel, bias)
            return (out * upstream).sum(), out

        (_, out), grads = jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True)(
            images, kernel, bias
        )
        return [np.asarray(out)] + [np.asarray(g) for g in grads]
    import tensorflow as tf

    args = [tf.constant(a) for a in (images, kernel, bias)]
    with tf.GradientTape() as tape:
        tape.watch(args)
        out = fn(*args)
    grads = tape.gradient(out, args, output_gradients=tf.constant(upstream))
    return [out.numpy()] + [g.numpy() for g in grads]


def case(shape, seed=0):
    batch, height, width, kh, kw, filters = shape
    rng = np.random.default_rng(seed)
    images = rng.standard_normal((batch, height, width, 1)).astype(np.float32)
    kernel = rng.standard_normal((kh, kw, 1, filters)).astype(np.float32)
    bias = (0.5 * rng.standard_normal(filters)).astype(np.float32)
    pooled = (batch, (height - kh + 1) // 2, (width - kw + 1) // 2, filters)
    upstream = rng.standard_normal(pooled).astype(np.float32)
    return images, kernel, bias, upstream


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_values_and_gradients_match_numpy(sampler_kernel, shape):
    if (
        shape[0] == 0
        and sampler_kernel == "keras_ops"
        and keras.backend.backend() == "tensorflow"
    ):
        pytest.skip(
            "TensorFlow's oneDNN max-pooling gradient fails on an empty batch "
            "(Keras' MaxPooling2D as well); the compiled op takes one"
        )
    images, kernel, bias, upstream = case(shape)
    expected = numpy_reference(images, kernel, bias, upstream)
    got = values_and_gradients(conv_relu_max_pool, images, kernel, bias, upstream)
    for name, a, b in zip(
        ("values", "images", "kernel", "bias"), got, expected, strict=True
    ):
        assert a.shape == b.shape, name
        scale = max(1.0, float(np.abs(b).max(initial=0.0)))
        np.testing.assert_allclose(a, b, rtol=0, atol=2e-5 * scale, err_msg=name)
    if upstream.size and expected[2].any():
        assert np.abs(got[2]).max() > 0


def test_it_is_keras_conv2d_with_relu_then_max_pooling(sampler_kernel):
    """The same values as Keras' own layers with the same weights."""
    images, kernel, bias, _ = case((3, 15, 14, 3, 3, 12), seed=1)
    conv = keras.layers.Conv2D(12, 3, activation="relu")
    conv.build((None, 15, 14, 1))
    conv.set_weights([kernel, bias])
    expected = keras.ops.convert_to_numpy(keras.layers.MaxPooling2D(2)(conv(images)))
    got = keras.ops.convert_to_numpy(conv_relu_max_pool(images, kernel, bias))
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)


def test_more_channels_take_the_keras_ops_path(sampler_kernel):
    rng = np.random.default_rng(2)
    images = rng.standard_normal((2, 9, 9, 3)).astype(np.float32)
    kernel = rng.standard_normal((3, 3, 3, 4)).astype(np.float32)
    bias = np.zeros(4, np.float32)
    conv = keras.layers.Conv2D(4, 3, activation="relu")
    conv.build((None, 9, 9, 3))
    conv.set_weights([kernel, bias])
    expected = keras.ops.convert_to_numpy(keras.layers.MaxPooling2D(2)(conv(images)))
    got = keras.ops.convert_to_numpy(conv_relu_max_pool(images, kernel, bias))
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)


# === The compiled op ===

native_only = pytest.mark.skipif(
    native_sampler_unavailable() is not None,
    reason=str(native_sampler_unavailable()),
)


def graph_types(function, *args):
    """Op types of a tf.function's graph, its gradient's functions included."""
    graph = function.get_concrete_function(*args).graph
    types = {op.type for op in graph.get_operations()}
    for inner in graph.as_graph_def().library.function:
        types.update(node.op for node in inner.node_def)
    return types


def graph_op_types(fn, *args, jit_compile=False):
    """Op types of fn's graph with its gradient (TensorFlow)."""
    import tensorflow as tf

    @tf.function(jit_compile=jit_compile)
    def with_gradient(*args):
        with tf.GradientTape() as tape:
            tape.watch(args)
            loss = tf.reduce_sum(tf.square(fn(*args)))
        return tape.gradient(loss, args)

    return graph_types(with_gradient, *[tf.constant(a) for a in args])


@native_only
def test_the_op_runs_where_it_applies_and_not_elsewhere(native):
    images, kernel, bias, _ = case((2, 10, 10, 3, 3, 8))
    fused = {"CramConvReluPool", "CramConvReluPoolGrad"}
    types = graph_op_types(conv_relu_max_pool, images, kernel, bias)
    assert fused <= types and "Conv2D" not in types and "MaxPool" not in types
    with native.native_sampler(False):
        assert not fused & graph_op_types(conv_relu_max_pool, images, kernel, bias)
    # XLA cannot run it; other dtypes and more channels take keras.ops too.
    assert not fused & graph_op_types(
        conv_relu_max_pool, images, kernel, bias, jit_compile=True
    )
    assert not fused & graph_op_types(
        conv_relu_max_pool, *(a.astype(np.float64) for a in (images, kernel, bias))
    )
    three = np.repeat(images, 3, axis=-1)
    assert not fused & graph_op_types(
        conv_relu_max_pool, three, np.repeat(kernel, 3, axis=2), bias
    )


@native_only
def test_ties_send_the_gradient_to_the_first_position(native):
    """A constant image: the four outputs of every window are equal, so each
    pooled value's gradient goes to the window's top-left output."""
    images = np.full((1, 6, 6, 1), 0.5, np.float32)
    kernel = np.full((1, 1, 1, 2), 2.0, np.float32)
    bias = np.array([0.25, -3.0], np.float32)
    upstream = np.ones((1, 3, 3, 2), np.float32)
    values, grad_images, grad_kernel, grad_bias = values_and_gradients(
        conv_relu_max_pool, images, kernel, bias, upstream
    )
    np.testing.assert_array_equal(values[..., 0], 1.25)
    np.testing.assert_array_equal(values[..., 1], 0.0)  # the ReLU is off
    expected = np.zeros((6, 6), np.float32)
    expected[::2, ::2] = 2.0  # filter 0 only
    np.testing.assert_array_equal(grad_images[0, :, :, 0], expected)
    np.testing.assert_array_equal(grad_kernel.ravel(), [9 * 0.5, 0.0])
    np.testing.assert_array_equal(grad_bias, [9.0, 0.0])


@native_only
def test_gradients_are_deterministic(native):
    """The same inputs give the same gradients bit for bit, call after call
    (each image's kernel gradient is summed on its own, then in image
    order)."""
    images, kernel, bias, upstream = case((16, 30, 30, 3, 3, 32), seed=3)
    first = values_and_gradients(conv_relu_max_pool, images, kernel, bias, upstream)
    for _ in range(3):
        again = values_and_gradients(conv_relu_max_pool, images, kernel, bias, upstream)
        for a, b in zip(first, again, strict=True):
            np.testing.assert_array_equal(a, b)


@native_only
def test_second_derivatives_match_the_keras_ops_path(native):
    import tensorflow as tf

    images, kernel, bias, _ = case((2, 11, 12, 3, 3, 10), seed=4)

    def penalty_gradients(images, kernel, bias):
        with tf.GradientTape() as outer:
            outer.watch([images, kernel, bias])
            with tf.GradientTape() as inner:
                inner.watch([images, kernel, bias])
                loss = tf.reduce_sum(tf.sin(conv_relu_max_pool(images, kernel, bias)))
            grads = inner.gradient(loss, [images, kernel, bias])
            penalty = sum(tf.reduce_sum(tf.square(g)) for g in grads)
        return outer.gradient(penalty, [images, kernel, bias])

    args = [tf.constant(a) for a in (images, kernel, bias)]
    compiled = tf.function(penalty_gradients)
    assert "CramConvReluPoolGrad" in graph_types(compiled, *args)
    got = compiled(*args)
    with native.native_sampler(False):
        expected = tf.function(penalty_gradients)(*args)
    for a, b in zip(got, expected, strict=True):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-4, atol=1e-4)


@native_only
def test_the_op_refuses_bad_shapes(native):
    import tensorflow as tf

    library = native.load()
    images = np.zeros((2, 8, 8, 1), np.float32)
    kernel = np.zeros((3, 3, 1, 4), np.float32)
    with pytest.raises(
        tf.errors.InvalidArgumentError, match=r"\(batch, height, width, 1\)"
    ):
        library.cram_conv_relu_pool(
            np.zeros((2, 8, 8, 2), np.float32), kernel, np.zeros(4, np.float32)
        )
    with pytest.raises(tf.errors.InvalidArgumentError, match="bias' 4 filters"):
        library.cram_conv_relu_pool(
            images, np.zeros((3, 3, 1, 5), np.float32), np.zeros(4, np.float32)
        )
    pooled, which = library.cram_conv_relu_pool(images, kernel, np.zeros(4, np.float32))
    with pytest.raises(tf.errors.InvalidArgumentError, match="the pooled shape"):
        library.cram_conv_relu_pool_grad(
            images, kernel, np.zeros(4, np.float32), pooled, which,
            np.zeros((2, 2, 3, 4), np.float32),
        )  # fmt: skip
