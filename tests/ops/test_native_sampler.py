"""The compiled TensorFlow sampler kernel (cram_keras.ops.native_sampler).

Its values and gradients are checked against torch's golden numbers, the
NumPy reference and finite differences by running the whole of
`test_sampling.py`, `test_sampling_golden.py` and
`test_spatial_transformer.py` a second time with the kernel on (the
`sampler_kernel` fixture in `tests/conftest.py`). This file checks what is
particular to the kernel: that it is really the one that runs, where it
steps aside for the keras.ops path, its second derivatives, and how it
fails. How it is chosen by default, built and cached:
`test_native_sampler_default.py`.
"""

import json
import os
import pathlib
import subprocess
import sys

import keras
import numpy as np
import pytest
from testing import native_sampler_unavailable

pytestmark = pytest.mark.skipif(
    native_sampler_unavailable() is not None,
    reason=str(native_sampler_unavailable()),
)

REPO = pathlib.Path(__file__).parents[2]


def op_types(fn, *args):
    """Op types of `fn`'s graph and of its gradient's graph (TensorFlow)."""
    import tensorflow as tf

    args = [tf.constant(a) for a in args]

    @tf.function
    def with_gradient(*args):
        with tf.GradientTape() as tape:
            tape.watch(args)
            loss = tf.reduce_sum(tf.square(fn(*args)))
        return tape.gradient(loss, args)

    graph = with_gradient.get_concrete_function(*args).graph
    types = {op.type for op in graph.get_operations()}
    for function in graph.as_graph_def().library.function:
        types.update(node.op for node in function.node_def)
    return types


def inputs(batch=3, size=(12, 10), channels=2, out=(6, 5), seed=0):
    rng = np.random.default_rng(seed)
    images = rng.random((batch, *size, channels), dtype=np.float32)
    theta = np.tile(
        np.array([[0.7, 0.2, 0.1], [-0.1, 0.8, 0.0]], np.float32), (batch, 1, 1)
    )
    theta = theta + 0.05 * rng.standard_normal(theta.shape).astype(np.float32)
    return images, theta, out


def test_the_kernel_runs_when_on_and_not_when_off(native):
    from cram_keras.ops import (
        affine_grid,
        affine_sample,
        bilinear_sample,
        scale_translate_sample,
    )

    images, theta, out = inputs()
    params = np.array([[0.5, 0.6, 0.1, -0.2]] * 3, np.float32)

    def affine(images, theta):
        return affine_sample(images, theta, out)

    def axis_aligned(images, params):
        return scale_translate_sample(images, params, out)

    def grid(images, theta):
        return bilinear_sample(images, affine_grid(theta, out))

    fused = {"CramTransformSample", "CramTransformSampleGrad"}
    at_pixels = {"CramSampleAtPixels", "CramSampleAtPixelsGrad"}
    for fn, args, ops in (
        (affine, (images, theta), fused),
        (axis_aligned, (images, params), fused),
        (grid, (images, theta), at_pixels),
    ):
        types = op_types(fn, *args)
        assert ops <= types
        with native.native_sampler(False):
            types = op_types(fn, *args)
        assert not any(t.startswith("Cram") for t in types)


@pytest.mark.parametrize("transform", ["affine", "attention", "anisotropic"])
def test_the_layer_is_one_op_each_way(native, transform):
    """The coordinates are computed inside the kernel: the layer's forward
    and backward graph holds the two kernel ops and no coordinate
    arithmetic."""
    from cram_keras.layers import SpatialTransformer

    layer = SpatialTransformer(transform, output_size=(6, 5))
    n = {"affine": 6, "attention": 3, "anisotropic": 4}[transform]
    images = np.random.default_rng(0).random((3, 12, 10, 2), dtype=np.float32)
    params = np.full((3, n), 0.5, np.float32)
    types = op_types(lambda i, p: layer([i, p]), images, params)
    assert {"CramTransformSample", "CramTransformSampleGrad"} <= types
    assert not types & {"MatMul", "BatchMatMulV2", "CramSampleAtPixels", "AddV2"}


