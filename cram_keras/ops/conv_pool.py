"""A one-channel convolution, its ReLU and a 2x2 max-pooling in one op.

    conv_relu_max_pool(images, kernel, bias)
      == MaxPooling2D(2)(relu(conv(images, kernel, "valid") + bias))

the first layers of RNN-SPN's classifier and localisation networks
(`keras.layers.Conv2D(filters, 3, activation="relu")` on a grey image, then
`keras.layers.MaxPooling2D(2)`). Where the compiled sampler kernel applies
(`cram_keras.ops.native_sampler`: TensorFlow on a CPU, float32, outside
XLA, the same ``CRAM_KERAS_NATIVE_SAMPLER`` setting) and the images have
one channel, one compiled op each way computes it without storing the
full-resolution activations: for each pooled pixel the four convolution
outputs of its window in registers, the largest kept with which one it
was, so the backward pass sends the gradient to that position only, as max
pooling does. Keras' layers write those activations and their gradient,
four times the pooled size, and at RNN-SPN's sizes (300 crops of 50x50, 32
filters) the passes over them are most of the two layers' time. Elsewhere
`reference`, the same layers' `keras.ops`, runs.

The two agree to float32 rounding: the compiled op sums the kernel's taps
in its own order (TensorFlow's convolution in another), and where two
positions of a window are equal both send the gradient to the first
(row-major). Differentiable twice (the second derivative through
`reference`).
"""

from keras import ops

from cram_keras.ops import native_sampler

# The most filters the compiled op takes.
MAX_FILTERS = 2048


def reference(images, kernel, bias):
    """`conv_relu_max_pool` in `keras.ops`, as `Conv2D(activation="relu")`
    and `MaxPooling2D(2)` compute it."""
    x = ops.conv(images, kernel, strides=1, padding="valid")
    x = ops.relu(ops.add(x, bias))
    pooled_h, pooled_w = x.shape[1] // 2, x.shape[2] // 2
    if pooled_h == 0 or pooled_w == 0:
        # A map too small to pool pools to nothing (oneDNN's max-pooling
        # refuses such an input instead).
        return x[:, :pooled_h, :pooled_w, :]
    return ops.max_pool(x, pool_size=2, strides=2, padding="valid")


native_sampler.set_reference("conv_pool", reference)


def fusable(images, kernel):
    """Whether the compiled op can take these shapes: images (B, H, W, 1)
    and a kernel (KH, KW, 1, F) with at most `MAX_FILTERS` filters."""
    return (
        len(images.shape) == 4
        and images.shape[-1] == 1
        and len(kernel.shape) == 4
        and kernel.shape[2] == 1
        and kernel.shape[3] is not None
        and kernel.shape[3] <= MAX_FILTERS
    )


def conv_relu_max_pool(images, kernel, bias):
    """Max-pooling 2x2 (stride 2, "valid") of ``relu(conv(images, kernel) +
    bias)``, the convolution "valid" with stride 1, channels last.

    Args:
        images: (B, H, W, C).
        kernel: (KH, KW, C, F).
        bias: (F,).

    Returns:
        (B, (H - KH + 1) // 2, (W - KW + 1) // 2, F).
    """
    if fusable(images, kernel) and native_sampler.applicable(images, kernel):
        return native_sampler.conv_relu_pool(images, kernel, bias)
    return reference(images, kernel, bias)
