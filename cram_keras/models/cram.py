"""CRAM, the Clued Recurrent Attention Model (Chung & Cho, 2018): the encoder
(Section III-A, eq. 1-8) and the classifier with a clue (III-B1, IV-A, eq. 9-11).

Sizes the paper leaves open ("vary depending on the size of the image") are
constructor arguments; the defaults are the released code's where it has
them (filters, 512 hidden units) and are stated in each docstring otherwise.
Deviations from paper and released code (docs/deviations.md, CRAM table):

* the localisation head is bounded and starts at a centred glimpse
  (`LocalizationNetwork`), not the released code's `tanh(xW + 1) / 2 + b`;
* the encoding is `z = r2_N`, the last hidden state of the second LSTM (the
  paper's "output of the core"; the released code used LSTM 1's);
* the clue loss is averaged over glimpses by default (`cram_keras.losses`).
"""

import threading

import keras
from keras import ops

from cram_keras.layers.context_network import ContextNetwork
from cram_keras.layers.conv_blocks import (
    MLP,
    build_once,
    check_image_and_clue,
    deserialize_layers,
)
from cram_keras.layers.core_network import CoreNetwork
from cram_keras.layers.glimpse_network import GlimpseNetwork
from cram_keras.layers.localization_network import LocalizationNetwork
from cram_keras.layers.spatial_transformer import SpatialTransformer
from cram_keras.losses import CLUE_REDUCTIONS, clue_loss
from cram_keras.utils import check_int_tuple, check_positive_int

# `(id(model), logits, clue term)` of the last `CRAMClassifier.call` on this thread,
# for its `compute_loss` (the metric `clue_loss`). Per thread, because
# `tf.distribute.MirroredStrategy` runs each replica's step in its own thread.
_LAST_FORWARD = threading.local()
# How the glimpses start (`CRAMEncoder(glimpse_start=...)`).
GLIMPSE_STARTS = ("shared", "per_step", "spread")


def _split_inputs(name, inputs):
    if not isinstance(inputs, (list, tuple)) or len(inputs) != 2:
        raise ValueError(
            f"`{name}` must be called on `[images, clue]`: images (B, H, W, C) "
            f"and clue (B, H, W, 1). Received: inputs of type {type(inputs).__name__}"
        )
    return inputs[0], inputs[1]


