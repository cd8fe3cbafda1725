"""Bilinear sampling at arbitrary pixel coordinates: one gather, one scatter.

The general path behind `bilinear_sample` and `affine_sample`. The image is
padded with a zero border (2 pixels before, 3 after along each axis) and
coordinates are clamped into it, so that every corner index is valid and
corners outside the image read 0: no per-corner masks, and with zeros
padding no gradient mask either (beyond the image both corners are 0).

The four corners (y0x0, y0x1, y1x0, y1x1) of all N = B*h*w output pixels
are stacked along a *leading* axis, (4N,), so that one gather fetches them
all and every other step is elementwise on contiguous (N, C) blocks. The
backward pass is hand-written (`keras.ops.custom_gradient`): the image
gradient is one scalar segment sum, the coordinate gradient reuses the
corners gathered in the forward pass.
"""

from keras import ops

from cram_keras.ops import native_sampler

PAD_BEFORE, PAD_AFTER = 2, 3


def _split_coordinate(coordinate, size, padding):
    """Clamped integer part and fraction of pixel coordinates.

    Zeros padding clamps to [-2, size + 1]: beyond [-1, size] both corners lie
    in the zero border that `sample_pixels` pads around the image, so value
    and slope are 0 there, as in torch. Border padding clamps to
    [0, size - 1] (torch's `border`). NaN goes to the lower bound, so every
    coordinate ends up finite and every index valid.
    """
    low, high = (-2.0, size + 1.0) if padding == "zeros" else (0.0, size - 1.0)
    coordinate = ops.where(ops.isnan(coordinate), low, ops.clip(coordinate, low, high))
    lower = ops.floor(coordinate)
    return coordinate - lower, ops.cast(lower, "int32")


def _border_live(coordinate, size):
    """Border padding: where the output depends on the coordinate. Torch
    counts the clamped region *and* the border itself as clipped (zero
    gradient)."""
    return ops.logical_and(coordinate > 0.0, coordinate < size - 1.0)


def _flat(coordinate, batch):
    """(B, h, w) -> (B, h*w)."""
    return ops.reshape(coordinate, (batch, coordinate.shape[1] * coordinate.shape[2]))