def test_xla_functions_take_the_keras_ops_path(native):
    import tensorflow as tf

    from cram_keras.ops import affine_sample

    images, theta, out = inputs()

    def fn(images, theta):
        return affine_sample(images, theta, out)

    compiled = tf.function(fn, jit_compile=True)
    graph = compiled.get_concrete_function(
        tf.constant(images), tf.constant(theta)
    ).graph
    assert not any(op.type.startswith("Cram") for op in graph.get_operations())
    np.testing.assert_allclose(
        compiled(images, theta).numpy(), fn(images, theta).numpy(), atol=1e-6
    )


@pytest.mark.parametrize("dtype", ["float64", "bfloat16", "float16"])
def test_other_dtypes_take_the_keras_ops_path(native, dtype):
    from cram_keras.ops import affine_sample

    images, theta, out = inputs()
    images = keras.ops.cast(images, dtype)
    if dtype == "float64":
        theta = theta.astype(np.float64)

    types = op_types(lambda i, t: affine_sample(i, t, out), images, theta)
    assert not any(t.startswith("Cram") for t in types)


def sample_both(native, images, x, y, padding, cotangent):
    import tensorflow as tf

    from cram_keras.ops.pixel_sampler import sample_pixels

    results = []
    for on in (False, True):
        with native.native_sampler(on):
            args = [tf.constant(a) for a in (images, x, y)]
            with tf.GradientTape() as tape:
                tape.watch(args)
                output = sample_pixels(*args, padding)
            grads = tape.gradient(output, args, output_gradients=cotangent)
            results.append([output.numpy()] + [g.numpy() for g in grads])
    return results


@pytest.mark.parametrize("padding", ["zeros", "border"])
def test_non_finite_and_huge_coordinates_match_the_keras_ops_path(native, padding):
    rng = np.random.default_rng(1)
    images = rng.standard_normal((2, 6, 7, 3)).astype(np.float32)
    x = rng.uniform(-3, 10, (2, 4, 5)).astype(np.float32)
    y = rng.uniform(-3, 9, (2, 4, 5)).astype(np.float32)
    bad = [np.nan, np.inf, -np.inf, 1e30, -1e30, 3.0, 6.0, -1.0, 0.0]
    x[0, 0, :5], y[0, 1, :5] = bad[:5], bad[:5]
    x[1, :2, :] = np.array(bad[4:] * 2, np.float32).reshape(2, 5)
    y[1, 2, :] = bad[4:]
    cotangent = rng.standard_normal((2, 4, 5, 3)).astype(np.float32)
    reference, fused = sample_both(native, images, x, y, padding, cotangent)
    np.testing.assert_array_equal(fused[0], reference[0])  # same arithmetic
    for name, a, b in zip(
        ("grad_images", "grad_x", "grad_y"), fused[1:], reference[1:], strict=True
    ):
        assert np.all(np.isfinite(a)), name
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6, err_msg=name)


