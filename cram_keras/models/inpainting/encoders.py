"""The inpainter's encoders besides `CRAMEncoder` (`cram_keras.models.cram`),
with its call interface (`[images, clue]` -> `z`):

- `CNNEncoder`: the no-attention baseline, a CNN of the occluded image; no
  glimpses, so no clue loss.
- `ContextSkipEncoder`: beyond the paper, a CRAM encoder's `z` concatenated
  with a small `CNNEncoder` of the whole occluded image.
"""

import keras
from keras import layers, ops

from cram_keras.layers.conv_blocks import ConvStack, build_once, deserialize_layers
from cram_keras.utils import check_bool, check_int_tuple, check_positive_int


@keras.saving.register_keras_serializable(package="cram_keras")
class CNNEncoder(keras.layers.Layer):
    """The no-attention baseline encoder: a CNN from the occluded image to `z`.

    Same call interface as `CRAMEncoder` (`[images, clue]` -> `z` of
    `units` features; `return_glimpses=True` -> `(z, None, None)`: no
    glimpses, so no clue loss), so `CRAMInpainter` trains it with the same
    generator, discriminators, losses and budget:

        z = dense(units)(flatten(CNN(images)))                      (B, units)

    CNN: `len(filters)` layers of conv 5x5 stride 2 "same" -> BN -> ELU; the
    dense layer is linear (the last layer of the network). By default the
    clue is ignored (no attention, no clue: the encoder sees the occluded
    image only); `use_clue=True` appends it as an input channel.

    Args:
        units: size of `z` (512, the CRAM core's).
        filters: filters of the convolutions (`(64, 128, 256)`).
        use_clue: bool, append the clue to the image channels.
        **kwargs: base layer keyword arguments.

    Call arguments:
        inputs: `[images, clue]`, (B, H, W, C) and (B, H, W, 1).
        training: Python bool, batch normalisation mode.
        return_glimpses: bool, return `(z, None, None)` like `CRAMEncoder`.

    Returns:
        `z` (B, units), or `(z, None, None)`.

    Example:

    >>> enc = CNNEncoder(units=64)
    >>> enc([np.zeros((2, 32, 32, 3)), np.zeros((2, 32, 32, 1))]).shape
    (2, 64)
    """

    def __init__(self, units=512, filters=(64, 128, 256), use_clue=False, **kwargs):
        super().__init__(**kwargs)
        # === Config ===
        self.units = check_positive_int("units", units)
        self.filters = check_int_tuple("filters", filters)
        self.use_clue = check_bool("use_clue", use_clue)
        # === Layers ===
        self.cnn = ConvStack(
            self.filters, kernel_size=5, strides=2, dtype=self.dtype_policy, name="cnn"
        )
        self.head = layers.Dense(self.units, dtype=self.dtype_policy, name="head")

    def build(self, input_shape):
        image_shape = tuple(input_shape[0])
        if self.use_clue:
            image_shape = image_shape[:-1] + (image_shape[-1] + 1,)
        self.cnn.build(image_shape)
        self.head.build(self.cnn.compute_output_shape(image_shape))

    def call(self, inputs, training=None, return_glimpses=False):
        images, clue = inputs
        if self.use_clue:
            images = ops.concatenate([images, ops.cast(clue, images.dtype)], axis=-1)
        z = self.head(self.cnn(images, training=training))
        return (z, None, None) if return_glimpses else z

    def compute_output_shape(self, input_shape):
        return (input_shape[0][0], self.units)

    def get_config(self):
        config = super().get_config()
        config.update(
            units=self.units, filters=list(self.filters), use_clue=self.use_clue
        )
        return config


@keras.saving.register_keras_serializable(package="cram_keras")
class ContextSkipEncoder(keras.layers.Layer):
    """CRAM plus a context skip (beyond the paper): a CRAM encoder's `z`
    concatenated with a small CNN encoding of the whole occluded image.

        z = concat(CRAM([images, clue]), CNN(images))      (B, units + skip units)

    The CNN is a `CNNEncoder` (no clue). It gives the generator the hole's
    surroundings directly, around the attention; `ablate` measures how much
    each pathway carries (`CRAMEncoder.call`, plus `"skip"`: the CNN's part
    of `z` zeroed).

    Args:
        cram: a `CRAMEncoder`.
        skip: a `CNNEncoder`.
        **kwargs: base layer keyword arguments.

    Call arguments: as `CRAMEncoder` (`[images, clue]`, `training`,
    `return_glimpses`, `ablate` in None, "glimpses", "context", "skip").
    """

    ablations = ("glimpses", "context", "skip")

    def __init__(self, cram, skip, **kwargs):
        super().__init__(**kwargs)
        self.cram = cram
        self.skip = skip

    @property
    def glimpse_size(self):
        """The CRAM encoder's glimpse size (the clue loss samples with it)."""
        return self.cram.glimpse_size

    def build(self, input_shape):
        build_once(self.cram, input_shape)
        build_once(self.skip, input_shape)

    def call(self, inputs, training=None, return_glimpses=False, ablate=None):
        if ablate not in (None,) + self.ablations:
            raise ValueError(
                f"`ablate` must be None or one of {self.ablations}. "
                f"Received: ablate={ablate!r}"
            )
        kwargs = {} if ablate in (None, "skip") else {"ablate": ablate}
        z, tau, patches = self.cram(
            inputs, training=training, return_glimpses=True, **kwargs
        )
        context = self.skip(inputs, training=training)
        if ablate == "skip":
            context = ops.zeros_like(context)
        z = ops.concatenate([z, ops.cast(context, z.dtype)], axis=-1)
        return (z, tau, patches) if return_glimpses else z

    def compute_output_shape(self, input_shape):
        return (input_shape[0][0], self.cram.core_units + self.skip.units)

    def get_config(self):
        config = super().get_config()
        config.update(
            cram=keras.layers.serialize(self.cram),
            skip=keras.layers.serialize(self.skip),
        )
        return config

    @classmethod
    def from_config(cls, config):
        return cls(**deserialize_layers(config, "cram", "skip"))