def sample_pixels(images, x, y, padding):
    """Bilinear sampling at pixel coordinates x, y of shape (B, h, w).

    Pixel centres sit at integer coordinates. Returns (B, h, w, C) in the
    images' dtype. The forward pass interpolates as
    `top = v00 + fx * (v01 - v00)` etc., so a zero fraction returns the corner
    value exactly (the identity is bit-exact).

    With the compiled TensorFlow kernel on (`native_sampler`), float32
    inputs outside XLA take that kernel: the same values, one fused op
    each way.
    """
    if native_sampler.applicable(images, x):
        return native_sampler.sample(images, x, y, padding)
    batch = ops.shape(images)[0]
    height, width, channels = images.shape[1], images.shape[2], images.shape[3]
    out_h, out_w = x.shape[1], x.shape[2]
    padded_h = height + PAD_BEFORE + PAD_AFTER
    padded_w = width + PAD_BEFORE + PAD_AFTER
    padded_size = padded_h * padded_w
    dtype = images.dtype
    if isinstance(batch, int) and batch * padded_size * channels >= 2**31:
        raise ValueError(
            "`images` are too large for int32 sampling indices: split the batch. "
            f"Received: images.shape={tuple(images.shape)}"
        )

    def per_pixel(fraction):
        # (B, h*w) -> (N, C), broadcast once here rather than in every op.
        fraction = ops.reshape(ops.cast(fraction, dtype), (-1, 1))
        if channels == 1:
            return fraction
        return ops.broadcast_to(fraction, (ops.shape(fraction)[0], channels))

    def sum_channels(values):
        # (N, C) -> (N,); a matmul is much faster than a reduction over a
        # tiny trailing axis.
        if channels > 1:
            values = ops.matmul(values, ops.ones((channels, 1), dtype))
        return ops.reshape(values, (-1, out_h, out_w))

    @ops.custom_gradient
    def sample(images, x, y):
        # Padding a (B, H, W*C) view is much faster than the 4D tensor.
        padded = ops.pad(
            ops.reshape(images, (-1, height, width * channels)),
            [
                [0, 0],
                [PAD_BEFORE, PAD_AFTER],
                [PAD_BEFORE * channels, PAD_AFTER * channels],
            ],
        )
        # (B, h*w), the size spelled out: an empty batch leaves a -1 undefined.
        fx, x0 = _split_coordinate(_flat(x, batch), width, padding)
        fy, y0 = _split_coordinate(_flat(y, batch), height, padding)
        # Flat index of the top-left corner in the padded image, (N,).
        origin = PAD_BEFORE * padded_w + PAD_BEFORE  # pixel (0, 0)
        offsets = ops.arange(batch, dtype="int32") * padded_size + origin
        i00 = ops.reshape(y0 * padded_w + x0 + ops.expand_dims(offsets, -1), (-1,))
        index = ops.concatenate(
            [i00, i00 + 1, i00 + padded_w, i00 + (padded_w + 1)], axis=0
        )
        if channels == 1:
            corners = ops.take(ops.reshape(padded, (-1,)), index, axis=0)
        else:
            corners = ops.take(ops.reshape(padded, (-1, channels)), index, axis=0)
        corners = ops.reshape(corners, (4, -1, channels))
        v00, v01, v10, v11 = corners[0], corners[1], corners[2], corners[3]
        wx, wy = per_pixel(fx), per_pixel(fy)
        dx_top = v01 - v00
        dx_bottom = v11 - v10
        top = v00 + wx * dx_top
        dy = (v10 + wx * dx_bottom) - top
        output = ops.reshape(top + wy * dy, (-1, out_h, out_w, channels))

        def grad(*args, upstream=None):
            if upstream is None:
                (upstream,) = args
            upstream = ops.reshape(upstream, (-1, channels))
            # Image gradient: one scatter-add of upstream * weight per corner,
            # on scalars (TensorFlow's segment sum is several times faster on
            # scalars than on short rows), so channel-major: (C, 4N) values,
            # segment `c * L + index` in a channel-major padded image.
            row_x = ops.reshape(ops.cast(fx, dtype), (1, -1))
            row_y = ops.reshape(ops.cast(fy, dtype), (1, -1))
            if channels == 1:
                up = ops.reshape(upstream, (1, -1))
                segments = index
            else:
                up = ops.transpose(upstream)
                segments = ops.concatenate(
                    [index + c * (batch * padded_size) for c in range(channels)],
                    axis=0,
                )
            up_bottom = up * row_y
            up_top = up - up_bottom
            up_01 = up_top * row_x
            up_11 = up_bottom * row_x
            contribution = ops.concatenate(
                [up_top - up_01, up_01, up_bottom - up_11, up_11], axis=-1
            )
            grad_padded = ops.segment_sum(
                ops.reshape(contribution, (-1,)),
                segments,
                num_segments=batch * padded_size * channels,
            )
            if channels > 1:
                grad_padded = ops.transpose(ops.reshape(grad_padded, (channels, -1)))
            grad_padded = ops.reshape(grad_padded, (-1, padded_h, padded_w * channels))
            grad_images = grad_padded[
                :,
                PAD_BEFORE : PAD_BEFORE + height,
                PAD_BEFORE * channels : (PAD_BEFORE + width) * channels,
            ]
            grad_images = ops.reshape(grad_images, (-1, height, width, channels))
            # Coordinate gradients from the corners gathered in the forward pass.
            slope_x = sum_channels(upstream * (dx_top + wy * (dx_bottom - dx_top)))
            slope_y = sum_channels(upstream * dy)
            grad_x = ops.cast(slope_x, x.dtype)
            grad_y = ops.cast(slope_y, y.dtype)
            if padding == "border":
                grad_x = ops.where(_border_live(x, width), grad_x, 0.0)
                grad_y = ops.where(_border_live(y, height), grad_y, 0.0)
            return grad_images, grad_x, grad_y

        return output, grad

    return sample(images, x, y)


# What the compiled kernel's second derivative differentiates.
native_sampler.set_reference("pixels", sample_pixels)
