"""Building blocks shared by the CRAM networks: a CNN stack and an MLP.

The CRAM paper (Section V-A) puts batch normalisation and an ELU after every
CNN and MLP layer except the last layer of each network. Both blocks follow
that rule: every convolution of `ConvStack` is normalised (a CNN is never the
last layer of a CRAM network), and `MLP` normalises every layer but, unless
`activate_last=True`, the last one. A convolution or dense layer followed by
batch normalisation has no bias (the normalisation's offset replaces it), as
TF-slim did in the released code.
"""

import keras
from keras import layers

from cram_keras.layers import batch_normalization, conv2d
from cram_keras.utils import check_bool, check_int_tuple, check_positive_int

# === Shared by the CRAM layers ===


def build_once(layer, input_shape):
    """Builds `layer` unless it is built (deserialisation may have built it)."""
    if not layer.built:
        layer.build(input_shape)


def deserialize_layers(config, *keys):
    """A copy of the layer config `config` whose entries `keys`, layers
    serialised by `keras.layers.serialize`, are deserialised (for the
    `from_config` of a layer built from other layers)."""
    config = dict(config)
    for key in keys:
        config[key] = keras.layers.deserialize(config[key])
    return config


def check_image_and_clue(name, input_shape):
    """Validates `[image_shape, clue_shape]`; returns them as tuples."""
    if (
        not isinstance(input_shape, (list, tuple))
        or len(input_shape) != 2
        or not all(isinstance(s, (list, tuple)) for s in input_shape)
    ):
        raise ValueError(
            f"`{name}` must be called on `[images, clue]`. "
            f"Received: input_shape={input_shape}"
        )
    image_shape, clue_shape = (tuple(s) for s in input_shape)
    if len(image_shape) != 4 or len(clue_shape) != 4:
        raise ValueError(
            f"`{name}` expects images (B, H, W, C) and clue (B, H, W, 1). "
            f"Received: input_shape={[image_shape, clue_shape]}"
        )
    if image_shape[1:3] != clue_shape[1:3] or None in image_shape[1:3]:
        raise ValueError(
            f"`{name}` expects images and clue of the same, known height and "
            f"width. Received: input_shape={[image_shape, clue_shape]}"
        )
    if 0 in image_shape[1:] or 0 in clue_shape[1:]:
        raise ValueError(
            f"`{name}` expects images and clue with a height, width and "
            "channels of at least 1. Received: "
            f"input_shape={[image_shape, clue_shape]}"
        )
    return image_shape, clue_shape


def check_pixels(name, input_shape, what="images"):
    """A `ValueError` unless the (batch, height, width, channels)
    `input_shape` has a height, width and channels of at least 1 (a
    convolution of an empty image fails deep in the backend otherwise)."""
    if 0 in tuple(input_shape)[1:]:
        raise ValueError(
            f"`{name}` expects {what} with a height, width and channels of at "
            f"least 1. Received: {what}.shape={tuple(input_shape)}"
        )


# === Blocks ===


class _LayerStack(keras.layers.Layer):
    """A layer that runs its sub-layers `self.stack` in turn, each batch
    normalisation in the mode `training`."""

    def build(self, input_shape):
        shape = tuple(input_shape)
        for layer in self.stack:
            build_once(layer, shape)
            shape = layer.compute_output_shape(shape)

    def call(self, inputs, training=None):
        x = inputs
        for layer in self.stack:
            if isinstance(layer, layers.BatchNormalization):
                x = layer(x, training=training)
            else:
                x = layer(x)
        return x


