"""`Conv2D`: Keras' 2-D convolution, without the kernel taps that only ever
meet zero padding.

With `padding="same"` on a small input, some taps of a large kernel fall on
the zero padding at every output position: a 5x5 kernel at stride 2 on a 2x2
map (the local discriminator's last layer) reaches the input with its
central 2x2 taps only. Such a convolution costs what the whole kernel costs,
and oneDNN runs it, and above all its weight gradient, far below the CPU's
speed. This layer convolves with the taps that reach the input (a "valid"
convolution of the cropped kernel on the input padded as needed), and where
the cropped kernel covers the whole input at one output position, as a matrix
product of the flattened input. The outputs are the same sums without the
zero terms (float32 round-off: another summation order), and the gradient of
the unused taps is exactly zero, as before; the kernel keeps its full shape.
Everywhere else (any other padding, dilation, groups, channels first, or an
input whose height or width is not static) it is Keras' layer unchanged.

The class keeps Keras' name on purpose: Keras files a layer's weights under
its class name, so weight files and checkpoints written with
`keras.layers.Conv2D` load into this layer and back.
"""

import keras
from keras import ops


def tap_window(size, kernel, stride):
    """The kernel taps of one axis that reach the input under "same" padding.

    Args:
        size: int, the input's length along the axis.
        kernel: int, the kernel's length.
        stride: int, the stride.

    Returns:
        `(first, stop, pad_before, pad_after)`: taps `first:stop` reach the
        input at some output position; a "valid" convolution of those taps
        over the input padded by `pad_before` and `pad_after` zeros gives the
        same `ceil(size / stride)` outputs as the whole kernel with "same"
        padding.
    """
    outputs = -(-size // stride)
    before = max((outputs - 1) * stride + kernel - size, 0) // 2
    # Output o reads input o * stride + tap - before: tap t reaches the input
    # at some o in [0, outputs) iff 0 <= o * stride + t - before < size.
    first = max(0, before - (outputs - 1) * stride)
    stop = min(kernel, before + size)
    pad_before = before - first
    # Negative only where no tap is cropped (the last window ends early).
    pad_after = max(0, (outputs - 1) * stride + (stop - first) - size - pad_before)
    return first, stop, pad_before, pad_after


@keras.saving.register_keras_serializable(package="cram_keras")
class Conv2D(keras.layers.Conv2D):
    """`keras.layers.Conv2D` that skips the kernel taps that only meet the
    zero padding (see the module docstring).

    Same arguments, weights and results (to float32 round-off) as
    `keras.layers.Conv2D`.
    """

    def _windows(self, inputs):
        """The two axes' `tap_window`s, or `None` where the whole kernel is
        used or the layer is not one this shortcut covers."""
        height, width = inputs.shape[1:3]
        if (
            self.padding != "same"
            or self.data_format != "channels_last"
            or self.groups != 1
            or tuple(self.dilation_rate) != (1, 1)
            or height is None
            or width is None
        ):
            return None
        windows = [
            tap_window(size, kernel, stride)
            for size, kernel, stride in zip(
                (height, width), self.kernel_size, self.strides, strict=True
            )
        ]
        if all(w[:2] == (0, k) for w, k in zip(windows, self.kernel_size, strict=True)):
            return None
        return windows

    def convolution_op(self, inputs, kernel):
        windows = self._windows(inputs)
        if windows is None:
            return super().convolution_op(inputs, kernel)
        (top, bottom, pad_top, pad_bottom), (left, right, pad_left, pad_right) = windows
        kernel = kernel[top:bottom, left:right]
        height, width, channels = inputs.shape[1:]
        if (bottom - top, right - left) == (height, width) and not (
            pad_top or pad_bottom or pad_left or pad_right
        ):
            # One output position that sees the whole input: a dense layer.
            flat = ops.reshape(inputs, (-1, height * width * channels))
            weights = ops.reshape(kernel, (height * width * channels, self.filters))
            return ops.reshape(ops.matmul(flat, weights), (-1, 1, 1, self.filters))
        if pad_top or pad_bottom or pad_left or pad_right:
            inputs = ops.pad(
                inputs, [(0, 0), (pad_top, pad_bottom), (pad_left, pad_right), (0, 0)]
            )
        return ops.conv(inputs, kernel, strides=list(self.strides), padding="valid")
