"""RNN-SPN and its baselines (Sønderby et al., 2015, "Recurrent Spatial
Transformer Networks", arXiv:1509.05329).

Three models classify the digits of a cluttered MNIST sequence (paper Table 1):

* ``RNNSPN``: a GRU emits one affine transform per step; each crop is
  classified by one CNN shared across steps (paper Fig. 1b, eq. 5-7).
* ``FFNSPN``: one feed-forward spatial transformer, a CNN and one softmax
  head per digit (paper Fig. 1a, "SPN conv. network").
* ``ConvNet``: the FFN-SPN classifier without the transformer ("Conv. net.").

Where the paper's appendix and the released code
(github.com/skaae/recurrent-spatial-transformer-code, ``rnn_spn.py``,
``ffn_spn.py``) disagree, we follow the code that produced Table 1, with the
paper's value one constructor argument away:

* classifier dense layer: 400 units (code) rather than 256 (RNN-SPN appendix);
* dropout: rate 0.0 by default (the code's default; the paper tuned it on
  validation data and does not report it). ``dropout_placement="code"``
  (default) puts it where the released code does: in the classifier after
  its first two poolings and, for RNN-SPN only, in the localisation network
  after its second convolution (``ffn_spn.py`` also builds a dropout after
  the third convolution, but feeds it to a layer whose output is never used,
  so it does not act). ``"paper"`` puts it where the appendix lists it: in
  the classifier after both poolings and after the third convolution, none
  in the localisation network. The layers are `RampedDropout`; the released
  ``rnn_spn.py`` ramps the rate up over the first 5 epochs
  (`cram_keras.training.callbacks.DropoutRamp`);
* downsample factor: 2 (the best row of Table 1) rather than the code's
  default 3 (used for the paper's Fig. 3);
* all convolutions are 3x3 "valid" with ReLU (Lasagne's defaults), pooling 2x2.

The localisation CNN is maxpool 2 -> conv 20 -> maxpool 2 -> conv 20 ->
maxpool 2 -> conv 20 (paper appendix and code agree; no pooling after the
last convolution). Transforms use PyTorch's sampling convention
(``align_corners=False``), not Lasagne's, see ``SpatialTransformer``.

The networks run their layers through `run_stack`: a one-channel 3x3
convolution with ReLU followed by a 2x2 max-pooling (the classifier's first
two layers, the localisation network's second and third) is then one fused
op where the compiled kernel applies (`cram_keras.ops.conv_relu_max_pool`):
the same layers and weights, the values to float32 rounding.
"""

import keras
from keras import layers, ops

from cram_keras.layers import SpatialTransformer
from cram_keras.ops import conv_relu_max_pool
from cram_keras.utils import check_choice, check_positive_int

IDENTITY_AFFINE = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
GRU_INITIALIZERS = ("keras", "lasagne")
DROPOUT_PLACEMENTS = ("code", "paper")


def _check_rate(name, value):
    if not 0.0 <= float(value) < 1.0:
        raise ValueError(f"`{name}` must be in [0, 1). Received: {name}={value!r}")


