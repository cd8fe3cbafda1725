"""Bilinear sampling of an axis-aligned affine map as two small matmuls.

When `theta = [[sx, 0, tx], [0, sy, ty]]` (CRAM's attention), the x pixel
coordinate of output pixel (i, j) depends on j only and y on i only, and
bilinear sampling separates:

    output[b, i, j, c] = sum_{r, s} Ky[b, i, r] * images[b, r, s, c] * Kx[b, j, s]

with the "tent" matrices `Kx[b, j, s] = max(0, 1 - |x[b, j] - s|)` (B, w, W)
and likewise `Ky` (B, h, H): at most two non-zero entries per row, the
bilinear weights; a corner outside the image simply has no column (zeros
padding). Two batched matmuls replace the gather and the scatter-add, and
the image gradient is their exact transpose, from autodiff. The cost grows
as H*W*h + W*h*w multiply-adds per image and channel, so this pays off for
small images (CRAM's 32x32 glimpses); `sampling.scale_translate_sample`
picks this path or the gather path by that cost.
"""

from keras import ops


def tent_matrix(coordinate, size, padding):
    """Bilinear weights of pixels 0..size-1 at pixel coordinates (B, n).

    Returns (B, n, size). Zeros padding: a coordinate beyond [-1, size] has an
    all-zero row. Border padding: coordinates are clamped to [0, size - 1].
    The gradient wrt `coordinate` follows torch's one-sided conventions: at a
    pixel centre it is the slope towards the next pixel, and with border
    padding the clamped region and the border itself have zero gradient.
    NaN gives a zero row (zeros) or pixel 0 (border), and zero gradient.
    """
    dtype = coordinate.dtype
    positions = ops.arange(size, dtype=dtype)

    @ops.custom_gradient
    def tent(coordinate):
        if padding == "border":
            live = ops.logical_and(coordinate > 0.0, coordinate < size - 1.0)
            clamped = ops.clip(coordinate, 0.0, size - 1.0)
            clamped = ops.where(ops.isnan(coordinate), 0.0, clamped)
        else:
            clamped = ops.clip(coordinate, -2.0, size + 1.0)
            clamped = ops.where(ops.isnan(coordinate), -2.0, clamped)
        distance = ops.expand_dims(clamped, -1) - positions
        weights = ops.relu(1.0 - ops.abs(distance))

        def grad(*args, upstream=None):
            if upstream is None:
                (upstream,) = args
            # d weight / d coordinate: +1 on [-1, 0), -1 on [0, 1), else 0.
            in_support = ops.logical_and(distance >= -1.0, distance < 1.0)
            sign = ops.where(distance < 0.0, 1.0, -1.0)
            slope = ops.cast(ops.where(in_support, sign, 0.0), dtype)
            gradient = ops.sum(ops.cast(upstream, dtype) * slope, axis=-1)
            if padding == "border":
                gradient = ops.where(live, gradient, 0.0)
            return gradient

        return weights, grad

    return tent(coordinate)


def separable_sample(images, x, y, padding):
    """Samples images (B, H, W, C) at x (B, w) and y (B, h): (B, h, w, C)."""
    height, width, channels = images.shape[1], images.shape[2], images.shape[3]
    out_h, out_w = y.shape[1], x.shape[1]
    dtype = images.dtype
    kx = ops.cast(tent_matrix(x, width, padding), dtype)  # (B, w, W)
    ky = ops.cast(tent_matrix(y, height, padding), dtype)  # (B, h, H)
    # Rows first: (B, h, H) @ (B, H, W*C) -> (B, h, W, C).
    rows = ops.matmul(ky, ops.reshape(images, (-1, height, width * channels)))
    rows = ops.reshape(rows, (-1, out_h, width, channels))
    if out_h == 1:
        rows = ops.reshape(rows, (-1, width, channels))
    else:
        rows = ops.reshape(
            ops.transpose(rows, (0, 2, 1, 3)), (-1, width, out_h * channels)
        )
    # Then columns: (B, w, W) @ (B, W, h*C) -> (B, w, h, C) -> (B, h, w, C).
    output = ops.reshape(ops.matmul(kx, rows), (-1, out_w, out_h, channels))
    if out_h == 1 or out_w == 1:
        return ops.reshape(output, (-1, out_h, out_w, channels))
    return ops.transpose(output, (0, 2, 1, 3))