@pytest.mark.parametrize("padding", ["zeros", "border"])
def test_broadcast_coordinates_equal_full_coordinates(native, padding):
    """x (B, 1, w) and y (B, h, 1), as an axis-aligned map gives them: the
    values of the full (B, h, w) grids, and their gradients summed over the
    broadcast axis."""
    import tensorflow as tf

    rng = np.random.default_rng(4)
    images = tf.constant(rng.standard_normal((3, 9, 8, 2)).astype(np.float32))
    x = tf.constant(rng.uniform(-3, 10, (3, 1, 6)).astype(np.float32))
    y = tf.constant(rng.uniform(-3, 11, (3, 5, 1)).astype(np.float32))
    cotangent = tf.constant(rng.standard_normal((3, 5, 6, 2)).astype(np.float32))

    def run(broadcast):
        with tf.GradientTape() as tape:
            tape.watch([images, x, y])
            if broadcast:
                output = native.sample(images, x, y, padding)
            else:
                full_x = tf.broadcast_to(x, (3, 5, 6))
                full_y = tf.broadcast_to(y, (3, 5, 6))
                output = native.sample(images, full_x, full_y, padding)
        grads = tape.gradient(output, [images, x, y], output_gradients=cotangent)
        return [output.numpy()] + [g.numpy() for g in grads]

    broadcast, full = run(True), run(False)
    assert broadcast[0].shape == (3, 5, 6, 2)
    assert broadcast[2].shape == (3, 1, 6) and broadcast[3].shape == (3, 5, 1)
    np.testing.assert_array_equal(broadcast[0], full[0])
    for a, b in zip(broadcast[1:], full[1:], strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("padding", ["zeros", "border"])
def test_integer_and_near_integer_coordinates_match_the_keras_ops_path(native, padding):
    """The kernel's own floor (no library call) at the points where a floor
    can go wrong: integers, -0.0, and just either side of an integer, inside,
    on the border and in the zero padding."""
    values = [-3.0, -2.0, -1.5, -1.0, -1e-7, -0.0, 0.0, 1e-7, 0.9999999, 1.0,
              2.5, 5.0, 5.0000005, 6.0, 6.9999995, 7.0, 8.0]  # fmt: skip
    grid = np.array(values, np.float32)
    x = np.broadcast_to(grid, (len(values), len(values)))[None].copy()
    y = x.transpose(0, 2, 1).copy()
    rng = np.random.default_rng(5)
    images = rng.standard_normal((1, 7, 7, 2)).astype(np.float32)
    cotangent = rng.standard_normal((1, *x.shape[1:], 2)).astype(np.float32)
    reference, fused = sample_both(native, images, x, y, padding, cotangent)
    np.testing.assert_array_equal(fused[0], reference[0])
    for a, b in zip(fused[1:], reference[1:], strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)


def test_gradients_are_deterministic(native):
    rng = np.random.default_rng(2)
    images = rng.random((8, 20, 20, 1), dtype=np.float32)
    x = rng.uniform(-2, 21, (8, 15, 15)).astype(np.float32)
    y = rng.uniform(-2, 21, (8, 15, 15)).astype(np.float32)
    cotangent = rng.standard_normal((8, 15, 15, 1)).astype(np.float32)
    first = sample_both(native, images, x, y, "zeros", cotangent)[1]
    second = sample_both(native, images, x, y, "zeros", cotangent)[1]
    for a, b in zip(first, second, strict=True):
        np.testing.assert_array_equal(a, b)


def test_rnn_spn_gradients_match_the_keras_ops_path(native):
    import tensorflow as tf

    from cram_keras.models import RNNSPN

    keras.utils.set_random_seed(0)
    model = RNNSPN(num_steps=3, localization_filters=4, classifier_filters=4,
                   dense_units=8, rnn_units=8)  # fmt: skip
    images = np.random.default_rng(3).random((2, 40, 40, 1), dtype=np.float32)
    model(images)

    def gradients():
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(tf.square(model(images)))
        return loss.numpy(), [
            g.numpy() for g in tape.gradient(loss, model.trainable_weights)
        ]

    loss, fused = gradients()
    with native.native_sampler(False):
        reference_loss, reference = gradients()
    np.testing.assert_allclose(loss, reference_loss, rtol=1e-6)
    for a, b, w in zip(fused, reference, model.trainable_weights, strict=True):
        np.testing.assert_allclose(
            a, b, rtol=1e-4, atol=1e-6 * np.abs(b).max(), err_msg=w.path
        )


@pytest.mark.parametrize("transform", ["grid", "affine", "axis_aligned"])
def test_second_derivatives_match_the_keras_ops_path(native, transform):
    """The gradient of a gradient (a gradient penalty), traced in a
    tf.function: through the kernel's gradient ops (sampling at a grid's
    pixel coordinates; by an affine map's parameters, full coordinates, and
    coordinates broadcast along the rows and columns) it equals the
    keras.ops path's."""
    import tensorflow as tf

    from cram_keras.ops import (
        affine_grid,
        affine_sample,
        bilinear_sample,
        scale_translate_sample,
    )

    images, theta, out = inputs()
    gradient_op = "CramTransformSampleGrad"
    if transform == "grid":
        params, gradient_op = theta, "CramSampleAtPixelsGrad"

        def fn(images, params):
            return bilinear_sample(images, affine_grid(params, out))
    elif transform == "affine":
        params = theta

        def fn(images, params):
            return affine_sample(images, params, out)
    else:
        params = np.array(
            [[0.5, 0.6, 0.1, -0.2], [0.9, 0.4, -0.3, 0.2], [1.1, 0.7, 0.0, 0.1]],
            np.float32,
        )

        def fn(images, params):
            return scale_translate_sample(images, params, out)

    def penalty_gradients(images, params):
        with tf.GradientTape() as outer:
            outer.watch([images, params])
            with tf.GradientTape() as inner:
                inner.watch([images, params])
                loss = tf.reduce_sum(tf.sin(3.0 * fn(images, params)))
            grad_images, grad_params = inner.gradient(loss, [images, params])
            penalty = tf.reduce_sum(tf.square(grad_images)) + tf.reduce_sum(
                tf.square(grad_params)
            )
        return outer.gradient(penalty, [images, params])

    results = []
    for on in (True, False):
        with native.native_sampler(on):
            compiled = tf.function(penalty_gradients)
            args = (tf.constant(images), tf.constant(params))
            results.append([g.numpy() for g in compiled(*args)])
            graph = compiled.get_concrete_function(*args).graph
            types = {op.type for op in graph.get_operations()}
            for function in graph.as_graph_def().library.function:
                types.update(node.op for node in function.node_def)
            assert (gradient_op in types) == on
    for a, b in zip(*results, strict=True):
        assert np.abs(b).max() > 0
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5 * np.abs(b).max())