@keras.saving.register_keras_serializable(package="cram_keras")
class RampedDropout(layers.Layer):
    """Inverted dropout whose rate can change from one epoch to the next.

    In training each unit is set to 0 with probability ``current_rate`` and
    the others are divided by ``1 - current_rate`` (as ``keras.layers.Dropout``
    and Lasagne's ``DropoutLayer``); at inference the layer is the identity.

    ``rate`` is the full rate, fixed at construction. ``current_rate`` is a
    non-trainable variable, ``rate`` until `set_current_rate` changes it
    (`cram_keras.training.callbacks.DropoutRamp` does at the start of each
    epoch). The compiled training step reads the variable, so a new value
    applies from the next step on, without retracing, on TensorFlow (also
    under ``tf.distribute``) and on JAX (where ``fit`` passes it to the step
    with the rest of the model's state).

    ``current_rate`` is state like a random seed, not a weight: it is in
    ``layer.variables`` but not in ``layer.weights``, so it is neither
    counted by ``count_params`` nor written to saved weights (a layer saves
    and loads exactly as ``keras.layers.Dropout``, which has no weights; a
    restored layer starts at ``rate``). With ``rate == 0`` the layer is the
    identity in training too and draws no random numbers. Building the layer
    (not constructing it) draws the seed of its masks, so the initial weights
    of a model under a fixed seed are the same whatever its dropout.

    Args:
        rate: the full dropout rate, in [0, 1).
        seed: seed of the dropout masks (None: from Keras' global seed).
        **kwargs: passed to ``keras.layers.Layer``.
    """

    def __init__(self, rate, seed=None, **kwargs):
        super().__init__(**kwargs)
        _check_rate("rate", rate)
        self.rate = float(rate)
        self.seed = seed
        self.supports_masking = True
        # Set without Keras' attribute tracking, which would make the variable
        # a weight; `variables` below lists it.
        object.__setattr__(
            self,
            "_current_rate",
            keras.Variable(
                self.rate,
                shape=(),
                dtype="float32",
                trainable=False,
                autocast=False,
                name="current_rate",
            ),
        )

    def build(self, input_shape):
        # The mask seeds are drawn here, not at construction: an unseeded
        # generator takes its seed from Python's global random state, as the
        # initialisers of the layers around do when they are constructed, so
        # a model's initial weights do not depend on its dropout.
        if self.rate > 0:
            self.seed_generator = keras.random.SeedGenerator(self.seed)

    @property
    def variables(self):
        current = getattr(self, "_current_rate", None)
        return super().variables + ([current] if current is not None else [])

    @property
    def current_rate(self):
        """The rate applied in training now (a Python float)."""
        return float(self._current_rate.numpy())

    def set_current_rate(self, value):
        """Sets the rate applied in training, ``0 <= value < 1``."""
        _check_rate("current_rate", value)
        self._current_rate.assign(float(value))

    def call(self, inputs, training=False):
        if not training or self.rate == 0.0:
            return inputs
        rate = self._current_rate.value
        noise = keras.random.uniform(ops.shape(inputs), seed=self.seed_generator)
        scale = ops.cast(1.0 / (1.0 - rate), inputs.dtype)
        return ops.where(noise >= rate, inputs * scale, ops.zeros_like(inputs))

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(rate=self.rate, seed=self.seed)
        return config


def _fusable_pair(conv, pool):
    """Whether ``conv`` then ``pool`` is `conv_relu_max_pool`'s pair: a
    float32 Conv2D with ReLU and bias, stride 1, "valid", no dilation or
    groups, then a 2x2 MaxPooling2D with stride 2, "valid", channels last."""
    return (
        isinstance(conv, layers.Conv2D)
        and isinstance(pool, layers.MaxPooling2D)
        and getattr(conv.activation, "__name__", None) == "relu"
        and conv.use_bias
        and tuple(conv.strides) == (1, 1)
        and tuple(conv.dilation_rate) == (1, 1)
        and conv.groups == 1
        and conv.padding == "valid"
        and conv.data_format == "channels_last"
        and conv.compute_dtype == "float32"
        and tuple(pool.pool_size) == (2, 2)
        and tuple(pool.strides) == (2, 2)
        and pool.padding == "valid"
        and pool.data_format == "channels_last"
    )


def run_stack(stack, inputs, training=None):
    """``stack(inputs, training=training)`` for a `keras.Sequential` of
    these networks, layer by layer, with each `_fusable_pair` on a
    one-channel float32 input run as `conv_relu_max_pool` (the compiled op
    where it applies, else the same `keras.ops`): the pair's weights stay
    the convolution's."""
    if not stack.built:
        stack.build(inputs.shape)
    x, stack_layers, i = inputs, stack.layers, 0
    # The names the layers' ops carry when the stack is called (for graphs,
    # TensorBoard and profiles): "<stack>/<layer>/...".
    with keras.name_scope(stack.name, caller=stack):
        while i < len(stack_layers):
            layer = stack_layers[i]
            following = stack_layers[i + 1] if i + 1 < len(stack_layers) else None
            if (
                following is not None
                and _fusable_pair(layer, following)
                and x.shape[-1] == 1
                and keras.backend.standardize_dtype(x.dtype) == "float32"
            ):
                with keras.name_scope(layer.name, caller=layer):
                    x = conv_relu_max_pool(x, layer.kernel, layer.bias)
                i += 2
                continue
            x = layer(x, training=training)
            i += 1
    return x


