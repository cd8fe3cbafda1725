"""Differentiable affine grids and bilinear sampling, in PyTorch's convention.

Coordinates are normalised to [-1, 1] with x (width) first, exactly as
`torch.nn.functional.affine_grid` and `torch.nn.functional.grid_sample`
(mode "bilinear"). With `align_corners=False` (the default) -1 and +1 are the
outer *edges* of the border pixels; with `align_corners=True` they are the
*centres* of the border pixels.

Public ops, all built from `keras.ops` so they run on every backend:

- `affine_grid(theta, output_size)`: the (B, h, w, 2) sampling grid of a
  batch of 2x3 affine matrices.
- `bilinear_sample(images, grid)`: samples NHWC images at a grid.
- `affine_sample(images, theta, output_size)`: both at once, computed
  directly in pixel space. Same values as the two above (up to float
  rounding), faster, and the identity matrix reproduces the input bit for
  bit.
- `scale_translate_sample(images, params, output_size)`: the same for the
  axis-aligned maps `[[sx, 0, tx], [0, sy, ty]]` (CRAM's attention), as two
  matmuls on small images.

Sampling coordinates are float32 (float64 when the grid or theta is float64
and the backend keeps float64, i.e. TensorFlow), also when the images are
float16 under mixed precision; pixel values are interpolated in the images'
dtype. Non-finite or huge coordinates are mapped
to a point outside the image (value 0 with zeros padding) and give finite
outputs and zero coordinate gradients.

The general path (`pixel_sampler.sample_pixels`) has a hand-written
backward pass (`keras.ops.custom_gradient`): all four corners are fetched
with a single gather, the image gradient is a single segment sum, and the
coordinate gradient reuses the gathered corners. The separable path is
`separable_sampler.separable_sample`. On TensorFlow (CPU, float32, outside
XLA) a compiled kernel (`native_sampler`, on by default where it builds;
``CRAM_KERAS_NATIVE_SAMPLER=0`` turns it off) replaces both with one fused
pass per direction; the `keras.ops` paths stay the reference and the
fallback.
"""

import numpy as np
from keras import ops

from cram_keras.ops import native_sampler
from cram_keras.ops.pixel_sampler import sample_pixels
from cram_keras.ops.separable_sampler import separable_sample
from cram_keras.utils import check_bool, check_choice

PADDING_MODES = ("zeros", "border")
# `scale_translate_sample` uses two matmuls while they cost at most this many
# multiply-adds per output value (H*W/w + W), else the gather path. Measured
# in docs/sampler.md.
SEPARABLE_MAX_COST = 512


# === Public ops ===


def affine_grid(theta, output_size, align_corners=False):
    """Sampling grid of a batch of affine transforms (PyTorch's convention).

    Equivalent to `torch.nn.functional.affine_grid(theta, (B, C, h, w),
    align_corners=align_corners)`: `grid[b, i, j] = theta[b] @ (x_j, y_i, 1)`
    where `(x_j, y_i)` are the normalised coordinates of output pixel
    `(i, j)`.

    Args:
        theta: float tensor of shape `(batch, 2, 3)`, the affine matrices
            `[[t11, t12, t13], [t21, t22, t23]]` acting on normalised
            coordinates (x first).
        output_size: tuple `(height, width)` of the output grid.
        align_corners: bool. `False`: -1 and 1 are the outer edges of the
            border pixels. `True`: they are the centres of the border pixels.

    Returns:
        Tensor of shape `(batch, height, width, 2)`, last axis `(x, y)`,
        dtype float32 (float64 when `theta` is float64).
    """
    check_bool("align_corners", align_corners)
    out_h, out_w = check_output_size(output_size)
    theta = _check_theta(theta)
    dtype = coordinate_dtype(theta.dtype)
    theta = ops.cast(theta, dtype)
    xs = _normalised_positions(out_w, align_corners)
    ys = _normalised_positions(out_h, align_corners)
    cols, rows = np.meshgrid(xs, ys)
    # (3, h*w) columns (x_j, y_i, 1), torch's base grid; grid = theta @ base.
    # One plain (2B, 3) @ (3, h*w) matmul is faster than a batched one.
    base = np.stack([cols.ravel(), rows.ravel(), np.ones(out_h * out_w)])
    base = ops.convert_to_tensor(base.astype(dtype))
    grid = ops.matmul(ops.reshape(theta, (-1, 3)), base)
    grid = ops.reshape(grid, (-1, 2, out_h, out_w))
    return ops.transpose(grid, (0, 2, 3, 1))


