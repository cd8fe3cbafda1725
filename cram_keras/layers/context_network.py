"""CRAM context network (Chung & Cho, 2018, eq. 1-2)."""

import keras
from keras import layers, ops

from cram_keras.layers.conv_blocks import (
    MLP,
    ConvStack,
    build_once,
    check_image_and_clue,
)
from cram_keras.utils import check_int_tuple, check_positive_int


@keras.saving.register_keras_serializable(package="cram_keras")
class ContextNetwork(keras.layers.Layer):
    """Initial state of the second core LSTM from a coarse view of image and clue.

    CRAM eq. 1-2, with the sizes of Section V-A:

        i_coarse = AvgPool_k(image),  c_coarse = AvgPool_k(clue)    k = downsample
        f = flatten(CNN_i(i_coarse)) (+) flatten(CNN_c(c_coarse))   (B, F)
        c_0 = MLP_c(f),  h_0 = MLP_h(f)                             (B, state_units)

    Each CNN has `len(filters)` layers: conv 3x3 stride 1 "same" -> batch norm
    -> ELU -> max pool 3x3 stride 2 "same". Image and clue have their own CNN
    (as the released code). Each MLP head has two layers: dense(`units`) ->
    batch norm -> ELU -> dense(`state_units`), the last one linear (the last
    layer of the network). For a 60x60 input and the defaults:
    15x15 -> 8 -> 4 -> 2, F = 2 * 2 * 2 * 64 = 512.

    Under a mixed-precision dtype policy (e.g. `dtype="mixed_float16"`)
    every sub-layer gets the layer's policy: the network computes in and
    returns the compute dtype, and keeps its variables in float32.

    Args:
        filters: filters of the three convolutions of each CNN
            (`(16, 32, 64)`, as the released code).
        units: hidden width of the two MLP heads (256).
        state_units: size of `h_0` and `c_0`, the units of the second core
            LSTM (512, the paper's and released code's hidden size).
        downsample: average pooling factor of image and clue (4, paper V-A).
        **kwargs: base layer keyword arguments.

    Call arguments:
        inputs: list `[images, clue]`, float tensors `(B, H, W, C)` and
            `(B, H, W, 1)` (clue: 1 = salient / occluded). H and W static.
        training: Python bool, batch normalisation mode.

    Input shape:
        `[(batch, height, width, channels), (batch, height, width, 1)]`.

    Output shape:
        `[(batch, state_units), (batch, state_units)]`.

    Returns:
        `[h_0, c_0]`, each `(B, state_units)`: the initial state of the second
        core LSTM in `keras.layers.LSTMCell`'s order `[h, c]`, so it can be
        passed straight to `CoreNetwork`.

    Example:

    >>> import numpy as np
    >>> net = ContextNetwork(filters=(4, 4, 4), units=8, state_units=16)
    >>> h0, c0 = net([np.zeros((2, 60, 60, 1)), np.zeros((2, 60, 60, 1))])
    >>> tuple(h0.shape), tuple(c0.shape)
    ((2, 16), (2, 16))
    """

    def __init__(
        self,
        filters=(16, 32, 64),
        units=256,
        state_units=512,
        downsample=4,
        **kwargs,
    ):
        super().__init__(**kwargs)
        # === Config ===
        self.filters = check_int_tuple("filters", filters)
        self.units = check_positive_int("units", units)
        self.state_units = check_positive_int("state_units", state_units)
        self.downsample = check_positive_int("downsample", downsample)
        # === Layers ===
        self.pool = layers.AveragePooling2D(
            self.downsample, padding="same", dtype=self.dtype_policy, name="downsample"
        )
        cnn = dict(
            kernel_size=3,
            strides=1,
            pool_size=3,
            pool_strides=2,
            dtype=self.dtype_policy,
        )
        self.image_cnn = ConvStack(self.filters, name="image_cnn", **cnn)
        self.clue_cnn = ConvStack(self.filters, name="clue_cnn", **cnn)
        head = (self.units, self.state_units)
        self.c_head = MLP(head, dtype=self.dtype_policy, name="c_head")
        self.h_head = MLP(head, dtype=self.dtype_policy, name="h_head")

    def build(self, input_shape):
        image_shape, clue_shape = check_image_and_clue(self.name, input_shape)
        image_coarse = self.pool.compute_output_shape(image_shape)
        clue_coarse = self.pool.compute_output_shape(clue_shape)
        build_once(self.image_cnn, image_coarse)
        build_once(self.clue_cnn, clue_coarse)
        features = (
            self.image_cnn.compute_output_shape(image_coarse)[-1]
            + self.clue_cnn.compute_output_shape(clue_coarse)[-1]
        )
        build_once(self.c_head, (None, features))
        build_once(self.h_head, (None, features))

    def call(self, inputs, training=None):
        images, clue = inputs
        check_image_and_clue(self.name, [tuple(images.shape), tuple(clue.shape)])
        features = ops.concatenate(
            [
                self.image_cnn(self.pool(images), training=training),
                self.clue_cnn(
                    self.pool(ops.cast(clue, images.dtype)), training=training
                ),
            ],
            axis=-1,
        )
        h0 = self.h_head(features, training=training)
        c0 = self.c_head(features, training=training)
        return [h0, c0]

    def compute_output_shape(self, input_shape):
        batch = input_shape[0][0]
        return [(batch, self.state_units), (batch, self.state_units)]

    def get_config(self):
        config = super().get_config()
        config.update(
            filters=list(self.filters),
            units=self.units,
            state_units=self.state_units,
            downsample=self.downsample,
        )
        return config