def localization_cnn(filters=20, dropout=None, name="localization_cnn", dtype=None):
    """maxpool 2 -> 3 x [conv filters@3x3 ReLU], maxpool 2 between: f_conv of eq. 5.

    With ``dropout`` (a rate), a `RampedDropout` follows the second
    convolution, as in the released RNN-SPN code; ``None``: no dropout layer.
    ``dtype``: the dtype policy of every layer (None: the global one).
    """
    policy = dict(dtype=dtype)
    stack = [
        layers.MaxPooling2D(2, name="pool0", **policy),
        layers.Conv2D(filters, 3, activation="relu", name="conv0", **policy),
        layers.MaxPooling2D(2, name="pool1", **policy),
        layers.Conv2D(filters, 3, activation="relu", name="conv1", **policy),
    ]
    if dropout is not None:
        stack.append(RampedDropout(dropout, name="dropout0", **policy))
    stack += [
        layers.MaxPooling2D(2, name="pool2", **policy),
        layers.Conv2D(filters, 3, activation="relu", name="conv2", **policy),
        layers.Flatten(name="flatten", **policy),
    ]
    return _sequential(stack, name, dtype)


def classification_cnn(
    filters, dense_units, dropout, placement="code", name="classifier", dtype=None
):
    """conv -> pool -> dropout -> conv -> pool -> dropout -> conv -> dense (ReLU).

    ``placement="paper"`` adds a third dropout after the third convolution
    (before the dense layer), as the paper's appendix lists. ``dtype``: the
    dtype policy of every layer (None: the global one).
    """
    check_choice("dropout_placement", placement, DROPOUT_PLACEMENTS)
    policy = dict(dtype=dtype)
    stack = [
        layers.Conv2D(filters, 3, activation="relu", name="conv0", **policy),
        layers.MaxPooling2D(2, name="pool0", **policy),
        RampedDropout(dropout, name="dropout0", **policy),
        layers.Conv2D(filters, 3, activation="relu", name="conv1", **policy),
        layers.MaxPooling2D(2, name="pool1", **policy),
        RampedDropout(dropout, name="dropout1", **policy),
        layers.Conv2D(filters, 3, activation="relu", name="conv2", **policy),
    ]
    if placement == "paper":
        stack.append(RampedDropout(dropout, name="dropout2", **policy))
    stack += [
        layers.Flatten(name="flatten", **policy),
        layers.Dense(dense_units, activation="relu", name="dense", **policy),
    ]
    return _sequential(stack, name, dtype)


def _sequential(stack, name, dtype):
    """`keras.Sequential(stack)` under the dtype policy `dtype` (None: global)."""
    model = keras.Sequential(stack, name=name)
    if dtype is not None:
        # Sequential takes no `dtype` argument; its layers carry the policy.
        model.dtype_policy = dtype
    return model


def gru(units, initializer, name="rnn", dtype=None):
    """GRU(units) returning sequences, with Keras' or Lasagne's initialisers."""
    if initializer not in GRU_INITIALIZERS:
        raise ValueError(
            f"`gru_initializer` must be one of {GRU_INITIALIZERS}. "
            f"Received: gru_initializer={initializer!r}"
        )
    kwargs = {}
    if initializer == "lasagne":
        # lasagne.layers.GRULayer's defaults (released RNN-SPN code): W_in and
        # W_hid Normal(std=0.1) for every gate and the candidate, b zeros.
        kwargs = dict(
            kernel_initializer=keras.initializers.RandomNormal(stddev=0.1),
            recurrent_initializer=keras.initializers.RandomNormal(stddev=0.1),
            bias_initializer="zeros",
        )
    return layers.GRU(units, return_sequences=True, name=name, dtype=dtype, **kwargs)


def identity_affine_head(name, dtype=None):
    """Dense(6) that starts at the identity transform (zero kernel, identity bias)."""
    return layers.Dense(
        6,
        kernel_initializer="zeros",
        bias_initializer=keras.initializers.Constant(IDENTITY_AFFINE),
        name=name,
        dtype=dtype,
    )