def test_kernel_refuses_mismatched_shapes(native):
    import tensorflow as tf

    library = native.load()
    images = tf.zeros((2, 5, 5, 1))
    with pytest.raises(tf.errors.InvalidArgumentError, match="x and y must both be"):
        library.cram_sample_at_pixels(
            images, tf.zeros((2, 3, 3)), tf.zeros((2, 3, 4)), padding="zeros"
        )
    with pytest.raises(tf.errors.InvalidArgumentError, match="x and y must both be"):
        library.cram_sample_at_pixels(
            images, tf.zeros((2, 2, 3)), tf.zeros((2, 3, 1)), padding="zeros"
        )
    with pytest.raises(tf.errors.InvalidArgumentError, match="images have batch 2"):
        library.cram_sample_at_pixels(
            images, tf.zeros((3, 3, 3)), tf.zeros((3, 3, 3)), padding="zeros"
        )
    with pytest.raises(tf.errors.InvalidArgumentError, match="upstream must have"):
        library.cram_sample_at_pixels_grad(
            images,
            tf.zeros((2, 3, 3)),
            tf.zeros((2, 3, 3)),
            tf.zeros((2, 3, 3, 2)),
            padding="zeros",
        )


TRANSFORM_PARAMS = {
    "affine": [0.8, 0.1, 0.05, -0.1, 0.9, 0.1],
    "attention": [0.6, 0.1, -0.2],
    "anisotropic": [0.6, 0.8, 0.1, -0.2],
}
IDENTITY = {
    "affine": [1, 0, 0, 0, 1, 0],
    "attention": [1, 0, 0],
    "anisotropic": [1, 1, 0, 0],
}


def layer_both(native, layer, images, params, cotangent):
    """The layer's output and gradients with the keras.ops path and with
    the kernel."""
    import tensorflow as tf

    images, params = tf.constant(images), tf.constant(params)
    results = []
    for on in (False, True):
        with native.native_sampler(on):
            with tf.GradientTape() as tape:
                tape.watch([images, params])
                output = layer([images, params])
            grads = tape.gradient(output, [images, params], output_gradients=cotangent)
        results.append([output.numpy()] + [g.numpy() for g in grads])
    return results