@keras.saving.register_keras_serializable(package="cram_keras")
class ConvStack(_LayerStack):
    """CNN of `len(filters)` layers: conv -> batch norm -> ELU [-> max pool].

    Every convolution uses "same" zero padding and no bias; each is followed
    by batch normalisation, an ELU and, when `pool_size` is set, a max pooling
    ("same" padding). The output is flattened when `flatten=True`. The
    convolutions are `cram_keras.layers.conv2d.Conv2D`: Keras' layer, which
    skips the kernel taps that only meet the zero padding of a small map.

    Args:
        filters: tuple of ints, filters of each convolution.
        kernel_size: int, square kernel size of every convolution.
        strides: int, stride of every convolution.
        pool_size: int or `None`. Max pooling window after each layer; `None`
            for no pooling.
        pool_strides: int, stride of the max pooling (ignored without pooling).
        flatten: bool, flatten the output to `(batch, features)`.
        **kwargs: base layer keyword arguments (`name`, `dtype`, ...); the
            dtype policy is passed on to every sub-layer.

    Call arguments:
        inputs: float tensor `(batch, height, width, channels)`. Height and
            width must be static when `flatten=True`.
        training: Python bool, batch normalisation mode.

    Returns:
        `(batch, h', w', filters[-1])`, or `(batch, h' * w' * filters[-1])`
        when flattened; `h' = ceil(height / (strides * pool_strides) ** L)`
        for `L` layers.

    Example:

    >>> import numpy as np
    >>> cnn = ConvStack((16, 32, 64), pool_size=3, pool_strides=2)
    >>> tuple(cnn(np.zeros((2, 15, 15, 1), "float32")).shape)
    (2, 256)
    """

    def __init__(
        self,
        filters,
        kernel_size=3,
        strides=1,
        pool_size=None,
        pool_strides=2,
        flatten=True,
        **kwargs,
    ):
        super().__init__(**kwargs)
        # === Config ===
        self.filters = check_int_tuple("filters", filters)
        self.kernel_size = check_positive_int("kernel_size", kernel_size)
        self.strides = check_positive_int("strides", strides)
        if pool_size is not None:
            check_positive_int("pool_size", pool_size)
        self.pool_size = pool_size
        self.pool_strides = check_positive_int("pool_strides", pool_strides)
        self.flatten = check_bool("flatten", flatten)
        # === Layers ===
        self.stack = []
        for i, f in enumerate(self.filters):
            self.stack.append(
                conv2d.Conv2D(
                    f,
                    self.kernel_size,
                    strides=self.strides,
                    padding="same",
                    use_bias=False,
                    dtype=self.dtype_policy,
                    name=f"conv{i}",
                )
            )
            self.stack.append(
                batch_normalization.BatchNormalization(
                    dtype=self.dtype_policy, name=f"bn{i}"
                )
            )
            self.stack.append(
                layers.Activation("elu", dtype=self.dtype_policy, name=f"elu{i}")
            )
            if pool_size is not None:
                self.stack.append(
                    layers.MaxPooling2D(
                        pool_size,
                        strides=self.pool_strides,
                        padding="same",
                        dtype=self.dtype_policy,
                        name=f"pool{i}",
                    )
                )
        if self.flatten:
            self.stack.append(layers.Flatten(dtype=self.dtype_policy, name="flatten"))

    def build(self, input_shape):
        if len(input_shape) != 4:
            raise ValueError(
                f"`{self.name}` expects images of shape (batch, height, width, "
                f"channels). Received: input_shape={tuple(input_shape)}"
            )
        if self.flatten and (input_shape[1] is None or input_shape[2] is None):
            raise ValueError(
                f"`{self.name}` flattens its output, so the image height and "
                f"width must be known. Received: input_shape={tuple(input_shape)}"
            )
        check_pixels(self.name, input_shape)
        super().build(input_shape)

    def call(self, inputs, training=None):
        check_pixels(self.name, inputs.shape)  # also after the first call
        return super().call(inputs, training=training)

    def compute_output_shape(self, input_shape):
        shape = tuple(input_shape)
        for layer in self.stack:
            shape = layer.compute_output_shape(shape)
        return shape

    def get_config(self):
        config = super().get_config()
        config.update(
            filters=list(self.filters),
            kernel_size=self.kernel_size,
            strides=self.strides,
            pool_size=self.pool_size,
            pool_strides=self.pool_strides,
            flatten=self.flatten,
        )
        return config


@keras.saving.register_keras_serializable(package="cram_keras")
class MLP(_LayerStack):
    """Multi-layer perceptron: [dense -> batch norm -> ELU] x (L - 1) -> dense.

    Hidden layers have no bias (batch normalisation follows them). The last
    layer is a plain dense layer with bias, unless `activate_last=True`, in
    which case it is normalised and activated like the others (for an MLP
    whose output feeds another layer of the same network).

    Args:
        units: tuple of ints, width of each layer; the last is the output size.
        activate_last: bool, batch norm + ELU after the last layer too.
        **kwargs: base layer keyword arguments (`name`, `dtype`, ...); the
            dtype policy is passed on to every sub-layer.

    Call arguments:
        inputs: float tensor `(batch, features)`.
        training: Python bool, batch normalisation mode.

    Returns:
        `(batch, units[-1])`.

    Example:

    >>> import numpy as np
    >>> tuple(MLP((256, 10))(np.zeros((4, 32), "float32")).shape)
    (4, 10)
    """

    def __init__(self, units, activate_last=False, **kwargs):
        super().__init__(**kwargs)
        # === Config ===
        self.units = check_int_tuple("units", units)
        self.activate_last = check_bool("activate_last", activate_last)
        # === Layers ===
        self.stack = []
        last = len(self.units) - 1
        for i, u in enumerate(self.units):
            normalised = i < last or activate_last
            self.stack.append(
                layers.Dense(
                    u,
                    use_bias=not normalised,
                    dtype=self.dtype_policy,
                    name=f"dense{i}",
                )
            )
            if normalised:
                self.stack.append(
                    batch_normalization.BatchNormalization(
                        dtype=self.dtype_policy, name=f"bn{i}"
                    )
                )
                self.stack.append(
                    layers.Activation("elu", dtype=self.dtype_policy, name=f"elu{i}")
                )

    def build(self, input_shape):
        if len(input_shape) != 2 or input_shape[-1] is None:
            raise ValueError(
                f"`{self.name}` expects inputs of shape (batch, features) with "
                f"known features. Received: input_shape={tuple(input_shape)}"
            )
        super().build(input_shape)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.units[-1])

    def get_config(self):
        config = super().get_config()
        config.update(units=list(self.units), activate_last=self.activate_last)
        return config