def affine_transformer(downsample_factor, align_corners, dtype=None):
    """The affine `SpatialTransformer` named "transformer", crops downsampled
    by `downsample_factor`."""
    return SpatialTransformer(
        transform="affine",
        downsample_factor=downsample_factor,
        align_corners=align_corners,
        dtype=dtype,
        name="transformer",
    )


class _DigitClassifier(keras.Model):
    """What RNNSPN, FFNSPN and ConvNet share: `num_steps` digits of
    `num_classes` classes, read by a `classification_cnn` (its settings
    checked and kept here, in the config)."""

    def __init__(
        self,
        num_steps,
        num_classes,
        classifier_filters,
        dense_units,
        dropout,
        dropout_placement,
        **kwargs,
    ):
        super().__init__(**kwargs)
        for name in ("num_steps", "num_classes", "classifier_filters", "dense_units"):
            check_positive_int(name, locals()[name])
        _check_rate("dropout", dropout)
        check_choice("dropout_placement", dropout_placement, DROPOUT_PLACEMENTS)
        self.num_steps = num_steps
        self.num_classes = num_classes
        self.classifier_filters = classifier_filters
        self.dense_units = dense_units
        self.dropout = dropout
        self.dropout_placement = dropout_placement

    def _classification_cnn(self):
        """The model's `classification_cnn`, named "classifier"."""
        return classification_cnn(
            self.classifier_filters,
            self.dense_units,
            self.dropout,
            self.dropout_placement,
            name="classifier",
            dtype=self.dtype_policy,
        )

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.num_steps, self.num_classes)

    def get_config(self):
        config = super().get_config()
        config.update(
            num_steps=self.num_steps,
            num_classes=self.num_classes,
            classifier_filters=self.classifier_filters,
            dense_units=self.dense_units,
            dropout=self.dropout,
            dropout_placement=self.dropout_placement,
        )
        return config