@pytest.mark.parametrize("align_corners", [False, True])
@pytest.mark.parametrize("padding", ["zeros", "border"])
@pytest.mark.parametrize("transform", ["affine", "attention", "anisotropic"])
def test_the_transform_kernel_matches_the_keras_ops_path(
    native, transform, padding, align_corners
):
    """The kernel's own coordinates agree with the keras.ops path's matmuls
    to float32 rounding: values and both gradients, with odd output sizes
    (a pixel on the centre line) and non-square images; the identity
    returns the images bit for bit."""
    from cram_keras.layers import SpatialTransformer

    rng = np.random.default_rng(7)
    images = rng.standard_normal((4, 13, 11, 3)).astype(np.float32)
    base = np.array(TRANSFORM_PARAMS[transform], np.float32)
    params = base + 0.1 * rng.standard_normal((4, base.size)).astype(np.float32)
    layer = SpatialTransformer(
        transform, output_size=(7, 9), padding=padding, align_corners=align_corners
    )
    cotangent = rng.standard_normal((4, 7, 9, 3)).astype(np.float32)
    reference, fused = layer_both(native, layer, images, params, cotangent)
    for name, a, b in zip(
        ("output", "grad_images", "grad_params"), fused, reference, strict=True
    ):
        assert np.abs(b).max() > 0, name
        np.testing.assert_allclose(
            a, b, rtol=1e-5, atol=1e-5 * np.abs(b).max(), err_msg=name
        )

    identity = np.tile(np.array(IDENTITY[transform], np.float32), (4, 1))
    same_size = SpatialTransformer(
        transform, output_size=(13, 11), padding=padding, align_corners=align_corners
    )
    cotangent = rng.standard_normal(images.shape).astype(np.float32)
    _, fused = layer_both(native, same_size, images, identity, cotangent)
    np.testing.assert_array_equal(fused[0], images)


