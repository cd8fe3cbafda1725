"""CRAM glimpse network: what is in the glimpse, and where (Chung & Cho, 2018, eq. 6)."""

import keras
from keras import layers

from cram_keras.layers.conv_blocks import ConvStack, build_once, check_pixels
from cram_keras.utils import check_int_tuple, check_positive_int


@keras.saving.register_keras_serializable(package="cram_keras")
class GlimpseNetwork(keras.layers.Layer):
    """Glimpse vector from a glimpse patch and its attention parameters.

    CRAM eq. 6:

        gv_n = MLP_what(CNN_what(gp_n)) * MLP_where(tau_n)        (B, units)

    `CNN_what` has `len(filters)` layers: conv 3x3 stride 1 "same" -> batch
    norm -> ELU -> max pool 3x3 stride 2 "same" (the pooling is the released
    code's; the paper only says "3-layer CNN"), flattened. `MLP_what` and
    `MLP_where` are one dense layer of `units` each, and as the last layers
    of the network they are linear (no batch norm, no ELU; paper V-A). This
    matters: at the start of training `tau_n` is the same for every image
    (see `LocalizationNetwork`), and a batch-normalised `MLP_where` would map
    a constant batch to zero and erase the glimpse vector. The product of two
    linear maps is the multiplicative "what x where" interaction of
    Larochelle & Hinton (2010) that the paper cites.

    For a 12x12 glimpse and the defaults: 12 -> 6 -> 3 -> 2, a 2 * 2 * 64 =
    256-vector into `MLP_what`.

    Under a mixed-precision dtype policy (e.g. `dtype="mixed_float16"`)
    every sub-layer gets the layer's policy: the network computes in and
    returns the compute dtype, and keeps its variables in float32.

    Args:
        filters: filters of the convolutions (`(16, 32, 64)`, as the
            released code).
        units: size of the glimpse vector (256).
        **kwargs: base layer keyword arguments.

    Call arguments:
        inputs: list `[patch, tau]`: the glimpse patch `(B, g, g, C)` (g
            static) and its attention parameters `(B, 3)`, `(s, tx, ty)`.
        training: Python bool, batch normalisation mode.

    Input shape:
        `[(batch, g, g, channels), (batch, 3)]`.

    Output shape:
        `(batch, units)`.

    Returns:
        The glimpse vector `gv_n` of shape `(B, units)`.

    Example:

    >>> import numpy as np
    >>> net = GlimpseNetwork(filters=(4, 4, 4), units=8)
    >>> patch, tau = np.zeros((2, 12, 12, 1)), np.zeros((2, 3))
    >>> tuple(net([patch, tau]).shape)
    (2, 8)
    """

    def __init__(self, filters=(16, 32, 64), units=256, **kwargs):
        super().__init__(**kwargs)
        # === Config ===
        self.filters = check_int_tuple("filters", filters)
        self.units = check_positive_int("units", units)
        # === Layers ===
        self.what_cnn = ConvStack(
            self.filters,
            kernel_size=3,
            strides=1,
            pool_size=3,
            pool_strides=2,
            dtype=self.dtype_policy,
            name="what_cnn",
        )
        self.what = layers.Dense(self.units, dtype=self.dtype_policy, name="what")
        self.where = layers.Dense(self.units, dtype=self.dtype_policy, name="where")

    def build(self, input_shape):
        if (
            not isinstance(input_shape, (list, tuple))
            or len(input_shape) != 2
            or len(input_shape[0]) != 4
            or len(input_shape[1]) != 2
        ):
            raise ValueError(
                f"`{self.name}` must be called on `[patch, tau]` of shapes "
                f"(B, g, g, C) and (B, 3). Received: input_shape={input_shape}"
            )
        patch_shape, tau_shape = tuple(input_shape[0]), tuple(input_shape[1])
        check_pixels(self.name, patch_shape, what="patch")
        build_once(self.what_cnn, patch_shape)
        build_once(self.what, self.what_cnn.compute_output_shape(patch_shape))
        build_once(self.where, tau_shape)

    def call(self, inputs, training=None):
        patch, tau = inputs
        check_pixels(self.name, patch.shape, what="patch")
        what = self.what(self.what_cnn(patch, training=training))
        return what * self.where(tau)

    def compute_output_shape(self, input_shape):
        return (input_shape[0][0], self.units)

    def get_config(self):
        config = super().get_config()
        config.update(filters=list(self.filters), units=self.units)
        return config