def bilinear_sample(images, grid, padding="zeros", align_corners=False):
    """Bilinear sampling of NHWC images at normalised grid points.

    Same values and gradients (wrt images and grid) as
    `torch.nn.functional.grid_sample(images_nchw, grid, mode="bilinear",
    padding_mode=padding, align_corners=align_corners)`, in NHWC layout.

    Args:
        images: float tensor of shape `(batch, height, width, channels)`.
        grid: float tensor of shape `(batch, out_height, out_width, 2)`,
            normalised coordinates `(x, y)`; (-1, -1) is the top left.
        padding: `"zeros"` (each corner outside the image contributes 0) or
            `"border"` (coordinates are clamped to the image).
        align_corners: bool, see `affine_grid`.

    Returns:
        Tensor of shape `(batch, out_height, out_width, channels)` in the
        dtype of `images`.
    """
    check_choice("padding", padding, PADDING_MODES)
    check_bool("align_corners", align_corners)
    images = check_images(images)
    grid = _check_grid(grid, images)
    height, width = images.shape[1], images.shape[2]
    dtype = coordinate_dtype(grid.dtype)
    grid = ops.cast(grid, dtype)
    x = _unnormalise(grid[..., 0], width, align_corners)
    y = _unnormalise(grid[..., 1], height, align_corners)
    return sample_pixels(images, x, y, padding)


def affine_sample(images, theta, output_size, padding="zeros", align_corners=False):
    """Affine resampling of NHWC images, computed directly in pixel space.

    Same result as `bilinear_sample(images, affine_grid(theta, output_size,
    align_corners), padding, align_corners)` up to float rounding, but no
    normalised grid is built: the pixel coordinates, an affine function of
    the output pixel indices, come from one small matmul per axis with
    precomputed terms. With the identity `theta` and `output_size` equal to
    the input size this gives `x = j, y = i` exactly, and the output equals
    the input bit for bit.

    Args:
        images: float tensor of shape `(batch, height, width, channels)`.
        theta: float tensor of shape `(batch, 2, 3)`, see `affine_grid`.
        output_size: tuple `(out_height, out_width)`.
        padding: `"zeros"` or `"border"`, see `bilinear_sample`.
        align_corners: bool, see `affine_grid`.

    Returns:
        Tensor of shape `(batch, out_height, out_width, channels)` in the
        dtype of `images`.
    """
    images, (out_h, out_w) = _check_resampling(
        images, output_size, padding, align_corners
    )
    theta = _check_theta(theta, images)
    height, width = images.shape[1], images.shape[2]
    dtype = coordinate_dtype(theta.dtype)
    theta = ops.cast(theta, dtype)
    if native_sampler.applicable(images, theta):
        return native_sampler.transform_sample(
            images,
            ops.reshape(theta, (-1, 6)),
            "affine",
            (out_h, out_w),
            padding,
            align_corners,
        )
    x = _affine_pixel_coordinates(theta[:, 0], width, out_h, out_w, align_corners)
    y = _affine_pixel_coordinates(theta[:, 1], height, out_h, out_w, align_corners)
    return sample_pixels(images, x, y, padding)


def scale_translate_sample(
    images, params, output_size, padding="zeros", align_corners=False
):
    """Resampling by an axis-aligned affine map (scale and translation).

    Same result as `affine_sample` with `theta = [[sx, 0, tx], [0, sy, ty]]`
    (CRAM's attention transform) up to float rounding. The map is separable,
    so for small images the sampling runs as two batched matmuls with sparse
    "tent" matrices of bilinear weights (see `separable_sampler`), which is
    much faster than the gather / scatter-add of the general path; for large
    images (more than 512 multiply-adds per output value) it falls back to
    that path. Identity parameters with an output the size of the input
    return the input bit for bit on both paths.

    Args:
        images: float tensor of shape `(batch, height, width, channels)`.
        params: float tensor of shape `(batch, 4)`: `(sx, sy, tx, ty)`, or
            `(batch, 3)`: `(s, tx, ty)` with one scale for both axes.
        output_size, padding, align_corners: see `affine_sample`.

    Returns:
        The resampled images, as `affine_sample`.
    """
    images, (out_h, out_w) = _check_resampling(
        images, output_size, padding, align_corners
    )
    params = ops.convert_to_tensor(params)
    shape = tuple(params.shape)
    if len(shape) != 2 or shape[1] not in (3, 4) or not _is_float(params.dtype):
        raise ValueError(
            "`params` must be a float tensor of shape (batch, 4) holding "
            "(sx, sy, tx, ty) or (batch, 3) holding (s, tx, ty). Received: "
            f"params.shape={shape}, params.dtype={_dtype_name(params.dtype)}"
        )
    _check_batch(shape[0], images.shape[0], "params")
    height, width = images.shape[1], images.shape[2]
    dtype = coordinate_dtype(params.dtype)
    params = ops.cast(params, dtype)
    if native_sampler.applicable(images, params):
        return native_sampler.transform_sample(
            images,
            params,
            "attention" if shape[1] == 3 else "anisotropic",
            (out_h, out_w),
            padding,
            align_corners,
        )
    # x depends on the column j only, y on the row i only: (B, w) and (B, h),
    # each one matmul of the params (no slicing: fewer kernels per call).
    scale_x, scale_y = 0, (1 if shape[1] == 4 else 0)
    shift_x, shift_y = shape[1] - 2, shape[1] - 1
    x = _scale_translate_coordinates(
        params, scale_x, shift_x, width, out_w, align_corners
    )
    y = _scale_translate_coordinates(
        params, scale_y, shift_y, height, out_h, align_corners
    )
    if height * width / out_w + width <= SEPARABLE_MAX_COST:
        return separable_sample(images, x, y, padding)
    x = ops.broadcast_to(ops.expand_dims(x, 1), (ops.shape(x)[0], out_h, out_w))
    y = ops.broadcast_to(ops.expand_dims(y, 2), (ops.shape(y)[0], out_h, out_w))
    return sample_pixels(images, x, y, padding)


