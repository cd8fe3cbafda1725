"""CRAM localisation network: where to look next (Chung & Cho, 2018, eq. 3, 5)."""

import math

import keras
from keras import layers, ops

from cram_keras.layers.conv_blocks import (
    MLP,
    ConvStack,
    build_once,
    check_image_and_clue,
)
from cram_keras.utils import check_int_tuple, check_positive_int

# Where per-glimpse starts begin (`LocalizationNetwork(steps=..., layout=...)`).
LAYOUTS = ("centred", "spread")


@keras.saving.register_keras_serializable(package="cram_keras")
class LocalizationNetwork(keras.layers.Layer):
    """Attention parameters `tau_n = (s, tx, ty)` of the next glimpse.

    CRAM eq. 5, with the sizes of Section V-A:

        f     = flatten(CNN_i(image)) (+) flatten(CNN_c(clue))        (B, F)
        a,b,c = MLP_loc(f (+) MLP_r(r2_{n-1}))                        (B, 3)
        s     = min_scale + (1 - min_scale) * sigmoid(a)
        tx    = (1 - s) * tanh(b),   ty = (1 - s) * tanh(c)
        tau_n = (s, tx, ty)                                           (B, 3)

    `tau_n` is the attention transform of eq. 3, `theta = [[s, 0, tx],
    [0, s, ty]]`, acting on normalised coordinates in [-1, 1] (x first,
    `align_corners=False`: +-1 are the image's outer pixel edges). The glimpse
    window is `[tx - s, tx + s] x [ty - s, ty + s]`.

    **Bounds.** `min_scale <= s <= 1` and `|tx|, |ty| <= 1 - s`, so the window
    always lies inside the image, `[-1, 1]^2`, whatever the inputs: no glimpse
    of pure padding, and its size never drops below `min_scale` of the image.
    The translation range shrinks as the window grows (a full-image window
    cannot move).

    **Start.** The last dense layer has a zero kernel and the bias
    `(logit((initial_scale - min_scale) / (1 - min_scale)), 0, 0)`, so before
    training every glimpse is the centred window of half-size `initial_scale`
    whatever the image: `tau = (initial_scale, 0, 0)` (the identity-like
    start of docs/design.md; the released code's `tanh(xW + 1) / 2 + b` started
    at a scale of about 1.38 with a translation of about 0.38, and its window
    could leave the image).

    **Per-glimpse starts** (`steps`, beyond the paper). With `steps=None`
    (the paper's eq. 5) one network places every glimpse, and at the start
    all of them are the same centred window; in practice they stay together
    (the core state does not separate them). With `steps=N` the head gets a
    learned bias per glimpse step, `(N, 3)`, added to its output: the
    network then also sees the step index (a one-hot input to its last
    layer). `layout="centred"` starts that bias at zero (every glimpse
    centred, as before, but free to part); `layout="spread"` starts glimpse
    n's window centred at `r * (cos 2 pi n / N, sin 2 pi n / N)` with
    `r = min(initial_scale / 2, 0.9 * (1 - initial_scale))`: around the image
    centre, each window still containing it (for N = 4: right, below, left,
    above; N = 1 stays centred).

    Defaults: `min_scale=0.2` is one glimpse pixel per image pixel for the
    paper-style 12 px glimpse on a 60x60 image (smaller windows only
    upsample); `initial_scale=0.5` starts with a window of half the image side
    (a 30 px window on 60x60, about one 28 px digit), free to move by up to
    half the image either way and to zoom in or out, with sigmoid and tanh far
    from saturation.

    The CNNs (3 layers, 5x5, stride 2, "same", batch norm + ELU) see the
    full-resolution image and clue; their features do not change across
    glimpses, so compute them once with `features(images, clue)` and pass them
    to every `call([features, r2])`. `MLP_r` has two layers of `units`
    (normalised, since it feeds the concatenation), `MLP_loc` is
    dense(`units`) -> batch norm -> ELU -> dense(3). Both run once per
    glimpse, so their batch-norm statistics pool all glimpses (as the
    released code, which reused one network for every glimpse).

    Args:
        filters: filters of the three stride-2 convolutions of each CNN
            (`(8, 16, 32)`, as the released code).
        kernel_size: convolution kernel size (5, paper V-A).
        units: width of `MLP_r` and of the hidden layer of `MLP_loc` (256,
            the released code's hidden / 2).
        min_scale: smallest half-size `s` of the window, in (0, 1) (0.2).
        initial_scale: `s` before training, in (`min_scale`, 1) (0.5).
        steps: None (one placement for all glimpses, the paper) or the number
            of glimpse steps N, each with its own learned start (see above).
        layout: `"centred"` or `"spread"`: where the per-glimpse starts begin
            (only with `steps`).
        **kwargs: base layer keyword arguments.

    Call arguments:
        inputs: list `[features, r2]`: `features` from `features()`,
            `(B, F)`; `r2`, the previous hidden state of the second core LSTM
            `(B, state_units)` (`h_0` of the context network for the first
            glimpse).
        training: Python bool, batch normalisation mode.
        step: the glimpse index n in [0, steps) (a Python int); required
            with `steps`, ignored without.

    Returns:
        `tau` of shape `(B, 3)`: `(s, tx, ty)`.

    Example:

    >>> loc = LocalizationNetwork(filters=(4, 4, 4), units=8)
    >>> f = loc.features(np.zeros((2, 60, 60, 1)), np.zeros((2, 60, 60, 1)))
    >>> loc([f, np.zeros((2, 16))])  # before training: (0.5, 0, 0) each
    """

    def __init__(
        self,
        filters=(8, 16, 32),
        kernel_size=5,
        units=256,
        min_scale=0.2,
        initial_scale=0.5,
        steps=None,
        layout="centred",
        **kwargs,
    ):
        super().__init__(**kwargs)
        # === Config ===
        self.filters = check_int_tuple("filters", filters)
        self.steps = None if steps is None else check_positive_int("steps", steps)
        if layout not in LAYOUTS:
            raise ValueError(
                f"`layout` must be one of {LAYOUTS}. Received: layout={layout!r}"
            )
        if layout != "centred" and steps is None:
            raise ValueError(
                "`layout` sets where per-glimpse starts begin, so it needs "
                f"`steps` (the number of glimpses). Received: layout={layout!r}, "
                "steps=None"
            )
        self.layout = layout
        self.kernel_size = check_positive_int("kernel_size", kernel_size)
        self.units = check_positive_int("units", units)
        if not isinstance(min_scale, (int, float)) or not 0.0 < min_scale < 1.0:
            raise ValueError(
                "`min_scale` must be a number in (0, 1), the smallest glimpse "
                f"half-size. Received: min_scale={min_scale!r}"
            )
        if not isinstance(initial_scale, (int, float)) or not (
            min_scale < initial_scale < 1.0
        ):
            raise ValueError(
                "`initial_scale` must be a number in (min_scale, 1) = "
                f"({min_scale}, 1). Received: initial_scale={initial_scale!r}"
            )
        self.min_scale = float(min_scale)
        self.initial_scale = float(initial_scale)
        # === Layers ===
        cnn = dict(
            kernel_size=self.kernel_size,
            strides=2,
            pool_size=None,
            dtype=self.dtype_policy,
        )
        self.image_cnn = ConvStack(self.filters, name="image_cnn", **cnn)
        self.clue_cnn = ConvStack(self.filters, name="clue_cnn", **cnn)
        self.state_mlp = MLP(
            (self.units, self.units),
            activate_last=True,
            dtype=self.dtype_policy,
            name="state_mlp",
        )
        self.hidden = MLP(
            (self.units,), activate_last=True, dtype=self.dtype_policy, name="hidden"
        )
        fraction = (self.initial_scale - self.min_scale) / (1.0 - self.min_scale)
        self.head = layers.Dense(
            3,
            kernel_initializer="zeros",
            bias_initializer=keras.initializers.Constant(
                [math.log(fraction / (1.0 - fraction)), 0.0, 0.0]
            ),
            dtype=self.dtype_policy,
            name="head",
        )

    def start_offsets(self):
        """Initial per-step head bias (steps, 3) for `layout` (zeros: centred)."""
        offsets = [[0.0, 0.0, 0.0] for _ in range(self.steps)]
        if self.layout == "spread" and self.steps > 1:
            room = 1.0 - self.initial_scale
            radius = min(self.initial_scale / 2.0, 0.9 * room)
            for n in range(self.steps):
                angle = 2.0 * math.pi * n / self.steps
                # tx = room * tanh(b) at the start (the head's kernel is zero).
                offsets[n][1] = math.atanh(radius * math.cos(angle) / room)
                offsets[n][2] = math.atanh(radius * math.sin(angle) / room)
        return offsets

    def build_features(self, input_shape):
        """Builds the two CNNs for `[images_shape, clue_shape]`; returns (B, F)."""
        image_shape, clue_shape = check_image_and_clue(self.name, input_shape)
        build_once(self.image_cnn, image_shape)
        build_once(self.clue_cnn, clue_shape)
        return (
            image_shape[0],
            self.image_cnn.compute_output_shape(image_shape)[-1]
            + self.clue_cnn.compute_output_shape(clue_shape)[-1],
        )

    def features(self, images, clue, training=None):
        """The glimpse-independent part `CNN_i(image) (+) CNN_c(clue)`, (B, F)."""
        self.build_features([tuple(images.shape), tuple(clue.shape)])
        return ops.concatenate(
            [
                self.image_cnn(images, training=training),
                self.clue_cnn(clue, training=training),
            ],
            axis=-1,
        )

    def build(self, input_shape):
        features_shape, state_shape = _check_features_and_state(self.name, input_shape)
        build_once(self.state_mlp, state_shape)
        build_once(self.hidden, (None, features_shape[-1] + self.units))
        build_once(self.head, (None, self.units))
        if self.steps is not None:
            self.step_bias = self.add_weight(
                name="step_bias",
                shape=(self.steps, 3),
                initializer=keras.initializers.Constant(self.start_offsets()),
            )

    def call(self, inputs, training=None, step=None):
        features, state = inputs
        hidden = ops.concatenate(
            [features, self.state_mlp(state, training=training)], axis=-1
        )
        raw = self.head(self.hidden(hidden, training=training))
        if self.steps is not None:
            if not isinstance(step, int) or not 0 <= step < self.steps:
                raise ValueError(
                    f"`{self.name}` has a start per glimpse step: pass "
                    f"`step`, an int in [0, {self.steps}). Received: step={step!r}"
                )
            raw = raw + ops.cast(self.step_bias[step], raw.dtype)
        return self.attention_parameters(raw)

    def attention_parameters(self, raw):
        """Maps unbounded `(a, b, c)` (..., 3) to bounded `(s, tx, ty)`."""
        a, b, c = raw[..., 0], raw[..., 1], raw[..., 2]
        scale = self.min_scale + (1.0 - self.min_scale) * ops.sigmoid(a)
        room = 1.0 - scale
        return ops.stack([scale, room * ops.tanh(b), room * ops.tanh(c)], axis=-1)

    def compute_output_shape(self, input_shape):
        return (input_shape[0][0], 3)

    def get_config(self):
        config = super().get_config()
        config.update(
            filters=list(self.filters),
            kernel_size=self.kernel_size,
            units=self.units,
            min_scale=self.min_scale,
            initial_scale=self.initial_scale,
            steps=self.steps,
            layout=self.layout,
        )
        return config


def _check_features_and_state(name, input_shape):
    if (
        not isinstance(input_shape, (list, tuple))
        or len(input_shape) != 2
        or not all(isinstance(s, (list, tuple)) and len(s) == 2 for s in input_shape)
        or input_shape[0][-1] is None
        or input_shape[1][-1] is None
    ):
        raise ValueError(
            f"`{name}` must be called on `[features, r2]`, each of shape "
            "(batch, size) with a known size; compute `features` with "
            f"`{name}.features(images, clue)`. Received: input_shape={input_shape}"
        )
    return tuple(input_shape[0]), tuple(input_shape[1])
