"""The inpainter's generator `G(z)` (Chung & Cho, 2018, Section V-B):
fractionally-strided 3x3 convolutions of stride 2 from the encoding `z` up to
the image size, output in [0, 1].

Deviation from the released code (docs/deviations.md): the output is in the
image range [0, 1] (sigmoid); the released code's was [0, 2].
"""

import keras
from keras import layers, ops

from cram_keras.layers import batch_normalization
from cram_keras.utils import check_int_tuple, check_positive_int


@keras.saving.register_keras_serializable(package="cram_keras")
class InpaintingGenerator(keras.layers.Layer):
    """CRAM decoder `G(z)`: a DCGAN-style generator from the encoding `z`.

    Paper V-B: fractionally-strided convolutions (3x3 kernel, stride 1/2)
    until the image size is recovered; batch norm + ELU after every layer
    but the last. Here:

        z (B, Z) -> dense(s * s * filters[0]) -> BN -> ELU -> (B, s, s, f0)
        -> [transposed conv 3x3 stride 2 (filters[i]) -> BN -> ELU] i = 1..L-1
        -> transposed conv 3x3 stride 2 (channels) -> sigmoid    (B, H, H, C)

    with `L = len(filters)` upsamplings and `s = image_size / 2**L`. The
    sigmoid puts the output in the image range [0, 1] (the released code's
    output was in [0, 2]). Defaults for 32x32: 4x4x256 -> 8x8x128 ->
    16x16x64 -> 32x32xC.

    Args:
        image_size: side of the square output image (32).
        channels: channels of the output image (3 for SVHN, 1 for MNIST).
        filters: channels of the first feature map and of the hidden
            transposed convolutions (`(256, 128, 64)`); its length is the
            number of upsamplings, so `image_size` must be divisible by
            `2 ** len(filters)`.
        **kwargs: base layer keyword arguments.

    Call arguments:
        z: float tensor (B, Z), the encoding.
        training: Python bool, batch normalisation mode.

    Returns:
        Images (B, image_size, image_size, channels) in [0, 1].

    Example:

    >>> InpaintingGenerator(32, 3)(np.zeros((2, 512), "float32")).shape
    (2, 32, 32, 3)
    """

    def __init__(self, image_size=32, channels=3, filters=(256, 128, 64), **kwargs):
        super().__init__(**kwargs)
        # === Config ===
        self.image_size = check_positive_int("image_size", image_size)
        self.channels = check_positive_int("channels", channels)
        self.filters = check_int_tuple("filters", filters)
        factor = 2 ** len(self.filters)
        if image_size % factor:
            raise ValueError(
                f"`image_size` must be divisible by 2**len(filters) = {factor} "
                f"(one stride-2 upsampling per entry of `filters`). Received: "
                f"image_size={image_size}, filters={self.filters}"
            )
        self.start_size = image_size // factor
        # === Layers ===
        s, f0 = self.start_size, self.filters[0]
        policy = dict(dtype=self.dtype_policy)
        self.project = layers.Dense(
            s * s * f0, use_bias=False, name="project", **policy
        )
        self.project_bn = batch_normalization.BatchNormalization(
            name="project_bn", **policy
        )
        self.reshape = layers.Reshape((s, s, f0), name="reshape", **policy)
        self.upsample = []
        for i, f in enumerate(self.filters[1:]):
            self.upsample.append(
                layers.Conv2DTranspose(
                    f,
                    3,
                    strides=2,
                    padding="same",
                    use_bias=False,
                    name=f"deconv{i}",
                    **policy,
                )
            )
            self.upsample.append(
                batch_normalization.BatchNormalization(name=f"bn{i}", **policy)
            )
        self.to_image = layers.Conv2DTranspose(
            self.channels, 3, strides=2, padding="same", name="to_image", **policy
        )

    def build(self, input_shape):
        if len(input_shape) != 2 or input_shape[-1] is None:
            raise ValueError(
                f"`{self.name}` expects z of shape (batch, features). "
                f"Received: input_shape={tuple(input_shape)}"
            )
        self.project.build(input_shape)
        shape = (input_shape[0], self.start_size**2 * self.filters[0])
        self.project_bn.build(shape)
        shape = self.reshape.compute_output_shape(shape)
        for layer in self.upsample:
            layer.build(shape)
            shape = layer.compute_output_shape(shape)
        self.to_image.build(shape)

    def call(self, z, training=None):
        x = ops.elu(self.project_bn(self.project(z), training=training))
        x = self.reshape(x)
        for layer in self.upsample:
            if isinstance(layer, layers.BatchNormalization):
                x = ops.elu(layer(x, training=training))
            else:
                x = layer(x)
        return ops.sigmoid(self.to_image(x))

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.image_size, self.image_size, self.channels)

    def get_config(self):
        config = super().get_config()
        config.update(
            image_size=self.image_size,
            channels=self.channels,
            filters=list(self.filters),
        )
        return config