@keras.saving.register_keras_serializable(package="cram_keras")
class RNNSPN(_DigitClassifier):
    """Recurrent spatial transformer network for digit sequences.

    With image ``I`` of shape (B, H, W, C) and ``T = num_steps``:

        c   = f_conv(I)                        (B, F)       eq. 5
        h_t = GRU(c, h_{t-1}),  t = 1..T       (B, T, 256)  eq. 6
        A_t = Dense_6(h_t)                     (B, T, 6)    eq. 7, starts at identity
        x_t = ST(I, A_t), size int(H/d) x int(W/d)
        logits_t = Dense_10(CNN(x_t))          (B, T, 10)   one CNN shared over t

    The same features ``c`` feed the GRU at every step. The ``T`` crops go
    through the classifier as one batch of ``B * T`` images.

    Args:
        num_steps: number of glimpses / digits (3).
        num_classes: classes per step (10).
        downsample_factor: RNN-SPN's d; crops are ``int(H/d) x int(W/d)`` (2.0).
        localization_filters: filters of the localisation convolutions (20).
        rnn_units: GRU units (256).
        classifier_filters: filters of the classifier convolutions (32).
        dense_units: classifier dense units (400 as the released code; the
            paper's appendix says 256).
        dropout: the dropout rate (0.0, the released code's default).
        dropout_placement: where the dropout layers are: ``"code"`` (the
            released code's: in the classifier after its first two poolings
            and in the localisation network after its second convolution;
            the default) or ``"paper"`` (the appendix's: in the classifier
            after both poolings and after the third convolution).
        align_corners: sampling convention of the transformer (False).
        gru_initializer: ``"keras"`` (Keras' GRU defaults: Glorot-uniform
            input kernel, orthogonal recurrent kernel, zero biases) or
            ``"lasagne"`` (the released code's Lasagne defaults: input and
            recurrent kernels Normal(0, 0.1), zero biases). Default
            ``"keras"``.
        **kwargs: passed to ``keras.Model``.

    Train with ``cram_keras.training.clipping.TwoStageClipOptimizer`` to clip
    the gradients as the paper (``cram_keras.experiments.rnn_spn.compile_model``
    does).

    Call arguments:
        images: float tensor (B, H, W, C) in [0, 1].
        training: Python bool, dropout on or off.
        return_transforms: if True, return ``(logits, theta)`` with ``theta`` of
            shape (B, T, 2, 3), the per-step affine matrices (x first,
            normalised coordinates).

    Returns:
        logits of shape (B, T, num_classes), or ``(logits, theta)``.

    Example:

    >>> model = RNNSPN()
    >>> model(np.zeros((2, 100, 100, 1), "float32")).shape
    (2, 3, 10)
    """

    def __init__(
        self,
        num_steps=3,
        num_classes=10,
        downsample_factor=2.0,
        localization_filters=20,
        rnn_units=256,
        classifier_filters=32,
        dense_units=400,
        dropout=0.0,
        align_corners=False,
        gru_initializer="keras",
        dropout_placement="code",
        **kwargs,
    ):
        super().__init__(
            num_steps,
            num_classes,
            classifier_filters,
            dense_units,
            dropout,
            dropout_placement,
            **kwargs,
        )
        check_positive_int("localization_filters", localization_filters)
        check_positive_int("rnn_units", rnn_units)
        # === Config ===
        self.downsample_factor = downsample_factor
        self.localization_filters = localization_filters
        self.rnn_units = rnn_units
        self.align_corners = align_corners
        self.gru_initializer = gru_initializer
        # === Layers ===
        policy = self.dtype_policy
        self.localization = localization_cnn(
            localization_filters,
            dropout=dropout if dropout_placement == "code" else None,
            dtype=policy,
        )
        self.rnn = gru(rnn_units, gru_initializer, name="rnn", dtype=policy)
        self.transform_head = identity_affine_head("transform_head", dtype=policy)
        self.transformer = affine_transformer(downsample_factor, align_corners, policy)
        self.classifier = self._classification_cnn()
        self.logits = layers.Dense(num_classes, dtype=policy, name="logits")

    def transforms(self, images, training=None):
        """Per-step affine parameters (B, T, 6) from the localisation GRU."""
        features = run_stack(self.localization, images, training)
        repeated = ops.repeat(ops.expand_dims(features, 1), self.num_steps, axis=1)
        return self.transform_head(self.rnn(repeated))

    def crops(self, images, params=None):
        """The T transformed crops (B, T, h, w, C) for the given or predicted params."""
        if params is None:
            params = self.transforms(images)
        batch = ops.shape(images)[0]
        tiled = ops.repeat(images, self.num_steps, axis=0)
        flat_params = ops.reshape(params, (-1, 6))
        crops = self.transformer([tiled, flat_params])
        return ops.reshape(crops, (batch, self.num_steps) + tuple(crops.shape[1:]))

    def call(self, images, training=None, return_transforms=False):
        params = self.transforms(images, training=training)
        crops = self.crops(images, params)
        flat = ops.reshape(crops, (-1,) + tuple(crops.shape[2:]))
        logits = self.logits(run_stack(self.classifier, flat, training))
        logits = ops.reshape(logits, (-1, self.num_steps, self.num_classes))
        if return_transforms:
            return logits, ops.reshape(params, (-1, self.num_steps, 2, 3))
        return logits

    def get_config(self):
        config = super().get_config()
        config.update(
            downsample_factor=self.downsample_factor,
            localization_filters=self.localization_filters,
            rnn_units=self.rnn_units,
            align_corners=self.align_corners,
            gru_initializer=self.gru_initializer,
        )
        return config