@pytest.mark.parametrize("transform", ["affine", "attention", "anisotropic"])
def test_non_finite_and_huge_params_give_finite_results(native, transform):
    from cram_keras.layers import SpatialTransformer

    rng = np.random.default_rng(8)
    bad = [np.nan, np.inf, -np.inf, 1e30, -1e30]
    n = len(TRANSFORM_PARAMS[transform])
    params = np.tile(
        np.array(TRANSFORM_PARAMS[transform], np.float32), (len(bad) * n, 1)
    )
    for k, value in enumerate(bad * n):
        params[k, k // len(bad)] = value
    images = rng.standard_normal((len(params), 9, 8, 2)).astype(np.float32)
    cotangent = rng.standard_normal((len(params), 4, 5, 2)).astype(np.float32)
    layer = SpatialTransformer(transform, output_size=(4, 5))
    reference, fused = layer_both(native, layer, images, params, cotangent)
    for name, a in zip(("output", "grad_images", "grad_params"), fused, strict=True):
        assert np.all(np.isfinite(a)), name
    # Where a coordinate is not finite it goes to the lower bound on both
    # paths (every bilinear corner in the zero padding).
    np.testing.assert_allclose(fused[0], reference[0], rtol=1e-5, atol=1e-5)


def test_the_transform_kernel_refuses_mismatched_shapes(native):
    import tensorflow as tf

    library = native.load()
    images = tf.zeros((2, 5, 5, 1))
    attrs = dict(output_height=3, output_width=4, padding="zeros")
    with pytest.raises(
        tf.errors.InvalidArgumentError, match=r"params must be \(batch, 3\)"
    ):
        library.cram_transform_sample(
            images, tf.zeros((2, 6)), transform="attention", **attrs
        )
    with pytest.raises(tf.errors.InvalidArgumentError, match="images have batch 2"):
        library.cram_transform_sample(
            images, tf.zeros((3, 6)), transform="affine", **attrs
        )
    with pytest.raises(tf.errors.InvalidArgumentError, match="upstream must have"):
        library.cram_transform_sample_grad(
            images,
            tf.zeros((2, 4)),
            tf.zeros((2, 4, 3, 1)),
            transform="anisotropic",
            **attrs,
        )


def test_saved_model_export_traces_the_keras_ops_path(native, tmp_path):
    import tensorflow as tf

    from cram_keras.layers import SpatialTransformer
    from cram_keras.training.export import InputSpec, export_saved_model

    layer = SpatialTransformer("affine", output_size=(6, 5))
    images, theta, _ = inputs(channels=1)
    params = theta.reshape(-1, 6)
    layer([images, params])
    path = export_saved_model(
        str(tmp_path / "saved"),
        lambda image: layer([image, tf.constant(params)]),
        [InputSpec("image", (12, 10, 1))],
        layer,
    )
    graph = (tmp_path / "saved" / "saved_model.pb").read_bytes()
    assert b"CramSample" not in graph and b"CramTransform" not in graph
    loaded = tf.saved_model.load(path)
    np.testing.assert_allclose(
        loaded.serve(images).numpy(), layer([images, params]).numpy(), atol=1e-6
    )


def test_a_missing_compiler_is_refused_with_what_to_do(monkeypatch, tmp_path):
    from cram_keras.ops import native_sampler

    monkeypatch.setenv(native_sampler.CACHE_VARIABLE, str(tmp_path))
    monkeypatch.setenv("CXX", "no-such-compiler")
    monkeypatch.setitem(native_sampler._state, "library", None)
    monkeypatch.setitem(native_sampler._state, "enabled", False)
    with pytest.raises(native_sampler.NativeSamplerError) as info:
        native_sampler.use_native_sampler()
    message = str(info.value)
    assert "'no-such-compiler' was not found" in message
    assert "CRAM_KERAS_NATIVE_SAMPLER=0" in message
    # A failed switch leaves the keras.ops sampler on.
    assert native_sampler._state["enabled"] is False


def test_the_sources_are_compiled_as_one_translation_unit(monkeypatch, tmp_path):
    """The compiler gets one file that includes every source in order (so
    TensorFlow's headers are parsed once), written outside the cache and
    gone after the build."""
    from cram_keras.ops import native_sampler

    log = tmp_path / "argv.json"
    fake = tmp_path / "fake-cxx"
    fake.write_text(
        f"#!{sys.executable}\n"
        "import json, pathlib, sys\n"
        "units = [a for a in sys.argv[1:] if a.endswith('.cc')]\n"
        f"pathlib.Path({str(log)!r}).write_text(json.dumps(\n"
        "    {'units': units, 'text': [pathlib.Path(u).read_text() for u in units]}))\n"
        "pathlib.Path(sys.argv[sys.argv.index('-o') + 1]).write_bytes(b'library')\n"
    )
    fake.chmod(0o755)
    monkeypatch.setenv("CXX", str(fake))
    monkeypatch.setenv(native_sampler.CACHE_VARIABLE, str(tmp_path / "cache"))
    target = native_sampler.build()
    assert target.read_bytes() == b"library"
    seen = json.loads(log.read_text())
    assert len(seen["units"]) == 1
    unit = pathlib.Path(seen["units"][0])
    assert tmp_path / "cache" not in unit.parents and not unit.parent.exists()
    assert seen["text"][0] == "".join(
        f'#include "{path}"\n' for path in native_sampler._sources()
    )
    assert len(native_sampler._sources()) == 2


def test_a_compiler_error_is_reported(monkeypatch, tmp_path):
    from cram_keras.ops import native_sampler

    broken = tmp_path / "broken.cc"
    broken.write_text("this is not C++;\n")
    # The broken file alone: with the real sources beside it the compiler
    # would compile them all (seconds) before reporting its errors.
    monkeypatch.setattr(native_sampler, "_sources", lambda: (broken,))
    monkeypatch.setenv(native_sampler.CACHE_VARIABLE, str(tmp_path / "cache"))
    monkeypatch.setitem(native_sampler._state, "library", None)
    with pytest.raises(
        native_sampler.NativeSamplerError, match="Compiling the sampler kernel failed"
    ):
        native_sampler.build()
    # No library, whole or half-written, and no temporary file is left.
    kernels = tmp_path / "cache" / "kernels"
    assert kernels.is_dir()
    assert sorted(p.suffix for p in kernels.iterdir()) == [".lock"]


@pytest.mark.parametrize("value", ["yes", "true", "2"])
def test_a_bad_environment_value_names_the_valid_ones(monkeypatch, value):
    from cram_keras.ops import native_sampler

    monkeypatch.setenv(native_sampler.ENV_VAR, value)
    monkeypatch.setitem(native_sampler._state, "enabled", None)
    with pytest.raises(native_sampler.NativeSamplerError) as info:
        native_sampler.is_enabled()
    assert "must be 1" in str(info.value)
    assert f"Received: CRAM_KERAS_NATIVE_SAMPLER={value!r}" in str(info.value)


@pytest.mark.parametrize("value", ["sse", "AVX2", ""])
def test_a_bad_isa_setting_names_the_valid_ones(monkeypatch, tmp_path, value):
    """Checked before anything is built or loaded: forced on, an error; in
    auto mode, one line and the keras.ops path."""
    from cram_keras.ops import native_sampler

    monkeypatch.setenv(native_sampler.ISA_ENV_VAR, value)
    monkeypatch.setenv(native_sampler.CACHE_VARIABLE, str(tmp_path))
    monkeypatch.setitem(native_sampler._state, "library", None)
    monkeypatch.setitem(native_sampler._state, "failure", None)
    with pytest.raises(native_sampler.NativeSamplerError) as info:
        native_sampler.load()
    assert "must be one of avx512, avx2, scalar" in str(info.value)
    assert f"Received: CRAM_KERAS_SAMPLER_ISA={value!r}" in str(info.value)
    assert native_sampler._auto_load() is None
    assert "is not one of avx512, avx2, scalar" in native_sampler._state["failure"]
    assert not (tmp_path / "kernels").exists()  # nothing was built


def test_use_native_sampler_refuses_a_non_bool():
    from cram_keras.ops import native_sampler

    with pytest.raises(TypeError, match="Received: enabled='yes'"):
        native_sampler.use_native_sampler("yes")


def run_python(code, tmp_path, **env):
    environment = dict(os.environ, PYTHONPATH=str(REPO), **env)
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path,
        env=environment, timeout=300,
    )  # fmt: skip


