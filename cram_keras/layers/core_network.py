"""CRAM core network: two stacked LSTMs, one glimpse per call (Chung & Cho, 2018, eq. 7-8)."""

import keras
from keras import layers

from cram_keras.layers.conv_blocks import build_once
from cram_keras.utils import check_positive_int


@keras.saving.register_keras_serializable(package="cram_keras")
class CoreNetwork(keras.layers.Layer):
    """One step of the two stacked LSTMs of the CRAM core.

    CRAM eq. 7-8:

        r1_n = LSTM_1(gv_n, r1_{n-1})        (B, units)
        r2_n = LSTM_2(r1_n, r2_{n-1})        (B, units)

    Both are `keras.layers.LSTMCell(units)`; states are lists `[h, c]` in the
    cell's order. `r2_n` (the hidden state `h` of LSTM 2) feeds the
    localisation network of the next glimpse, and `r2_N` is the encoding `z`.
    In CRAM, LSTM 2 starts from the context network's `[h_0, c_0]` and LSTM 1
    from zeros.

    Under a mixed-precision dtype policy (e.g. `dtype="mixed_float16"`)
    every sub-layer gets the layer's policy: the network computes in and
    returns the compute dtype, and keeps its variables in float32.

    Args:
        units: units of each LSTM (512, the paper's and released code's).
        **kwargs: base layer keyword arguments.

    Call arguments:
        inputs: list `[gv, state1, state2]`: the glimpse vector `(B, G)` and
            the previous states `[h1, c1]`, `[h2, c2]`, each `(B, units)`.
        training: Python bool (unused by the cells without dropout).

    Input shape:
        `[(batch, G), [(batch, units), (batch, units)],
        [(batch, units), (batch, units)]]`.

    Output shape:
        `((batch, units), (batch, units), [(batch, units), (batch, units)],
        [(batch, units), (batch, units)])`.

    Returns:
        Tuple `(r1, r2, new_state1, new_state2)`: `r1`, `r2` of shape
        `(B, units)` and the new states `[h1, c1]`, `[h2, c2]`.

    Example:

    >>> import numpy as np
    >>> core = CoreNetwork(units=8)
    >>> zeros = np.zeros((2, 8), "float32")
    >>> r1, r2, s1, s2 = core([np.zeros((2, 5)), [zeros, zeros], [zeros, zeros]])
    >>> tuple(r2.shape), len(s1), len(s2)
    ((2, 8), 2, 2)
    """

    def __init__(self, units=512, **kwargs):
        super().__init__(**kwargs)
        # === Config ===
        self.units = check_positive_int("units", units)
        # === Layers ===
        self.lstm1 = layers.LSTMCell(self.units, dtype=self.dtype_policy, name="lstm1")
        self.lstm2 = layers.LSTMCell(self.units, dtype=self.dtype_policy, name="lstm2")

    def build(self, input_shape):
        if not isinstance(input_shape, (list, tuple)) or len(input_shape) != 3:
            raise ValueError(
                f"`{self.name}` must be called on `[gv, [h1, c1], [h2, c2]]`. "
                f"Received: input_shape={input_shape}"
            )
        gv_shape = tuple(input_shape[0])
        if len(gv_shape) != 2 or gv_shape[-1] is None:
            raise ValueError(
                f"`{self.name}` expects a glimpse vector of shape (batch, size). "
                f"Received: input_shape={input_shape}"
            )
        build_once(self.lstm1, gv_shape)
        build_once(self.lstm2, (gv_shape[0], self.units))

    def call(self, inputs, training=None):
        glimpse_vector, state1, state2 = inputs
        r1, state1 = self.lstm1(glimpse_vector, list(state1), training=training)
        r2, state2 = self.lstm2(r1, list(state2), training=training)
        return r1, r2, list(state1), list(state2)

    def compute_output_shape(self, input_shape):
        shape = (input_shape[0][0], self.units)
        return shape, shape, [shape, shape], [shape, shape]

    def get_config(self):
        config = super().get_config()
        config.update(units=self.units)
        return config