# === Coordinates ===


def _transform_sample_keras_ops(
    images, params, transform, output_size, padding, align_corners
):
    """`native_sampler.transform_sample` on the keras.ops path (`params` as
    that function takes them), differentiable again: what the kernel's
    second derivative differentiates."""
    if transform == "affine":
        theta = ops.reshape(params, (-1, 2, 3))
        return affine_sample(images, theta, output_size, padding, align_corners)
    return scale_translate_sample(images, params, output_size, padding, align_corners)


native_sampler.set_reference("transform", _transform_sample_keras_ops)


def coordinate_dtype(dtype):
    """The dtype of sampling coordinates made from values of `dtype`:
    float64 for float64, else float32."""
    return "float64" if _dtype_name(dtype) == "float64" else "float32"


def _dtype_name(dtype):
    return str(getattr(dtype, "name", dtype)).replace("torch.", "")


def _normalised_positions(size, align_corners):
    """Normalised coordinates of the pixel centres along one axis (as torch)."""
    if size <= 1:
        return np.zeros((size,), "float64")
    positions = np.arange(size, dtype="float64")
    if align_corners:
        return positions * (2.0 / (size - 1)) - 1.0
    return (positions * 2.0 + 1.0) / size - 1.0


def _unnormalise(coordinate, size, align_corners):
    """Normalised coordinate -> pixel coordinate (pixel centres at integers).

    Same operations in the same order as torch's CPU grid sampler, so that a
    grid point that torch puts exactly on a pixel centre (a kink of bilinear
    interpolation) lands there here too and gets the same one-sided gradient.
    """
    if align_corners:
        return (coordinate + 1.0) * ((size - 1) / 2.0)
    return (coordinate + 1.0) * (size / 2.0) - 0.5


def _pixel_terms(in_size, out_size, align_corners):
    """How one theta row maps to pixel coordinates, per output index.

    The pixel coordinate along an input axis of extent `in_size` is, for the
    theta row `(t1, t2, t3)` that produces it,
    `t1 * term(in, out_w, j) + t2 * term(in, out_h, i) + t3 * half + offset`
    (torch's unnormalisation of `theta @ (x_j, y_i, 1)`), with
    align_corners=False: `term(in, out, k) = in/out * (k + 1/2) - in/2`,
    `half = in/2`, `offset = in/2 - 1/2`; align_corners=True:
    `term = (in-1)/(out-1) * k - (in-1)/2` (0 when out = 1, as torch puts a
    single pixel at normalised 0), `half = offset = (in-1)/2`.
    Returns `(term(in, out, k) for k in range(out), half, offset)`, computed
    in float64. For the identity (in = out) the terms are half-integers and
    `term + offset = k` exactly, also in float32: the identity is bit-exact.
    """
    k = np.arange(out_size, dtype=np.float64)
    if align_corners:
        half = (in_size - 1) / 2.0
        if out_size == 1:
            return np.zeros(1), half, half
        return (in_size - 1) / (out_size - 1) * k - half, half, half
    return (
        in_size / out_size * (k + 0.5) - in_size / 2.0,
        in_size / 2.0,
        (in_size - 1) / 2.0,
    )


def _affine_pixel_coordinates(row, in_size, out_h, out_w, align_corners):
    """Pixel coordinates (B, h, w) of one theta row (B, 3): one small matmul."""
    across, half, offset = _pixel_terms(in_size, out_w, align_corners)
    down, _, _ = _pixel_terms(in_size, out_h, align_corners)
    cols, rows = np.meshgrid(across, down)
    terms = np.stack([cols.ravel(), rows.ravel(), np.full(out_h * out_w, half)])
    terms = ops.convert_to_tensor(terms.astype(_dtype_name(row.dtype)))
    return ops.reshape(ops.matmul(row, terms) + offset, (-1, out_h, out_w))


