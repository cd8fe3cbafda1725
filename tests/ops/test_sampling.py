"""Tests of cram_keras.ops against a NumPy loop reference and analytic checks.

The reference (`testing.reference_bilinear_sample`) implements PyTorch's
`affine_grid` / `grid_sample` (bilinear) conventions one output pixel at a
time, in float64, independently of the vectorised code under test. Torch's own
numbers are compared in `test_sampling_golden.py`.
"""

import os

import keras
import numpy as np
import pytest
from testing import (
    backend,
    pixel_coordinates,
    reference_affine_grid,
    reference_bilinear_sample,
    supports_float64,
    to_numpy,
    vjp,
)

from cram_keras.ops import (
    affine_grid,
    affine_sample,
    bilinear_sample,
    sampling,
    scale_translate_sample,
)

# Every test runs with the keras.ops sampler and the compiled kernel.
pytestmark = pytest.mark.usefixtures("sampler_kernel")

# Most tests share these shapes (and the golden file's): on the JAX backend,
# eager ops compile once per shape, so fewer shapes make a faster run.
IN_SIZE, OUT_SIZE = (5, 6), (4, 5)


def random_theta(rng, batch, jitter=0.3):
    base = np.array([[0.9, 0.15, 0.1], [-0.2, 0.8, -0.05]])
    return (base + rng.uniform(-jitter, jitter, (batch, 2, 3))).astype(np.float32)


def random_images(rng, batch=2, size=IN_SIZE, channels=3, dtype=np.float32):
    return rng.random((batch, *size, channels)).astype(dtype)


# === Backend check (tests/test_jax_backend.py runs this file under JAX) ===


def test_backend_matches_environment():
    assert backend() == os.environ["KERAS_BACKEND"]


# === Values ===


@pytest.mark.parametrize("align_corners", [False, True])
@pytest.mark.parametrize("out_size", [OUT_SIZE, (1, 3), (3, 1)])
def test_affine_grid_matches_reference(align_corners, out_size):
    theta = random_theta(np.random.default_rng(0), 2)
    grid = to_numpy(affine_grid(theta, out_size, align_corners=align_corners))
    expected = reference_affine_grid(theta, *out_size, align_corners)
    assert grid.shape == (2, *out_size, 2)
    assert grid.dtype == np.float32
    np.testing.assert_allclose(grid, expected, atol=1e-6)


@pytest.mark.parametrize("align_corners", [False, True])
@pytest.mark.parametrize("padding", ["zeros", "border"])
@pytest.mark.parametrize("channels", [1, 3])
def test_bilinear_sample_matches_reference(align_corners, padding, channels):
    rng = np.random.default_rng(1)
    images = random_images(rng, channels=channels)
    # Includes points far outside the image and on its edges.
    grid = rng.uniform(-1.6, 1.6, (2, *OUT_SIZE, 2)).astype(np.float32)
    grid[0, 0, :4] = [[-1.0, -1.0], [1.0, 1.0], [-1.2, 0.3], [0.999, -1.05]]
    output = to_numpy(bilinear_sample(images, grid, padding, align_corners))
    expected = reference_bilinear_sample(images, grid, padding, align_corners)
    assert output.dtype == np.float32
    np.testing.assert_allclose(output, expected, atol=2e-6)


@pytest.mark.parametrize("align_corners", [False, True])
@pytest.mark.parametrize("padding", ["zeros", "border"])
@pytest.mark.parametrize("out_size", [OUT_SIZE, (7, 8), (1, 3)])
def test_affine_sample_matches_reference(align_corners, padding, out_size):
    rng = np.random.default_rng(2)
    images = random_images(rng)
    theta = random_theta(rng, 2, jitter=0.6)
    output = to_numpy(affine_sample(images, theta, out_size, padding, align_corners))
    grid = reference_affine_grid(theta, *out_size, align_corners)
    expected = reference_bilinear_sample(images, grid, padding, align_corners)
    np.testing.assert_allclose(output, expected, atol=2e-6)


@pytest.mark.parametrize("align_corners", [False, True])
@pytest.mark.parametrize("size", [IN_SIZE, (7, 9), (1, 4), (3, 1)])
def test_affine_sample_identity_is_exact(align_corners, size):
    images = random_images(np.random.default_rng(3), size=size)
    theta = np.tile(np.eye(2, 3, dtype=np.float32), (2, 1, 1))
    output = to_numpy(affine_sample(images, theta, size, align_corners=align_corners))
    np.testing.assert_array_equal(output, images)


