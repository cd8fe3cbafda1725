"""The inpainter's local and global discriminators (Chung & Cho, 2018,
Section V-B): is the region around the hole, or the whole image, real?

Both are a CNN of 5x5 convolutions of stride 2 ("same" zero padding) and a
2-layer MLP, with batch normalisation and ELU after every layer but the
last, and return logits (no sigmoid): the losses apply the sigmoid inside
`softplus` (binary cross-entropy `from_logits`), which is the paper's sigmoid
output and log-loss computed without overflow or `log(0)`.

Deviations from the released code (docs/deviations.md): the local
discriminator sees a crop *around* the hole (the hole plus a margin,
`crop_size` pixels square, `crop_around_hole`), not exactly the hole, so that
it can judge the seam; the global discriminator scores the *completed* image
(original outside the hole), not the raw generator output (as Iizuka et al.
2017).
"""

import keras
from keras import ops

from cram_keras.layers.conv_blocks import MLP, ConvStack
from cram_keras.utils import check_int_tuple, check_positive_int


def crop_around_hole(images, mask, crop_size):
    """Square crops of side `crop_size` centred on each image's hole.

    The hole is the bounding box `[y0, y1) x [x0, x1)` of the mask pixels
    above 0.5; the crop starts at `(y0 + y1 - crop_size) // 2` (and likewise
    for x), clamped so that the crop stays inside the image. A centred 8x8
    hole (rows 12..19 of 32) with `crop_size=16` gives rows 8..23: 4 pixels
    of context on every side. A mask without a hole gives the centre crop.

    The crop is two one-hot matrix products, so it is exact (pixels are
    copied, not interpolated), differentiable and runs on every backend.

    Args:
        images: float tensor (B, H, W, C).
        mask: float tensor (B, H, W, 1), 1 = hole.
        crop_size: int, side of the crop, at most min(H, W).

    Returns:
        Tensor (B, crop_size, crop_size, C).
    """
    images = ops.convert_to_tensor(images)
    height, width = images.shape[1], images.shape[2]
    if crop_size > height or crop_size > width:
        raise ValueError(
            f"`crop_size` must be at most the image size {height}x{width}. "
            f"Received: crop_size={crop_size}"
        )
    hole = ops.cast(ops.convert_to_tensor(mask)[..., 0] > 0.5, "int32")
    rows = ops.max(hole, axis=2)  # (B, H)
    cols = ops.max(hole, axis=1)  # (B, W)

    def start(present, size):
        first = ops.cast(ops.argmax(present, axis=1), "int32")
        end = size - ops.cast(ops.argmax(ops.flip(present, axis=1), axis=1), "int32")
        return ops.clip((first + end - crop_size) // 2, 0, size - crop_size)

    def selector(begin, size):
        index = ops.expand_dims(begin, 1) + ops.arange(crop_size, dtype="int32")
        return ops.one_hot(index, size, dtype=images.dtype)  # (B, crop, size)

    row_select = selector(start(rows, height), height)
    col_select = selector(start(cols, width), width)
    crops = ops.einsum("bih,bhwc->biwc", row_select, images)
    return ops.einsum("bjw,biwc->bijc", col_select, crops)


class _Discriminator(keras.layers.Layer):
    """What both discriminators are: `ConvStack(filters)` of 5x5 stride-2
    convolutions, then `MLP((units, 1))` to one logit per image."""

    def __init__(self, filters, units, **kwargs):
        super().__init__(**kwargs)
        # === Config ===
        self.filters = check_int_tuple("filters", filters)
        self.units = check_positive_int("units", units)
        # === Layers ===
        self.cnn = ConvStack(
            self.filters, kernel_size=5, strides=2, dtype=self.dtype_policy, name="cnn"
        )
        self.mlp = MLP((self.units, 1), dtype=self.dtype_policy, name="mlp")

    def _build_networks(self, images_shape):
        """Builds the CNN and the MLP for images of `images_shape` (B, H, W, C)."""
        self.cnn.build(images_shape)
        self.mlp.build(self.cnn.compute_output_shape(images_shape))

    def _logits(self, images, training=None):
        """Logits (B, 1) of `images`, as the discriminator sees them."""
        return self.mlp(self.cnn(images, training=training), training=training)

    def get_config(self):
        config = super().get_config()
        config.update(filters=list(self.filters), units=self.units)
        return config


@keras.saving.register_keras_serializable(package="cram_keras")
class LocalDiscriminator(_Discriminator):
    """Local discriminator: is the region around the hole real?

    Paper V-B: a 4-layer CNN (5x5 kernels, stride 2, "same" zero padding)
    and a 2-layer MLP, batch norm + ELU except the last layer. The input is
    the `crop_size` square centred on the hole (`crop_around_hole`): the
    hole plus a margin of context, so that the seam is judged too (the
    released code showed it exactly the hole). Fake: the completed image;
    real: the original.

    Returns logits; `sigmoid(logit)` is the paper's probability of "real".

    Args:
        crop_size: side of the crop (16: an 8x8 hole and a 4-pixel margin).
        filters: filters of the convolutions (`(64, 128, 256, 512)`).
        units: hidden width of the MLP (512).
        **kwargs: base layer keyword arguments.

    Call arguments:
        inputs: `[images, mask]`, (B, H, W, C) and (B, H, W, 1), 1 = hole.
        training: Python bool, batch normalisation mode.

    Returns:
        Logits (B, 1).

    Example:

    >>> d = LocalDiscriminator(crop_size=16)
    >>> d([np.zeros((2, 32, 32, 3)), np.ones((2, 32, 32, 1))]).shape
    (2, 1)
    """

    def __init__(self, crop_size=16, filters=(64, 128, 256, 512), units=512, **kwargs):
        super().__init__(filters, units, **kwargs)
        self.crop_size = check_positive_int("crop_size", crop_size)

    def build(self, input_shape):
        image_shape = tuple(input_shape[0])
        crop_shape = (image_shape[0], self.crop_size, self.crop_size, image_shape[-1])
        self._build_networks(crop_shape)

    def crop(self, images, mask):
        """The discriminator's view: `crop_around_hole(images, mask, crop_size)`."""
        return crop_around_hole(images, mask, self.crop_size)

    def call(self, inputs, training=None):
        images, mask = inputs
        return self._logits(self.crop(images, mask), training=training)

    def compute_output_shape(self, input_shape):
        return (input_shape[0][0], 1)

    def get_config(self):
        config = super().get_config()
        config.update(crop_size=self.crop_size)
        return config


@keras.saving.register_keras_serializable(package="cram_keras")
class GlobalDiscriminator(_Discriminator):
    """Global discriminator: is the whole image real?

    Paper V-B: a 3-layer CNN (5x5 kernels, stride 2, "same" zero padding)
    and a 2-layer MLP, batch norm + ELU except the last layer. Fake: the
    completed image (original outside the hole, as Iizuka et al. 2017; the
    released code scored the raw generator output); real: the original.

    Args:
        filters: filters of the convolutions (`(64, 128, 256)`).
        units: hidden width of the MLP (512).
        **kwargs: base layer keyword arguments.

    Call arguments:
        images: (B, H, W, C), H and W static.
        training: Python bool, batch normalisation mode.

    Returns:
        Logits (B, 1).

    Example:

    >>> GlobalDiscriminator()(np.zeros((2, 32, 32, 3))).shape
    (2, 1)
    """

    def __init__(self, filters=(64, 128, 256), units=512, **kwargs):
        super().__init__(filters, units, **kwargs)

    def build(self, input_shape):
        self._build_networks(tuple(input_shape))

    def call(self, images, training=None):
        return self._logits(images, training=training)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], 1)