@keras.saving.register_keras_serializable(package="cram_keras")
class ConvNet(_DigitClassifier):
    """The paper's "Conv. net." baseline: a CNN with one softmax head per
    digit, on the full image (FFN-SPN's classifier without the transformer).

        logits_t = Dense_10^t(CNN(I)),  t = 1..T   one head per digit

    Args:
        num_steps, num_classes, classifier_filters (96), dense_units (400),
        dropout (0.0), dropout_placement (``"code"``): as in ``FFNSPN`` (no
        released script trains this network; ``"code"`` is the FFN-SPN
        script's classifier).
    """

    def __init__(
        self,
        num_steps=3,
        num_classes=10,
        classifier_filters=96,
        dense_units=400,
        dropout=0.0,
        dropout_placement="code",
        **kwargs,
    ):
        super().__init__(
            num_steps,
            num_classes,
            classifier_filters,
            dense_units,
            dropout,
            dropout_placement,
            **kwargs,
        )
        self.classifier = self._classification_cnn()
        self.heads = [
            layers.Dense(num_classes, dtype=self.dtype_policy, name=f"head{i}")
            for i in range(num_steps)
        ]

    def _classify(self, images, training):
        features = run_stack(self.classifier, images, training)
        return ops.stack([head(features) for head in self.heads], axis=1)

    def call(self, images, training=None):
        return self._classify(images, training)


@keras.saving.register_keras_serializable(package="cram_keras")
class FFNSPN(ConvNet):
    """Feed-forward spatial transformer baseline (paper Fig. 1a, appendix 6.2).

        A = Dense_6(Dense_200(f_conv(I)))     one transform, starts at identity
        x = ST(I, A), size int(H/d) x int(W/d)
        logits_t = Dense_10^t(CNN(x)),  t = 1..T   one head per digit

    Args:
        num_steps: digits per image, one softmax head each (3).
        num_classes: classes per digit (10).
        downsample_factor: d of the transformer (2.0, the paper's and code's).
        localization_filters: localisation convolution filters (20).
        localization_units: localisation dense units (200).
        classifier_filters: classifier convolution filters (96).
        dense_units: classifier dense units (400).
        dropout: the dropout rate (0.0).
        dropout_placement: ``"code"`` (the released code's: in the classifier
            after its first two poolings, none in the localisation network;
            the default) or ``"paper"`` (the appendix's: in the classifier
            after both poolings and after the third convolution).
        align_corners: sampling convention of the transformer (False).

    Call arguments:
        images: (B, H, W, C); ``training``; ``return_transforms`` as in RNNSPN,
        with theta of shape (B, 1, 2, 3).
    """

    def __init__(
        self,
        num_steps=3,
        num_classes=10,
        downsample_factor=2.0,
        localization_filters=20,
        localization_units=200,
        classifier_filters=96,
        dense_units=400,
        dropout=0.0,
        align_corners=False,
        dropout_placement="code",
        **kwargs,
    ):
        super().__init__(
            num_steps,
            num_classes,
            classifier_filters,
            dense_units,
            dropout,
            dropout_placement,
            **kwargs,
        )
        check_positive_int("localization_filters", localization_filters)
        check_positive_int("localization_units", localization_units)
        self.downsample_factor = downsample_factor
        self.localization_filters = localization_filters
        self.localization_units = localization_units
        self.align_corners = align_corners
        policy = self.dtype_policy
        self.localization = localization_cnn(localization_filters, dtype=policy)
        self.localization_dense = layers.Dense(
            localization_units,
            activation="relu",
            dtype=policy,
            name="localization_dense",
        )
        self.transform_head = identity_affine_head("transform_head", dtype=policy)
        self.transformer = affine_transformer(downsample_factor, align_corners, policy)

    def transforms(self, images):
        """Affine parameters (B, 1, 6): one transform for the whole sequence."""
        hidden = self.localization_dense(run_stack(self.localization, images))
        return ops.expand_dims(self.transform_head(hidden), 1)

    def crops(self, images, params=None):
        """The transformed image (B, 1, h, w, C)."""
        if params is None:
            params = self.transforms(images)
        return ops.expand_dims(self.transformer([images, params[:, 0]]), 1)

    def call(self, images, training=None, return_transforms=False):
        params = self.transforms(images)
        logits = self._classify(self.crops(images, params)[:, 0], training)
        if return_transforms:
            return logits, ops.reshape(params, (-1, 1, 2, 3))
        return logits

    def get_config(self):
        config = super().get_config()
        config.update(
            downsample_factor=self.downsample_factor,
            localization_filters=self.localization_filters,
            localization_units=self.localization_units,
            align_corners=self.align_corners,
        )
        return config


MODELS = {"rnn_spn": RNNSPN, "ffn_spn": FFNSPN, "conv": ConvNet}