def test_the_build_command_builds_and_checks(tmp_path):
    result = run_python(
        "import sys; from cram_keras.ops.native.__main__ import main; sys.exit(main([]))",
        tmp_path,
        CRAM_KERAS_CACHE=str(tmp_path / "cache"),
    )
    assert result.returncode == 0, result.stderr
    assert "it agrees with the keras.ops sampler" in result.stdout
    assert "cram_keras: building the compiled sampler kernel" in result.stderr
    assert len(list((tmp_path / "cache" / "kernels").glob("cram_sampler-tf*.so"))) == 1


# Both op pairs on inputs that reach every branch: widths that are not a
# multiple of 16, one and three channels, coordinates inside, on the border
# and outside the image, both paddings.
BOTH_LOOPS = """
import sys
import numpy as np
import tensorflow as tf
from cram_keras.ops import native_sampler

library = native_sampler.load()
print("loops:", native_sampler.vector_isa())
rng = np.random.default_rng(11)
results = {}
for channels in (1, 3):
    images = tf.constant(rng.standard_normal((3, 13, 21, channels)), tf.float32)
    for padding in ("zeros", "border"):
        x = tf.constant(rng.uniform(-4, 25, (3, 7, 19)), tf.float32)
        y = tf.constant(rng.uniform(-4, 17, (3, 7, 19)), tf.float32)
        up = tf.constant(rng.standard_normal((3, 7, 19, channels)), tf.float32)
        key = f"pixels/{channels}/{padding}"
        results[key + "/output"] = library.cram_sample_at_pixels(images, x, y, padding=padding)
        for name, value in zip(
            ("images", "x", "y"),
            library.cram_sample_at_pixels_grad(images, x, y, up, padding=padding),
        ):
            results[key + "/grad_" + name] = value
        for transform, base in (
            ("affine", [0.9, 0.2, 0.1, -0.1, 1.1, 0.05]),
            ("attention", [0.7, 0.2, -0.3]),
            ("anisotropic", [1.2, 0.6, -0.4, 0.3]),
        ):
            params = tf.constant(
                np.array(base) + 0.2 * rng.standard_normal((3, len(base))), tf.float32
            )
            attrs = dict(transform=transform, output_height=7, output_width=19,
                         padding=padding, align_corners=False)
            key = f"{transform}/{channels}/{padding}"
            results[key + "/output"] = library.cram_transform_sample(images, params, **attrs)
            grads = library.cram_transform_sample_grad(images, params, up, **attrs)
            results[key + "/grad_images"], results[key + "/grad_params"] = grads
np.savez(sys.argv[1], **{k: v.numpy() for k, v in results.items()})
"""