def _scale_translate_coordinates(
    params, scale, shift, in_size, out_size, align_corners
):
    """Pixel coordinates (B, out) on one axis, whose scale and shift are
    columns `scale` and `shift` of `params` (B, P)."""
    terms, half, offset = _pixel_terms(in_size, out_size, align_corners)
    matrix = np.zeros((params.shape[1], out_size))
    matrix[scale] = terms
    matrix[shift] = half
    matrix = ops.convert_to_tensor(matrix.astype(_dtype_name(params.dtype)))
    return ops.matmul(params, matrix) + offset


# === Validation ===


def check_output_size(output_size):
    """`output_size` as `(height, width)`; a `ValueError` unless it is two
    positive ints."""
    try:
        out_h, out_w = output_size
        ok = all(
            isinstance(v, int) and not isinstance(v, bool) and v > 0
            for v in (out_h, out_w)
        )
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ValueError(
            "`output_size` must be a tuple of two positive ints (height, width). "
            f"Received: output_size={output_size!r}"
        )
    return int(out_h), int(out_w)


def _check_resampling(images, output_size, padding, align_corners):
    """The arguments `affine_sample` and `scale_translate_sample` share,
    checked in this order: `(images, (out_height, out_width))`."""
    check_choice("padding", padding, PADDING_MODES)
    check_bool("align_corners", align_corners)
    output_size = check_output_size(output_size)
    return check_images(images), output_size


def check_images(images):
    """`images` as a tensor; a `ValueError` unless it is a floating-point
    (batch, height, width, channels) tensor of known height, width and
    channels."""
    images = ops.convert_to_tensor(images)
    if len(images.shape) != 4:
        raise ValueError(
            "`images` must be a 4D tensor (batch, height, width, channels). "
            f"Received: images.shape={tuple(images.shape)}"
        )
    if not _is_float(images.dtype):
        raise ValueError(
            "`images` must be a floating-point tensor; cast integer images "
            f"first, e.g. to float32 in [0, 1]. Received: images.dtype="
            f"{_dtype_name(images.dtype)}"
        )
    if any(d is None for d in images.shape[1:]):
        raise ValueError(
            "`images` must have a known height, width and channels. "
            f"Received: images.shape={tuple(images.shape)}"
        )
    check_not_empty(tuple(images.shape))
    return images


def check_not_empty(images_shape):
    """A `ValueError` unless the (batch, height, width, channels) shape has at
    least one pixel and one channel (PyTorch's `grid_sample` refuses an empty
    height or width too); an empty batch is fine."""
    if 0 in images_shape[1:]:
        raise ValueError(
            "`images` must have a height, width and channels of at least 1: "
            "there is nothing to sample from an empty image. Received: "
            f"images.shape={tuple(images_shape)}"
        )


def _check_grid(grid, images):
    grid = ops.convert_to_tensor(grid)
    shape = tuple(grid.shape)
    if len(shape) != 4 or shape[-1] != 2:
        raise ValueError(
            "`grid` must be a 4D tensor (batch, out_height, out_width, 2) "
            f"holding (x, y). Received: grid.shape={shape}"
        )
    if shape[1] is None or shape[2] is None:
        raise ValueError(
            f"`grid` must have a known height and width. Received: grid.shape={shape}"
        )
    if 0 in shape[1:3]:
        raise ValueError(
            "`grid` must have a height and width of at least 1, as `output_size` "
            f"must. Received: grid.shape={shape}"
        )
    if not _is_float(grid.dtype):
        raise ValueError(
            "`grid` must be a floating-point tensor. "
            f"Received: grid.dtype={_dtype_name(grid.dtype)}"
        )
    _check_batch(shape[0], images.shape[0], "grid")
    return grid


def _check_theta(theta, images=None):
    theta = ops.convert_to_tensor(theta)
    shape = tuple(theta.shape)
    if len(shape) != 3 or shape[1:] != (2, 3):
        raise ValueError(
            "`theta` must be a tensor of shape (batch, 2, 3). "
            f"Received: theta.shape={shape}"
        )
    if not _is_float(theta.dtype):
        raise ValueError(
            "`theta` must be a floating-point tensor. "
            f"Received: theta.dtype={_dtype_name(theta.dtype)}"
        )
    if images is not None:
        _check_batch(shape[0], images.shape[0], "theta")
    return theta


def _check_batch(batch, images_batch, name):
    if batch is not None and images_batch is not None and batch != images_batch:
        raise ValueError(
            f"`{name}` and `images` must have the same batch size. Received: "
            f"{name}.shape[0]={batch}, images.shape[0]={images_batch}"
        )


def _is_float(dtype):
    return _dtype_name(dtype) in ("float16", "bfloat16", "float32", "float64")