@keras.saving.register_keras_serializable(package="cram_keras")
class CRAMEncoder(keras.Model):
    """CRAM encoder: context, localisation, transformer, glimpse and core networks.

    With `N = num_glimpses`, `g = glimpse_size`:

        [h_0, c_0] = Context(image, clue)                 eq. 1-2, LSTM-2's start
        r1_0 = 0,  r2_0 = h_0
        f = CNN_i(image) (+) CNN_c(clue)                  computed once
        for n = 1..N:
            tau_n   = Loc(f, r2_{n-1})                    eq. 5, (B, 3) = (s, tx, ty)
            patch_n = ST(image, tau_n)                    eq. 3-4, (B, g, g, C)
            gv_n    = Glimpse(patch_n, tau_n)             eq. 6
            r1_n, r2_n = Core(gv_n, r1_{n-1}, r2_{n-1})   eq. 7-8
        z = r2_N                                          (B, core_units)

    `ST` is `SpatialTransformer(transform="attention")`: the window
    `[tx - s, tx + s] x [ty - s, ty + s]` of the image in normalised
    coordinates (x first, `align_corners=False`, zeros padding) resampled
    bilinearly to `g x g`. The localisation network keeps the window inside
    the image and starts every glimpse centred at half-size `initial_scale`.
    Batch normalisation + ELU follow every CNN / MLP layer but the last of
    each network (paper V-A).

    Args:
        num_glimpses: glimpses (core steps) N (4; the paper says "few").
        glimpse_size: side g of the square glimpse in pixels (12: RAM's glimpse
            for 60x60 cluttered MNIST, Mnih et al. 2014).
        core_units: units of both core LSTMs and size of `z` (512).
        context_filters: filters of the context CNNs (`(16, 32, 64)`).
        context_units: hidden width of the context MLP heads (256).
        context_downsample: context input downsampling factor (4).
        localization_filters: filters of the localisation CNNs (`(8, 16, 32)`).
        localization_units: width of the localisation MLPs (256).
        min_scale: smallest glimpse half-size, in (0, 1) (0.2).
        initial_scale: glimpse half-size at the start, in (min_scale, 1) (0.5).
        glimpse_filters: filters of the glimpse CNN (`(16, 32, 64)`).
        glimpse_units: size of the glimpse vector (256).
        glimpse_start: `"shared"` (the paper: one localisation network places
            every glimpse, all starting at the same centred window),
            `"per_step"` (beyond the paper: each glimpse step has its own
            learned start, all beginning centred) or `"spread"` (the same,
            beginning around the centre; see `LocalizationNetwork`).
        **kwargs: passed to `keras.Model`.

    Call arguments:
        inputs: list `[images, clue]`: float tensors `(B, H, W, C)` in [0, 1]
            and `(B, H, W, 1)` with values in {0, 1} (1 = salient / occluded);
            H and W static.
        training: Python bool, batch normalisation mode.
        return_glimpses: if True, also return `tau` `(B, N, 3)` and the
            glimpse patches `(B, N, g, g, C)`.

    Returns:
        `z` of shape `(B, core_units)`, or `(z, tau, patches)`.

    Example:

    >>> encoder = CRAMEncoder(num_glimpses=2, core_units=32)
    >>> x = np.zeros((2, 60, 60, 1), "float32")
    >>> z, tau, patches = encoder([x, x], return_glimpses=True)
    >>> z.shape, tau.shape, patches.shape
    ((2, 32), (2, 2, 3), (2, 2, 12, 12, 1))
    """

    def __init__(
        self,
        num_glimpses=4,
        glimpse_size=12,
        core_units=512,
        context_filters=(16, 32, 64),
        context_units=256,
        context_downsample=4,
        localization_filters=(8, 16, 32),
        localization_units=256,
        min_scale=0.2,
        initial_scale=0.5,
        glimpse_filters=(16, 32, 64),
        glimpse_units=256,
        glimpse_start="shared",
        **kwargs,
    ):
        super().__init__(**kwargs)
        if glimpse_start not in GLIMPSE_STARTS:
            raise ValueError(
                f"`glimpse_start` must be one of {GLIMPSE_STARTS}. "
                f"Received: glimpse_start={glimpse_start!r}"
            )
        self.glimpse_start = glimpse_start
        # === Config ===
        self.num_glimpses = check_positive_int("num_glimpses", num_glimpses)
        self.glimpse_size = check_positive_int("glimpse_size", glimpse_size)
        self.core_units = check_positive_int("core_units", core_units)
        self.context_filters = check_int_tuple("context_filters", context_filters)
        self.context_units = check_positive_int("context_units", context_units)
        self.context_downsample = check_positive_int(
            "context_downsample", context_downsample
        )
        self.localization_filters = check_int_tuple(
            "localization_filters", localization_filters
        )
        self.localization_units = check_positive_int(
            "localization_units", localization_units
        )
        self.glimpse_filters = check_int_tuple("glimpse_filters", glimpse_filters)
        self.glimpse_units = check_positive_int("glimpse_units", glimpse_units)
        # === Layers ===
        self.context = ContextNetwork(
            filters=self.context_filters,
            units=self.context_units,
            state_units=self.core_units,
            downsample=self.context_downsample,
            dtype=self.dtype_policy,
            name="context",
        )
        # Validates min_scale and initial_scale.
        self.localization = LocalizationNetwork(
            filters=self.localization_filters,
            units=self.localization_units,
            min_scale=min_scale,
            initial_scale=initial_scale,
            steps=None if glimpse_start == "shared" else self.num_glimpses,
            layout="spread" if glimpse_start == "spread" else "centred",
            dtype=self.dtype_policy,
            name="localization",
        )
        self.min_scale = self.localization.min_scale
        self.initial_scale = self.localization.initial_scale
        self.transformer = SpatialTransformer(
            transform="attention",
            output_size=(self.glimpse_size, self.glimpse_size),
            dtype=self.dtype_policy,
            name="transformer",
        )
        self.glimpse = GlimpseNetwork(
            filters=self.glimpse_filters,
            units=self.glimpse_units,
            dtype=self.dtype_policy,
            name="glimpse",
        )
        self.core = CoreNetwork(
            units=self.core_units, dtype=self.dtype_policy, name="core"
        )

    def build(self, input_shape):
        image_shape, clue_shape = check_image_and_clue(self.name, input_shape)
        batch = image_shape[0]
        build_once(self.context, [image_shape, clue_shape])
        features_shape = self.localization.build_features([image_shape, clue_shape])
        state_shape = (batch, self.core_units)
        build_once(self.localization, [features_shape, state_shape])
        build_once(self.transformer, [image_shape, (batch, 3)])
        patch_shape = (batch, self.glimpse_size, self.glimpse_size, image_shape[-1])
        build_once(self.glimpse, [patch_shape, (batch, 3)])
        build_once(
            self.core,
            [(batch, self.glimpse_units), [state_shape] * 2, [state_shape] * 2],
        )

    # Pathways that `call(..., ablate=...)` can cut (diagnostics).
    ablations = ("glimpses", "context")

    def call(self, inputs, training=None, return_glimpses=False, ablate=None):
        """`z`, or `(z, taus, patches)` with `return_glimpses`.

        `ablate` (diagnostics, inference): `"glimpses"` feeds the glimpse
        network all-zero patches (the windows stay where the localisation
        network puts them); `"context"` starts LSTM-2 and the first
        localisation from a zero state instead of the context network's.
        """
        if ablate not in (None, "glimpses", "context"):
            raise ValueError(
                "`ablate` must be None, 'glimpses' or 'context'. "
                f"Received: ablate={ablate!r}"
            )
        images, clue = _split_inputs(self.name, inputs)
        clue = ops.cast(clue, images.dtype)
        state2 = self.context([images, clue], training=training)
        zeros = ops.zeros_like(state2[0])
        if ablate == "context":
            state2 = [zeros, zeros]
        state1 = [zeros, zeros]
        features = self.localization.features(images, clue, training=training)
        taus, patches = [], []
        for step in range(self.num_glimpses):
            tau = self.localization([features, state2[0]], training=training, step=step)
            patch = self.transformer([images, tau])
            if ablate == "glimpses":
                patch = ops.zeros_like(patch)
            glimpse_vector = self.glimpse([patch, tau], training=training)
            _, _, state1, state2 = self.core(
                [glimpse_vector, state1, state2], training=training
            )
            taus.append(tau)
            patches.append(patch)
        z = state2[0]
        if return_glimpses:
            return z, ops.stack(taus, axis=1), ops.stack(patches, axis=1)
        return z

    def compute_output_shape(self, input_shape):
        return (tuple(input_shape[0])[0], self.core_units)

    def glimpse_shapes(self, input_shape):
        """Shapes of `tau` and of the patches for `[images_shape, clue_shape]`."""
        image_shape = tuple(input_shape[0])
        batch, g = image_shape[0], self.glimpse_size
        return [
            (batch, self.num_glimpses, 3),
            (batch, self.num_glimpses, g, g, image_shape[-1]),
        ]

    def compute_output_spec(self, inputs, training=None, return_glimpses=False):
        # Symbolic calls (functional API) with or without `return_glimpses`.
        input_shape = [tuple(x.shape) for x in inputs]
        shapes = [self.compute_output_shape(input_shape)]
        if return_glimpses:
            shapes += self.glimpse_shapes(input_shape)
        specs = [keras.KerasTensor(s, dtype=self.compute_dtype) for s in shapes]
        return tuple(specs) if return_glimpses else specs[0]

    def get_config(self):
        config = super().get_config()
        config.update(
            num_glimpses=self.num_glimpses,
            glimpse_size=self.glimpse_size,
            core_units=self.core_units,
            context_filters=list(self.context_filters),
            context_units=self.context_units,
            context_downsample=self.context_downsample,
            localization_filters=list(self.localization_filters),
            localization_units=self.localization_units,
            min_scale=self.min_scale,
            initial_scale=self.initial_scale,
            glimpse_filters=list(self.glimpse_filters),
            glimpse_units=self.glimpse_units,
            glimpse_start=self.glimpse_start,
        )
        return config