@pytest.mark.parametrize("shift", [(2, -1), (-3, 2), (0, 4), (7, 0)])
def test_integer_translation_is_a_shift_with_zero_fill(shift):
    """theta = [[1, 0, 2k/W], [0, 1, 2m/H]] samples pixel (i + m, j + k)."""
    k, m = shift
    height, width = IN_SIZE
    images = random_images(np.random.default_rng(4))
    theta = np.array([[1, 0, 2 * k / width], [0, 1, 2 * m / height]], np.float32)
    theta = np.tile(theta, (2, 1, 1))
    expected = np.zeros_like(images)
    for i in range(height):
        for j in range(width):
            if 0 <= i + m < height and 0 <= j + k < width:
                expected[:, i, j] = images[:, i + m, j + k]
    fused = to_numpy(affine_sample(images, theta, IN_SIZE))
    sampled = to_numpy(bilinear_sample(images, affine_grid(theta, IN_SIZE), "zeros"))
    np.testing.assert_allclose(fused, expected, atol=1e-6)
    np.testing.assert_allclose(sampled, expected, atol=1e-6)


def test_float16_images_are_sampled_in_float16():
    rng = np.random.default_rng(5)
    images = random_images(rng)
    theta = random_theta(rng, 2)
    output16 = affine_sample(images.astype(np.float16), theta, OUT_SIZE)
    output32 = affine_sample(images, theta, OUT_SIZE)
    assert keras.backend.standardize_dtype(output16.dtype) == "float16"
    np.testing.assert_allclose(to_numpy(output16), to_numpy(output32), atol=2e-3)


# === Gradients ===


def _fd_dtype():
    return np.float64 if supports_float64() else np.float32


def _crosses_a_pixel_centre(theta, eps, align_corners):
    """Whether a step of +-eps in any entry of theta moves a sampling point
    across a pixel centre (a kink of bilinear interpolation)."""
    for k in range(6):
        step = np.zeros(6)
        step[k] = eps
        lo, hi = (
            np.floor(
                pixel_coordinates(
                    theta + sign * step.reshape(2, 3),
                    *IN_SIZE,
                    *OUT_SIZE,
                    align_corners,
                )
            )
            for sign in (-1, 1)
        )
        if not (np.array_equal(lo[0], hi[0]) and np.array_equal(lo[1], hi[1])):
            return True
    return False


def smooth_point(rng, eps, align_corners):
    """A theta where central differences with step eps are exact up to
    rounding: inside one pixel cell the output is a quadratic function of
    theta, and no sampling point leaves its cell within the step."""
    for _ in range(50):
        # A zoom that keeps some samples inside and pushes some outside.
        theta = np.array([[1.1, 0.2, 0.13], [-0.15, 0.9, -0.21]]) + rng.uniform(
            -0.05, 0.05, (2, 2, 3)
        )
        if not _crosses_a_pixel_centre(theta, eps, align_corners):
            return theta
    raise AssertionError("no theta without a kink within the FD step")


@pytest.mark.parametrize("op", ["affine_sample", "bilinear_sample"])
@pytest.mark.parametrize("align_corners", [False, True])
@pytest.mark.parametrize("padding", ["zeros", "border"])
def test_theta_gradient_matches_finite_differences(op, align_corners, padding):
    dtype = _fd_dtype()
    eps = 1e-6 if dtype == np.float64 else 1e-3
    rng = np.random.default_rng(6)
    images = random_images(rng, dtype=dtype)
    theta = smooth_point(rng, eps, align_corners)
    cotangent = rng.standard_normal((2, *OUT_SIZE, 3)).astype(dtype)

    def fn(theta):
        if op == "affine_sample":
            return affine_sample(images, theta, OUT_SIZE, padding, align_corners)
        grid = affine_grid(theta, OUT_SIZE, align_corners)
        return bilinear_sample(images, grid, padding, align_corners)

    _, (grad,) = vjp(fn, [theta.astype(dtype)], cotangent)
    numeric = np.zeros_like(theta)
    for index in np.ndindex(*theta.shape):
        step = np.zeros_like(theta)
        step[index] = eps
        plus = to_numpy(fn((theta + step).astype(dtype))).astype(np.float64)
        minus = to_numpy(fn((theta - step).astype(dtype))).astype(np.float64)
        numeric[index] = np.sum((plus - minus) * cotangent) / (2 * eps)
    tolerance = 1e-6 if dtype == np.float64 else 1e-2
    np.testing.assert_allclose(grad, numeric, rtol=tolerance, atol=tolerance)