def _vector_isas():
    """The vector loops this CPU runs: AVX2, and AVX-512 where it has it."""
    flags = set(__import__("cram_keras.platform_info").platform_info.cpu_flags())
    avx512 = {"avx512f", "avx512dq", "avx512bw", "avx512vl"} <= flags
    return [isa for isa, has in (("avx2", "avx2" in flags), ("avx512", avx512)) if has]


@pytest.mark.skipif(not _vector_isas(), reason="this CPU has neither AVX2 nor AVX-512")
def test_the_vector_loops_match_the_scalar_loops(native_sampler_cache, tmp_path):
    """The kernel runs the widest vector loops the CPU has (AVX-512, else
    AVX2), else the scalar loops; CRAM_KERAS_SAMPLER_ISA caps them, so a
    fresh process runs each on this CPU: every vector loop gives the scalar
    loops' values and pixel gradients bit for bit, the parameters' gradient
    to its float32 summation order (lanes of partial sums)."""
    script = tmp_path / "both.py"
    script.write_text(BOTH_LOOPS)
    outputs = {}
    for name in ("scalar", *_vector_isas()):
        environment = dict(
            os.environ, PYTHONPATH=str(REPO), CRAM_KERAS_CACHE=str(native_sampler_cache),
            TF_CPP_MIN_LOG_LEVEL="2", CRAM_KERAS_SAMPLER_ISA=name,
        )  # fmt: skip
        path = tmp_path / f"{name}.npz"
        result = subprocess.run(
            [sys.executable, str(script), str(path)], capture_output=True, text=True,
            cwd=tmp_path, env=environment, timeout=300,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr[-3000:]
        assert f"loops: {name}\n" in result.stdout  # not a narrower fallback
        outputs[name] = dict(np.load(path))
    scalar = outputs.pop("scalar")
    for isa, vector in outputs.items():
        assert sorted(vector) == sorted(scalar) and len(vector) == 2 * 2 * (4 + 3 * 3)
        for key, value in vector.items():
            assert np.abs(value).max() > 0, key
            if key.endswith("grad_params"):
                np.testing.assert_allclose(
                    scalar[key], value, rtol=1e-5, atol=1e-6, err_msg=f"{isa} {key}"
                )
            else:
                np.testing.assert_array_equal(
                    scalar[key], value, err_msg=f"{isa} {key}"
                )


def test_on_jax_the_kernel_is_refused_with_what_to_do(tmp_path):
    pytest.importorskip("jax")
    result = run_python(
        "from cram_keras.ops import native_sampler\n"
        "try:\n    native_sampler.use_native_sampler()\n"
        "except native_sampler.NativeSamplerError as e:\n    print(e)\n",
        tmp_path,
        KERAS_BACKEND="jax",
    )
    assert result.returncode == 0, result.stderr
    assert "is a TensorFlow kernel; the Keras backend is 'jax'" in result.stdout


def test_a_script_trains_with_the_kernel(native, monkeypatch, tmp_path, capsys):
    from cram_keras.experiments import cli, rnn_spn

    monkeypatch.setenv(native.ENV_VAR, "1")
    out = tmp_path / "run"
    code = cli.main(rnn_spn.EXPERIMENT, ["--smoke", "--output-dir", str(out)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "note: sampling with the compiled TensorFlow kernel" in captured.err
    assert (out / "metrics.json").exists()