@keras.saving.register_keras_serializable(package="cram_keras")
class CRAMClassifier(keras.Model):
    """CRAM for classification: encoder + 3-layer MLP decoder, trained with a clue.

    Paper III-B1, IV-A, eq. 9-11:

        z      = Encoder(image, clue)                        (B, core_units)
        logits = MLP_dec(z)                                  (B, num_classes)
        L_tot  = L_cls(Y, Y*) + clue_weight * L_clue(clue, tau)

    `L_cls` is the loss given to `compile()` (e.g.
    `SparseCategoricalCrossentropy(from_logits=True)`: the model returns
    logits). `L_clue = cram_keras.losses.clue_loss(clue, tau, glimpse_size,
    clue_reduction)` is added in `call` with `self.add_loss`, so `fit`
    minimises `L_tot`. It is added at every call, not only when
    `training=True`, as Keras does with every `add_loss` term: `loss` and
    `val_loss` then measure the same objective. With `clue_weight=0` nothing
    is added and the loss is exactly `L_cls`.

    Under `tf.distribute`, Keras divides `add_loss` terms by the number of
    replicas, as it does the compiled loss, so the replicas' summed gradients
    are the gradient of the global-batch `L_tot`.

    The unweighted `L_clue` (the mean fraction of the glimpses outside the
    clue) is reported as the metric `clue_loss` (`val_clue_loss` in
    validation), whatever `clue_weight`, so the no-clue ablation still shows
    where the glimpses went. It is updated in `compute_loss`, which Keras
    calls in the same trace as `call` in `train_step` and `test_step` on
    every backend (the pattern documented in `keras.Model.compute_loss`):
    `call` hands it the term of its forward pass together with the logits it
    returned, per thread (one per replica under `tf.distribute`), and
    `compute_loss` uses the term only when its `y_pred` is those very logits.
    (Shape inference, for example Keras' symbolic build at the start of
    `fit`, runs `call` and `compute_loss` in separate traces: the symbolic
    `y_pred` it passes never matches.) When this model is a layer of another
    model, the outer model's `compute_loss` runs instead: `L_clue` is still
    added to the loss, but `clue_loss` is not updated.

    The decoder is `dense(u1) -> BN -> ELU -> dense(u2) -> BN -> ELU ->
    dense(num_classes)` (paper V-A: "3-layer MLP"; no BN/ELU on the last).

    Args:
        encoder: a `CRAMEncoder`; `None` builds `CRAMEncoder()` with the
            defaults (4 glimpses of 12 px, 512-unit core).
        num_classes: number of classes (10).
        decoder_units: widths of the decoder's hidden layers (`(256, 256)`:
            with the output layer, the paper's 3-layer MLP).
        clue_weight: weight of the clue loss, >= 0 (0.1, as the released code).
        clue_reduction: `"mean"` or `"sum"` of the clue loss over glimpses
            (`"mean"`, see `clue_loss`).
        **kwargs: passed to `keras.Model`.

    Call arguments:
        inputs: list `[images, clue]`: `(B, H, W, C)` in [0, 1] and
            `(B, H, W, 1)` float in {0, 1}.
        training: Python bool, batch normalisation mode.
        return_glimpses: if True, return `(logits, tau, patches)` with `tau`
            `(B, N, 3)` = `(s, tx, ty)` and `patches` `(B, N, g, g, C)`, for
            plotting where the model looked.

    Returns:
        logits `(B, num_classes)`, or `(logits, tau, patches)`.

    Example:

    >>> model = CRAMClassifier(CRAMEncoder(num_glimpses=2, core_units=64))
    >>> model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    >>> model.fit([images, clues], labels)  # logs: loss, clue_loss
    """

    def __init__(
        self,
        encoder=None,
        num_classes=10,
        decoder_units=(256, 256),
        clue_weight=0.1,
        clue_reduction="mean",
        **kwargs,
    ):
        super().__init__(**kwargs)
        if encoder is None:
            encoder = CRAMEncoder(dtype=self.dtype_policy, name="encoder")
        if not isinstance(encoder, CRAMEncoder):
            raise ValueError(
                "`encoder` must be a `CRAMEncoder` or None. "
                f"Received: encoder={encoder!r}"
            )
        if (
            isinstance(clue_weight, bool)
            or not isinstance(clue_weight, (int, float))
            or not clue_weight >= 0
        ):
            raise ValueError(
                "`clue_weight` must be a number >= 0 (0 disables the clue loss). "
                f"Received: clue_weight={clue_weight!r}"
            )
        if clue_reduction not in CLUE_REDUCTIONS:
            raise ValueError(
                f"`clue_reduction` must be one of {CLUE_REDUCTIONS}. "
                f"Received: clue_reduction={clue_reduction!r}"
            )
        # === Config ===
        self.num_classes = check_positive_int("num_classes", num_classes)
        self.decoder_units = check_int_tuple("decoder_units", decoder_units)
        self.clue_weight = float(clue_weight)
        self.clue_reduction = clue_reduction
        # === Layers ===
        self.encoder = encoder
        self.decoder = MLP(
            self.decoder_units + (self.num_classes,),
            dtype=self.dtype_policy,
            name="decoder",
        )
        # === Metrics ===
        self.clue_loss_tracker = keras.metrics.Mean(name="clue_loss")

    def build(self, input_shape):
        build_once(self.encoder, input_shape)
        build_once(self.decoder, (input_shape[0][0], self.encoder.core_units))

    def call(self, inputs, training=None, return_glimpses=False):
        images, clue = _split_inputs(self.name, inputs)
        z, tau, patches = self.encoder(
            [images, clue], training=training, return_glimpses=True
        )
        logits = self.decoder(z, training=training)
        term = clue_loss(
            clue, tau, self.encoder.glimpse_size, reduction=self.clue_reduction
        )
        if self.clue_weight > 0:
            self.add_loss(self.clue_weight * term)
        _LAST_FORWARD.value = (id(self), logits, term)
        if return_glimpses:
            return logits, tau, patches
        return logits

    def compute_loss(
        self, x=None, y=None, y_pred=None, sample_weight=None, training=True
    ):
        loss = super().compute_loss(
            x=x, y=y, y_pred=y_pred, sample_weight=sample_weight, training=training
        )
        model_id, logits, term = getattr(_LAST_FORWARD, "value", (None, None, None))
        if model_id == id(self) and logits is y_pred:
            _LAST_FORWARD.value = (None, None, None)
            self.clue_loss_tracker.update_state(term)
        return loss

    def compute_output_shape(self, input_shape):
        return (tuple(input_shape[0])[0], self.num_classes)

    def compute_output_spec(self, inputs, training=None, return_glimpses=False):
        input_shape = [tuple(x.shape) for x in inputs]
        shapes = [self.compute_output_shape(input_shape)]
        if return_glimpses:
            shapes += self.encoder.glimpse_shapes(input_shape)
        specs = [keras.KerasTensor(s, dtype=self.compute_dtype) for s in shapes]
        return tuple(specs) if return_glimpses else specs[0]

    def get_config(self):
        config = super().get_config()
        config.update(
            encoder=keras.layers.serialize(self.encoder),
            num_classes=self.num_classes,
            decoder_units=list(self.decoder_units),
            clue_weight=self.clue_weight,
            clue_reduction=self.clue_reduction,
        )
        return config

    @classmethod
    def from_config(cls, config):
        return cls(**deserialize_layers(config, "encoder"))