@pytest.mark.parametrize("padding", ["zeros", "border"])
def test_image_gradient_matches_finite_differences(padding):
    dtype = _fd_dtype()
    rng = np.random.default_rng(7)
    images = random_images(rng, dtype=dtype)
    grid = rng.uniform(-1.3, 1.3, (2, *OUT_SIZE, 2)).astype(dtype)
    cotangent = rng.standard_normal((2, *OUT_SIZE, 3)).astype(dtype)

    def fn(images):
        return bilinear_sample(images, grid, padding)

    _, (grad,) = vjp(fn, [images], cotangent)
    # The output is linear in the images, so any step is exact up to
    # rounding; check directional derivatives along random directions.
    for direction in rng.standard_normal((3, *images.shape)).astype(dtype):
        plus = to_numpy(fn(images + direction)).astype(np.float64)
        minus = to_numpy(fn(images - direction)).astype(np.float64)
        numeric = np.sum((plus - minus) * cotangent) / 2
        analytic = np.sum(grad.astype(np.float64) * direction)
        np.testing.assert_allclose(analytic, numeric, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("op", ["affine_sample", "bilinear_sample"])
@pytest.mark.parametrize("padding", ["zeros", "border"])
@pytest.mark.parametrize("align_corners", [False, True])
def test_image_gradient_is_the_adjoint(op, padding, align_corners):
    """<S x, y> == <x, S^T y>, with S^T y the VJP wrt the images."""
    rng = np.random.default_rng(8)
    x = rng.standard_normal((2, *IN_SIZE, 3)).astype(np.float32)
    y = rng.standard_normal((2, *OUT_SIZE, 3)).astype(np.float32)
    theta = random_theta(rng, 2, jitter=0.7)

    def sample(images):
        if op == "affine_sample":
            return affine_sample(images, theta, OUT_SIZE, padding, align_corners)
        grid = affine_grid(theta, OUT_SIZE, align_corners)
        return bilinear_sample(images, grid, padding, align_corners)

    sx, (sty,) = vjp(sample, [x], y)
    lhs = np.sum(sx.astype(np.float64) * y)
    rhs = np.sum(x.astype(np.float64) * sty)
    np.testing.assert_allclose(lhs, rhs, rtol=1e-5)


def test_grid_gradient_is_zero_outside_the_image():
    rng = np.random.default_rng(9)
    images = random_images(rng)
    grid = rng.uniform(-0.9, 0.9, (2, *OUT_SIZE, 2)).astype(np.float32)
    grid[0, 0, :2] = [[-3.0, 0.0], [0.0, 2.5]]
    _, (grad,) = vjp(
        lambda g: bilinear_sample(images, g), [grid], np.ones((2, *OUT_SIZE, 3))
    )
    np.testing.assert_array_equal(grad[0, 0, :2], 0.0)
    assert np.all(grad[0, 0, 2:] != 0.0)


# === Non-finite and huge inputs ===

BAD_VALUES = [np.nan, np.inf, -np.inf, 1e30, -1e30, 3e38]


@pytest.mark.parametrize("padding", ["zeros", "border"])
def test_bad_theta_gives_finite_outputs_and_gradients(padding):
    """Example 0 gets one bad entry or a whole bad matrix; example 1 is
    untouched and must come out right."""
    rng = np.random.default_rng(10)
    images = random_images(rng)
    cotangent = rng.standard_normal((2, *OUT_SIZE, 3)).astype(np.float32)
    clean = random_theta(rng, 2)
    grid = reference_affine_grid(clean[1:], *OUT_SIZE, False)
    expected = reference_bilinear_sample(images[1:], grid, padding, False)

    def fused(images, theta):
        return affine_sample(images, theta, OUT_SIZE, padding)

    def composed(images, theta):
        return bilinear_sample(images, affine_grid(theta, OUT_SIZE), padding)

    for k, bad in enumerate(BAD_VALUES):
        for whole in (False, True):
            theta = clean.copy()
            if whole:
                theta[0] = bad
            else:
                theta[0, k % 2, k % 3] = bad
            for fn in (fused, composed):
                output, grads = vjp(fn, [images, theta], cotangent)
                assert np.all(np.isfinite(output))
                assert all(np.all(np.isfinite(g)) for g in grads)
                np.testing.assert_allclose(output[1:], expected, atol=2e-6)


@pytest.mark.parametrize("padding", ["zeros", "border"])
def test_bad_grid_gives_finite_outputs_and_gradients(padding):
    rng = np.random.default_rng(11)
    images = random_images(rng)
    grid = rng.uniform(-1, 1, (2, *OUT_SIZE, 2)).astype(np.float32)
    for k, bad in enumerate(BAD_VALUES):
        grid[0, 0, k % OUT_SIZE[1], k % 2] = bad  # one coordinate bad
        grid[1, k % OUT_SIZE[0], k % OUT_SIZE[1]] = bad  # both coordinates bad
    output, (grad_images, grad_grid) = vjp(
        lambda i, g: bilinear_sample(i, g, padding),
        [images, grid],
        np.ones((2, *OUT_SIZE, 3), np.float32),
    )
    assert np.all(np.isfinite(output))
    assert np.all(np.isfinite(grad_images)) and np.all(np.isfinite(grad_grid))
    both_bad = np.all(~np.isfinite(grid[1]) | (np.abs(grid[1]) > 1e29), axis=-1)
    assert both_bad.sum() == len(BAD_VALUES)
    np.testing.assert_array_equal(grad_grid[1][both_bad], 0.0)
    if padding == "zeros":
        # A point with both coordinates bad lies outside the image.
        np.testing.assert_array_equal(output[1][both_bad], 0.0)


# === scale_translate_sample: separable (matmul) and gather paths ===


@pytest.fixture(params=["separable", "gather"])
def path(request, monkeypatch):
    """Forces one of scale_translate_sample's two implementations."""
    cost = 10**9 if request.param == "separable" else -1
    monkeypatch.setattr(sampling, "SEPARABLE_MAX_COST", cost)
    return request.param


def scale_translate_theta(params):
    sx, sy, tx, ty = np.asarray(params, np.float64).T
    zero = np.zeros_like(sx)
    return np.stack([sx, zero, tx, zero, sy, ty], -1).reshape(-1, 2, 3)


def random_scale_translate(rng, batch):
    params = np.array([0.7, 0.9, 0.1, -0.2]) + rng.uniform(-0.4, 0.4, (batch, 4))
    return params.astype(np.float32)


@pytest.mark.parametrize("align_corners", [False, True])
@pytest.mark.parametrize("padding", ["zeros", "border"])
@pytest.mark.parametrize("out_size", [OUT_SIZE, (7, 8), (1, 3), (3, 1)])
def test_scale_translate_sample_matches_reference(
    path, align_corners, padding, out_size
):
    rng = np.random.default_rng(14)
    images = random_images(rng)
    params = random_scale_translate(rng, 2)
    params[1] = [1.6, 1.3, 1.2, -0.9]  # partly outside the image
    output = scale_translate_sample(images, params, out_size, padding, align_corners)
    grid = reference_affine_grid(
        scale_translate_theta(params), *out_size, align_corners
    )
    expected = reference_bilinear_sample(images, grid, padding, align_corners)
    np.testing.assert_allclose(to_numpy(output), expected, atol=2e-6)


@pytest.mark.parametrize("align_corners", [False, True])
@pytest.mark.parametrize("padding", ["zeros", "border"])
def test_scale_translate_sample_takes_one_scale_for_both_axes(
    path, align_corners, padding
):
    """params (B, 3) = (s, tx, ty) is (s, s, tx, ty): values against the
    reference, gradients against the (B, 4) form's chain rule. The params
    keep every sampling point off pixel centres (kinks, where the one-sided
    gradient would depend on the last bit of the coordinate)."""
    rng = np.random.default_rng(15)
    images = random_images(rng)
    params3 = np.array([[0.83, 0.13, -0.23], [1.4, 1.1, -0.95]], np.float32)
    params4 = params3[:, [0, 0, 1, 2]]
    out_size = (5, 4)
    expected = reference_bilinear_sample(
        images,
        reference_affine_grid(scale_translate_theta(params4), *out_size, align_corners),
        padding,
        align_corners,
    )
    cotangent = rng.standard_normal((2, *out_size, images.shape[-1])).astype(np.float32)
    output, (grad_images, grad3) = vjp(
        lambda i, p: scale_translate_sample(i, p, out_size, padding, align_corners),
        [images, params3],
        cotangent,
    )
    _, (grad_images4, grad4) = vjp(
        lambda i, p: scale_translate_sample(i, p, out_size, padding, align_corners),
        [images, params4],
        cotangent,
    )
    np.testing.assert_allclose(output, expected, atol=2e-6)
    np.testing.assert_allclose(grad_images, grad_images4, rtol=1e-5, atol=1e-6)
    chained = np.stack([grad4[:, 0] + grad4[:, 1], grad4[:, 2], grad4[:, 3]], -1)
    np.testing.assert_allclose(grad3, chained, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("align_corners", [False, True])
@pytest.mark.parametrize("size", [IN_SIZE, (7, 9), (1, 4), (3, 1)])
def test_scale_translate_sample_identity_is_exact(path, align_corners, size):
    images = random_images(np.random.default_rng(15), size=size)
    params = np.tile(np.array([1, 1, 0, 0], np.float32), (2, 1))
    output = scale_translate_sample(images, params, size, align_corners=align_corners)
    np.testing.assert_array_equal(to_numpy(output), images)


@pytest.mark.parametrize("align_corners", [False, True])
@pytest.mark.parametrize("padding", ["zeros", "border"])
def test_scale_translate_params_gradient_matches_finite_differences(
    path, align_corners, padding
):
    dtype = _fd_dtype()
    eps = 1e-6 if dtype == np.float64 else 1e-3
    rng = np.random.default_rng(16)
    images = random_images(rng, dtype=dtype)
    cotangent = rng.standard_normal((2, *OUT_SIZE, 3)).astype(dtype)
    for _ in range(50):
        params = np.array([1.1, 0.9, 0.13, -0.21]) + rng.uniform(-0.05, 0.05, (2, 4))
        theta = scale_translate_theta(params)
        if not _crosses_a_pixel_centre(theta, eps * 2, align_corners):
            break

    def fn(params):
        return scale_translate_sample(images, params, OUT_SIZE, padding, align_corners)

    _, (grad,) = vjp(fn, [params.astype(dtype)], cotangent)
    numeric = np.zeros_like(params)
    for index in np.ndindex(*params.shape):
        step = np.zeros_like(params)
        step[index] = eps
        plus = to_numpy(fn((params + step).astype(dtype))).astype(np.float64)
        minus = to_numpy(fn((params - step).astype(dtype))).astype(np.float64)
        numeric[index] = np.sum((plus - minus) * cotangent) / (2 * eps)
    tolerance = 1e-6 if dtype == np.float64 else 1e-2
    np.testing.assert_allclose(grad, numeric, rtol=tolerance, atol=tolerance)


@pytest.mark.parametrize("padding", ["zeros", "border"])
@pytest.mark.parametrize("align_corners", [False, True])
def test_scale_translate_image_gradient_is_the_adjoint(path, padding, align_corners):
    rng = np.random.default_rng(17)
    x = rng.standard_normal((2, *IN_SIZE, 3)).astype(np.float32)
    y = rng.standard_normal((2, *OUT_SIZE, 3)).astype(np.float32)
    params = random_scale_translate(rng, 2)
    sx, (sty,) = vjp(
        lambda i: scale_translate_sample(i, params, OUT_SIZE, padding, align_corners),
        [x],
        y,
    )
    lhs = np.sum(sx.astype(np.float64) * y)
    rhs = np.sum(x.astype(np.float64) * sty)
    np.testing.assert_allclose(lhs, rhs, rtol=1e-5)


@pytest.mark.parametrize("padding", ["zeros", "border"])
@pytest.mark.parametrize("align_corners", [False, True])
def test_scale_translate_kinks_follow_torch(monkeypatch, padding, align_corners):
    """On pixel centres and borders (identity, whole-pixel shifts) the
    separable path picks the same one-sided gradients as the gather path,
    whose choices tests/ops/test_sampling_golden.py checks against torch."""
    height, width = IN_SIZE
    rng = np.random.default_rng(18)
    images = random_images(rng)
    cotangent = rng.standard_normal((2, *IN_SIZE, 3)).astype(np.float32)
    step_x = 2 / (width - 1) if align_corners else 2 / width
    step_y = 2 / (height - 1) if align_corners else 2 / height
    params = np.array([[1, 1, 0, 0], [1, 1, 2 * step_x, -step_y]], np.float32)
    results = {}
    for name, cost in (("separable", 10**9), ("gather", -1)):
        monkeypatch.setattr(sampling, "SEPARABLE_MAX_COST", cost)
        results[name] = vjp(
            lambda i, p: scale_translate_sample(i, p, IN_SIZE, padding, align_corners),
            [images, params],
            cotangent,
        )
    (out_s, grads_s), (out_g, grads_g) = results["separable"], results["gather"]
    np.testing.assert_allclose(out_s, out_g, atol=1e-6)
    np.testing.assert_allclose(grads_s[0], grads_g[0], atol=1e-5)
    np.testing.assert_allclose(grads_s[1], grads_g[1], rtol=1e-5, atol=1e-4)


def test_scale_translate_bad_params_give_finite_outputs_and_gradients(path):
    rng = np.random.default_rng(19)
    images = random_images(rng)
    clean = random_scale_translate(rng, 2)
    for k, bad in enumerate(BAD_VALUES):
        params = clean.copy()
        params[0, k % 4] = bad
        params[1] = bad
        for padding in ("zeros", "border"):
            output, grads = vjp(
                lambda i, p, padding=padding: scale_translate_sample(
                    i, p, OUT_SIZE, padding
                ),
                [images, params],
                np.ones((2, *OUT_SIZE, 3), np.float32),
            )
            assert np.all(np.isfinite(output))
            assert all(np.all(np.isfinite(g)) for g in grads)


# === Input validation ===

IMAGES = np.zeros((2, 5, 6, 3), np.float32)
GRID = np.zeros((2, 4, 4, 2), np.float32)
THETA = np.tile(np.eye(2, 3, dtype=np.float32), (2, 1, 1))

BAD_CALLS = {
    "images rank": (
        lambda: bilinear_sample(np.zeros((3, 4), np.float32), GRID),
        r"`images` must be a 4D tensor \(batch, height, width, channels\)\. "
        r"Received: images\.shape=\(3, 4\)",
    ),
    "integer images": (
        lambda: affine_sample(IMAGES.astype(np.int32), THETA, (3, 3)),
        r"`images` must be a floating-point tensor.*Received: images\.dtype=int32",
    ),
    "grid batch": (
        lambda: bilinear_sample(IMAGES, GRID[:1]),
        r"`grid` and `images` must have the same batch size\. "
        r"Received: grid\.shape\[0\]=1, images\.shape\[0\]=2",
    ),
    "grid last dim": (
        lambda: bilinear_sample(IMAGES, np.zeros((2, 4, 4, 3), np.float32)),
        r"`grid` must be a 4D tensor .*Received: grid\.shape=\(2, 4, 4, 3\)",
    ),
    "grid rank": (
        lambda: bilinear_sample(IMAGES, np.zeros((2, 4, 2), np.float32)),
        r"`grid` must be a 4D tensor .*Received: grid\.shape=\(2, 4, 2\)",
    ),
    "theta shape": (
        lambda: affine_grid(np.zeros((2, 3, 3), np.float32), (3, 3)),
        r"`theta` must be a tensor of shape \(batch, 2, 3\)\. "
        r"Received: theta\.shape=\(2, 3, 3\)",
    ),
    "theta batch": (
        lambda: affine_sample(IMAGES, THETA[:1], (3, 3)),
        r"`theta` and `images` must have the same batch size\. "
        r"Received: theta\.shape\[0\]=1, images\.shape\[0\]=2",
    ),
    "padding": (
        lambda: bilinear_sample(IMAGES, GRID, padding="reflection"),
        r"`padding` must be one of \('zeros', 'border'\)\. "
        r"Received: padding='reflection'",
    ),
    "output size": (
        lambda: affine_grid(THETA, (0, 3)),
        r"`output_size` must be a tuple of two positive ints \(height, width\)\. "
        r"Received: output_size=\(0, 3\)",
    ),
    "align_corners": (
        lambda: affine_grid(THETA, (3, 3), align_corners="yes"),
        r"`align_corners` must be a bool\. Received: align_corners='yes'",
    ),
    "images without height": (
        lambda: affine_sample(IMAGES[:, :0], THETA, (3, 3)),
        r"`images` must have a height, width and channels of at least 1: "
        r"there is nothing to sample from an empty image\. "
        r"Received: images\.shape=\(2, 0, 6, 3\)",
    ),
    "images without width": (
        lambda: bilinear_sample(IMAGES[:, :, :0], GRID),
        r"Received: images\.shape=\(2, 5, 0, 3\)",
    ),
    "images without channels": (
        lambda: scale_translate_sample(
            IMAGES[..., :0], np.ones((2, 3), np.float32), (3, 3)
        ),
        r"`images` must have a height, width and channels of at least 1: .*"
        r"Received: images\.shape=\(2, 5, 6, 0\)",
    ),
    "empty grid": (
        lambda: bilinear_sample(IMAGES, GRID[:, :0]),
        r"`grid` must have a height and width of at least 1, as `output_size` "
        r"must\. Received: grid\.shape=\(2, 0, 4, 2\)",
    ),
    "scale_translate params": (
        lambda: scale_translate_sample(IMAGES, np.zeros((2, 5), np.float32), (3, 3)),
        r"`params` must be a float tensor of shape \(batch, 4\) holding "
        r"\(sx, sy, tx, ty\) or \(batch, 3\) holding \(s, tx, ty\)\. "
        r"Received: params\.shape=\(2, 5\)",
    ),
}


@pytest.mark.parametrize("case", list(BAD_CALLS))
def test_bad_input_raises_value_error(case):
    call, match = BAD_CALLS[case]
    with pytest.raises(ValueError, match=match):
        call()


def test_an_empty_batch_gives_empty_outputs_and_gradients():
    """A replica can be handed an empty batch (the last, short batch of a
    distributed epoch): every sampler gives an empty output and gradients
    of the inputs' shapes."""
    images = np.zeros((0, 5, 6, 3), np.float32)
    calls = {
        "affine_sample": (
            lambda x, p: affine_sample(x, p, (3, 4)),
            np.zeros((0, 2, 3), np.float32),
        ),
        "bilinear_sample": (bilinear_sample, np.zeros((0, 3, 4, 2), np.float32)),
        "scale_translate_sample": (
            lambda x, p: scale_translate_sample(x, p, (3, 4)),
            np.zeros((0, 4), np.float32),
        ),
    }
    for name, (fn, second) in calls.items():
        output, grads = vjp(fn, (images, second), np.zeros((0, 3, 4, 3), np.float32))
        assert output.shape == (0, 3, 4, 3), name
        assert [g.shape for g in grads] == [images.shape, second.shape], name


# === Compilation ===


@pytest.mark.parametrize("op", ["affine_sample", "bilinear_sample"])
def test_compiled_matches_eager(op):
    rng = np.random.default_rng(12)
    images = random_images(rng)
    theta = random_theta(rng, 2)

    def fn(images, theta):
        if op == "affine_sample":
            return affine_sample(images, theta, OUT_SIZE)
        return bilinear_sample(images, affine_grid(theta, OUT_SIZE), "border")

    if backend() == "tensorflow":
        import tensorflow as tf

        compiled = tf.function(fn, jit_compile=True)
    elif backend() == "jax":
        import jax

        compiled = jax.jit(fn)
    else:
        pytest.skip(f"no compiler test for backend={backend()!r}")
    np.testing.assert_allclose(
        to_numpy(compiled(images, theta)), to_numpy(fn(images, theta)), atol=1e-6
    )


@pytest.mark.skipif(backend() != "tensorflow", reason="tf.function input_signature")
def test_unknown_batch_size_in_tf_function():
    import tensorflow as tf

    @tf.function(
        input_signature=[
            tf.TensorSpec((None, *IN_SIZE, 3), tf.float32),
            tf.TensorSpec((None, 2, 3), tf.float32),
        ]
    )
    def step(images, theta):
        with tf.GradientTape() as tape:
            tape.watch([images, theta])
            output = affine_sample(images, theta, OUT_SIZE)
        return output, tape.gradient(output, [images, theta])

    rng = np.random.default_rng(13)
    for batch in (1, 4):
        images = random_images(rng, batch=batch)
        theta = random_theta(rng, batch)
        output, grads = step(images, theta)
        grid = reference_affine_grid(theta, *OUT_SIZE, False)
        expected = reference_bilinear_sample(images, grid, "zeros", False)
        np.testing.assert_allclose(output.numpy(), expected, atol=2e-6)
        assert grads[0].shape == images.shape and grads[1].shape == theta.shape
