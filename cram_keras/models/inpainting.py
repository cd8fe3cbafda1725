"""CRAM inpainting: DCGAN generator, local and global discriminators, and the
GAN model that trains them with an encoder (Chung & Cho, 2018, Sections
III-B2, IV-B, V-B; docs/design.md, experiment E3).

- `InpaintingGenerator`: the decoder `G(z)`, fractionally-strided 3x3
  convolutions of stride 2 from `z` up to the image size, output in [0, 1].
- `LocalDiscriminator`: scores a fixed-size crop centred on the hole.
- `GlobalDiscriminator`: scores the whole (completed or original) image.
- `CNNEncoder`: the no-attention baseline encoder; same call interface as
  `CRAMEncoder` (`[images, clue]` -> `z`), but it ignores the clue and has no
  clue loss.
- `ContextSkipEncoder`: beyond the paper, a CRAM encoder's `z` concatenated
  with a small `CNNEncoder` of the whole occluded image.
- `CRAMInpainter`: the `keras.Model` that owns an encoder, the generator and
  both discriminators, with one optimizer per network and a custom
  training step: `fit`, `evaluate` and `predict` run on the TensorFlow and
  JAX backends (on torch they raise `NotImplementedError` naming the
  backend); the networks' forward passes run on every backend. The losses
  are written once in `keras.ops`; only the gradients and the optimizer
  updates differ per backend (`tf.GradientTape` and `optimizer.apply` on
  TensorFlow; `jax.vjp` and `optimizer.stateless_apply` on JAX).

Mixed precision: under a `mixed_bfloat16` dtype policy (set globally before
the networks are built, or given to each network), the networks compute in
bfloat16 with float32 variables (their batch norms keep float32 statistics),
while `CRAMInpainter` takes and returns float32 images and computes every
loss in float32: the generator's output, the glimpse parameters and the
discriminators' logits are cast to float32 before the losses, the completed
image and the scores. bfloat16 has float32's range, so the optimizers need
no loss scaling; `mixed_float16` would, and is refused by `compile`.

Every network follows the paper's rule (Sections V-A, V-B): batch
normalisation and ELU after every layer except the last of each network. The
discriminators return logits (no sigmoid): the losses apply the sigmoid
inside `softplus` (binary cross-entropy `from_logits`), which is the paper's
sigmoid output and log-loss computed without overflow or `log(0)`.

Deviations from the paper and the released code (also in docs/deviations.md):

- The generator's output is in the image range [0, 1] (sigmoid); the
  released code's was [0, 2].
- The local discriminator sees a crop *around* the hole (the hole plus a
  margin, `crop_size` pixels square), not exactly the hole, so that it can
  judge the seam; the global discriminator scores the *completed* image
  (original outside the hole), not the raw generator output (as Iizuka et
  al. 2017).
- Each optimizer updates only its own network's variables; the released
  code gave no variable lists, so every step moved every network.
- L_recon is the L1 error averaged over the hole's pixels and channels of
  each image (eq. 12 sums it), so `alpha` does not depend on the hole size.
- The generator's adversarial loss is the non-saturating
  `-log D(completed)` rather than eq. 14-15's `log(1 - D(completed))`
  (same fixed point, useful gradients early on; Goodfellow et al. 2014).
"""

import keras
import numpy as np
from keras import layers, ops

from cram_keras.evaluation.metrics import completed_image, hole_l1, hole_psnr, ssim
from cram_keras.layers.conv_blocks import MLP, ConvStack, build_once
from cram_keras.utils import check_bool, check_int_tuple, check_positive_int

_PACKAGE = "cram_keras"
# Backends with a training step (`CRAMInpainter.train_step`).
TRAINING_BACKENDS = ("tensorflow", "jax")
# The networks in the order of `CRAMInpainter._optimizer_variables`.
_NETWORKS = ("generator", "local_discriminator", "global_discriminator")


def _check_weight(name, value):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise ValueError(
            f"`{name}` must be a non-negative number. Received: {name}={value!r}"
        )
    return float(value)


class InpainterOptimizers:
    """The inpainter's three optimizers seen as one, as `model.optimizer`.

    Keras' JAX trainer carries `model.optimizer.variables` through its
    stateless training steps and writes them back after each epoch; here
    that list is the generator optimizer's variables, then the local, then
    the global discriminator optimizer's (`variables`). The optimizers
    themselves stay the model's `g_optimizer`, `local_d_optimizer` and
    `global_d_optimizer` (saved under those names: this object holds no
    state of its own and is not saved). `iterations` is the number of
    training steps (the generator optimizer's counter). Callbacks that look
    for `optimizers` (`keras.callbacks.LearningRateScheduler`,
    `ReduceLROnPlateau`) set each optimizer's learning rate; there is no
    single `learning_rate`.

    Args:
        model: the compiled `CRAMInpainter`.
    """

    __slots__ = ("_model",)

    def __init__(self, model):
        self._model = model

    @property
    def optimizers(self):
        """`(g_optimizer, local_d_optimizer, global_d_optimizer)`."""
        return tuple(optimizer for optimizer, _ in self._model._optimizer_variables())

    @property
    def variables(self):
        """Every variable of the three optimizers, in the order of `optimizers`."""
        return [v for optimizer in self.optimizers for v in optimizer.variables]

    @property
    def iterations(self):
        """The number of training steps: the generator optimizer's counter
        (each of the three steps once per batch)."""
        return self._model.g_optimizer.iterations

    @property
    def built(self):
        return all(optimizer.built for optimizer in self.optimizers)

    def build(self, var_list=None):
        """Builds each optimizer on its own network's variables (`var_list`,
        the model's trainable variables, is not needed)."""
        del var_list
        self._model._build_optimizers()

    @property
    def learning_rate(self):
        raise AttributeError(
            "The inpainter has three optimizers and no single learning rate: "
            "use model.g_optimizer, model.local_d_optimizer or "
            "model.global_d_optimizer (or model.optimizer.optimizers)."
        )

    def __repr__(self):
        names = ", ".join(type(o).__name__ for o in self.optimizers)
        return f"<InpainterOptimizers ({names})>"


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


@keras.saving.register_keras_serializable(package=_PACKAGE)
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
        self.project_bn = layers.BatchNormalization(name="project_bn", **policy)
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
            self.upsample.append(layers.BatchNormalization(name=f"bn{i}", **policy))
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


@keras.saving.register_keras_serializable(package=_PACKAGE)
class LocalDiscriminator(keras.layers.Layer):
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
        super().__init__(**kwargs)
        # === Config ===
        self.crop_size = check_positive_int("crop_size", crop_size)
        self.filters = check_int_tuple("filters", filters)
        self.units = check_positive_int("units", units)
        # === Layers ===
        self.cnn = ConvStack(
            self.filters, kernel_size=5, strides=2, dtype=self.dtype_policy, name="cnn"
        )
        self.mlp = MLP((self.units, 1), dtype=self.dtype_policy, name="mlp")

    def build(self, input_shape):
        image_shape = tuple(input_shape[0])
        crop_shape = (image_shape[0], self.crop_size, self.crop_size, image_shape[-1])
        self.cnn.build(crop_shape)
        self.mlp.build(self.cnn.compute_output_shape(crop_shape))

    def crop(self, images, mask):
        """The discriminator's view: `crop_around_hole(images, mask, crop_size)`."""
        return crop_around_hole(images, mask, self.crop_size)

    def call(self, inputs, training=None):
        images, mask = inputs
        features = self.cnn(self.crop(images, mask), training=training)
        return self.mlp(features, training=training)

    def compute_output_shape(self, input_shape):
        return (input_shape[0][0], 1)

    def get_config(self):
        config = super().get_config()
        config.update(
            crop_size=self.crop_size, filters=list(self.filters), units=self.units
        )
        return config


@keras.saving.register_keras_serializable(package=_PACKAGE)
class GlobalDiscriminator(keras.layers.Layer):
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
        super().__init__(**kwargs)
        # === Config ===
        self.filters = check_int_tuple("filters", filters)
        self.units = check_positive_int("units", units)
        # === Layers ===
        self.cnn = ConvStack(
            self.filters, kernel_size=5, strides=2, dtype=self.dtype_policy, name="cnn"
        )
        self.mlp = MLP((self.units, 1), dtype=self.dtype_policy, name="mlp")

    def build(self, input_shape):
        self.cnn.build(tuple(input_shape))
        self.mlp.build(self.cnn.compute_output_shape(tuple(input_shape)))

    def call(self, images, training=None):
        return self.mlp(self.cnn(images, training=training), training=training)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], 1)

    def get_config(self):
        config = super().get_config()
        config.update(filters=list(self.filters), units=self.units)
        return config


@keras.saving.register_keras_serializable(package=_PACKAGE)
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


@keras.saving.register_keras_serializable(package=_PACKAGE)
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
        config = dict(config)
        config["cram"] = keras.layers.deserialize(config["cram"])
        config["skip"] = keras.layers.deserialize(config["skip"])
        return cls(**config)


def _at_least_float32(x):
    """`x` as a tensor, cast to float32 if it is a narrower float (bfloat16 or
    float16, a mixed dtype policy's compute dtype)."""
    x = ops.convert_to_tensor(x)
    if keras.backend.standardize_dtype(x.dtype) in ("bfloat16", "float16"):
        return ops.cast(x, "float32")
    return x


def _update_trackers(trackers, values):
    """Adds `values[name]` to each `Mean` tracker; returns every tracker's result."""
    for name, value in values.items():
        trackers[name].update_state(value)
    return {name: tracker.result() for name, tracker in trackers.items()}


def _current_values(scope, variables, values):
    """The values of `variables` at the end of a `keras.StatelessScope` that
    started from `values` (those it did not assign keep theirs)."""
    current = []
    for variable, value in zip(variables, values, strict=True):
        new = scope.get_current_value(variable)
        current.append(value if new is None else new)
    return current


@keras.saving.register_keras_serializable(package=_PACKAGE)
class CRAMInpainter(keras.Model):
    """CRAM for inpainting: encoder (clue = mask), generator, two discriminators.

    The encoder sees the occluded image (zeros in the hole) and the mask as
    the clue; the generator decodes its encoding `z` into an image; the
    completed image is the input outside the hole and the generator's output
    inside (`completed_image`). Training minimises (paper eq. 17)

        L_G = clue_weight * L_clue + alpha * L_recon + beta * L_gan

    - `L_clue`: `cram_keras.losses.clue_loss(mask, tau, glimpse_size)`, the
      fraction of each glimpse outside the hole, averaged over glimpses
      (eq. 9); 0 for an encoder without glimpses (`CNNEncoder`).
    - `L_recon`: eq. 12, `|G(z) - Y*|` averaged over the hole's pixels and
      channels of each image, then over the batch.
    - `L_gan` = local + global (eq. 13), each the non-saturating
      `softplus(-D(completed))` = `-log sigmoid(D(completed))`.
      For the first `warmup_steps` generator steps `L_gan` is switched off
      (reconstruction-only warm-up, as the released code and Iizuka et al.);
      the discriminators train from the first step, so that they are
      informative when the adversarial term switches on.

    Each discriminator minimises `softplus(-D(real)) + softplus(D(fake))`
    (binary cross-entropy from logits; eq. 14-15), with real = the original
    image and fake = the completed image, each seen by the local
    discriminator through a crop around the hole.

    Under `tf.distribute`, every loss is summed over the replica's examples
    and divided by the global batch size (`tf.nn.compute_average_loss`), so
    that the optimizers' cross-replica gradient sum is the gradient of the
    global-batch mean; the clue loss (a per-replica batch mean) is divided by
    the number of replicas.

    Under a `mixed_bfloat16` dtype policy the networks compute in bfloat16
    (float32 variables); the model's own inputs are not cast (it is built
    with `autocast=False`), and the completed images, the generator output
    that `generate` returns and every loss are float32.

    Backends: `fit`, `evaluate` and `predict` run on TensorFlow and JAX, from
    the same loss code and to the same result (batch-norm statistics, loss
    trackers, optimizer slots and any gradient clipping of the optimizers
    included). Weights and optimizer state are saved alike on both, so a run
    checkpointed on one backend resumes on the other. After `compile`,
    `model.optimizer` is an `InpainterOptimizers`: the three optimizers seen
    as one (their variables in one list, which the JAX trainer carries
    through its stateless steps); the optimizers themselves are
    `g_optimizer`, `local_d_optimizer` and `global_d_optimizer`, and are
    saved under those names.

    Args:
        encoder: a layer called on `[images, clue]` that accepts
            `return_glimpses=True` and then returns `(z, tau, patches)`
            (`CRAMEncoder`) or `(z, None, None)` (`CNNEncoder`). For the clue
            loss it must expose `glimpse_size`.
        generator: an `InpaintingGenerator` (z -> image in [0, 1]).
        local_discriminator: a `LocalDiscriminator` (`[images, mask]` -> logits).
        global_discriminator: a `GlobalDiscriminator` (images -> logits).
        alpha: weight of L_recon (1.0).
        beta: weight of L_gan (1e-3).
        clue_weight: weight of L_clue (0.1, the released code's).
        warmup_steps: generator steps without L_gan (0).
        **kwargs: `keras.Model` keyword arguments (`name`, ...).

    Call arguments:
        inputs: `[images, mask]`, (B, H, W, C) in [0, 1] and (B, H, W, 1).
        training: Python bool.

    Returns:
        The completed images (B, H, W, C).

    Example:

    >>> model = CRAMInpainter(CNNEncoder(units=64), InpaintingGenerator(32, 1),
    ...                       LocalDiscriminator(16), GlobalDiscriminator())
    >>> model.compile(g_optimizer=keras.optimizers.Adam(1e-4),
    ...               local_d_optimizer=keras.optimizers.Adam(1e-4),
    ...               global_d_optimizer=keras.optimizers.Adam(1e-4))
    >>> model.fit(inpainting_dataset(images, batch_size=16), epochs=1)
    """

    def __init__(
        self,
        encoder,
        generator,
        local_discriminator,
        global_discriminator,
        alpha=1.0,
        beta=1e-3,
        clue_weight=0.1,
        warmup_steps=0,
        **kwargs,
    ):
        # The images stay float32 under a mixed dtype policy: each network
        # casts its own inputs, and the completed image keeps the original
        # pixels outside the hole exactly.
        kwargs.setdefault("autocast", False)
        super().__init__(**kwargs)
        # === Layers ===
        self.encoder = encoder
        self.generator = generator
        self.local_discriminator = local_discriminator
        self.global_discriminator = global_discriminator
        # === Config ===
        self.alpha = _check_weight("alpha", alpha)
        self.beta = _check_weight("beta", beta)
        self.clue_weight = _check_weight("clue_weight", clue_weight)
        if (
            isinstance(warmup_steps, bool)
            or not isinstance(warmup_steps, int)
            or warmup_steps < 0
        ):
            raise ValueError(
                "`warmup_steps` must be a non-negative integer. "
                f"Received: warmup_steps={warmup_steps!r}"
            )
        self.warmup_steps = warmup_steps
        # Set by compile(); None until then (and in a model loaded with
        # compile=False), so that saving and loading skip them.
        self.g_optimizer = None
        self.local_d_optimizer = None
        self.global_d_optimizer = None
        # === Metrics ===
        names = (
            "g_loss",
            "recon_loss",
            "clue_loss",
            "adv_loss",
            "local_d_loss",
            "global_d_loss",
        )
        self.train_trackers = {n: keras.metrics.Mean(name=n) for n in names}
        self.test_trackers = {
            n: keras.metrics.Mean(name=n) for n in ("hole_psnr", "hole_l1", "ssim")
        }

    # --- Building and compiling -------------------------------------------

    def build(self, input_shape):
        """Builds every network for `[image_shape, mask_shape]` (or an image shape)."""
        if isinstance(input_shape, (list, tuple)) and isinstance(
            input_shape[0], (list, tuple)
        ):
            image_shape = tuple(input_shape[0])
        else:
            image_shape = tuple(input_shape)
        if len(image_shape) != 4 or None in image_shape[1:]:
            raise ValueError(
                f"`{self.name}` needs images (B, H, W, C) of known H, W, C. "
                f"Received: input_shape={input_shape}"
            )
        images = ops.zeros((1,) + image_shape[1:])
        mask = ops.ones((1,) + image_shape[1:3] + (1,))
        generated = self.generator(self.encoder([images, mask]))
        self.local_discriminator([generated, mask])
        self.global_discriminator(generated)
        self.built = True
        self._build_optimizers()

    def compile(self, g_optimizer, local_d_optimizer, global_d_optimizer, **kwargs):
        """One optimizer per network; `kwargs` go to `keras.Model.compile`
        (for example `jit_compile`, `steps_per_execution`). Afterwards
        `model.optimizer` is the three seen as one (`InpainterOptimizers`)."""
        half = [
            network.name
            for network in self._networks()
            if network.dtype_policy.compute_dtype == "float16"
        ]
        if half:
            raise ValueError(
                "The inpainter trains under float32 or mixed_bfloat16; float16 "
                "compute needs loss scaling, which its three-optimizer step does "
                f"not do. Received: float16 compute in {', '.join(half)}. Use "
                "keras.config.set_dtype_policy('mixed_bfloat16') or 'float32' "
                "before building the networks."
            )
        # No Keras optimizer for keras.Model itself: it would build unused
        # slots for every variable (the three below do the work).
        super().compile(optimizer=None, **kwargs)
        self.g_optimizer = g_optimizer
        self.local_d_optimizer = local_d_optimizer
        self.global_d_optimizer = global_d_optimizer
        # What the JAX trainer carries through its steps (and Keras asks of
        # `model.optimizer` elsewhere: `built`, `build`, `variables`).
        self.optimizer = InpainterOptimizers(self)
        self._build_optimizers()

    def _build_optimizers(self):
        # Built before training so that BackupAndRestore and load_weights can
        # restore their slots (moments, iteration counters).
        if not self.built or self.g_optimizer is None:
            return
        for optimizer, variables in self._optimizer_variables():
            if not optimizer.built:
                optimizer.build(variables)

    def _networks(self):
        return (
            self.encoder,
            self.generator,
            self.local_discriminator,
            self.global_discriminator,
        )

    def _optimizer_variables(self):
        return (
            (self.g_optimizer, self.generator_variables),
            (self.local_d_optimizer, self.local_discriminator.trainable_variables),
            (self.global_d_optimizer, self.global_discriminator.trainable_variables),
        )

    @property
    def generator_variables(self):
        """What the generator optimizer updates: encoder + generator weights."""
        return self.encoder.trainable_variables + self.generator.trainable_variables

    @property
    def metrics(self):
        return list(self.train_trackers.values()) + list(self.test_trackers.values())

    # --- Forward ------------------------------------------------------------

    def generate(self, images, mask, training=False, ablate=None):
        """Generator output `G(z)` and the glimpses' `tau` (or None), both
        in the images' dtype (float32 at least, whatever the networks
        compute in).

        The encoder sees `images * (1 - mask)` (zeros in the hole) and the
        mask as the clue. `ablate` ("glimpses" or "context", CRAM encoders
        only) cuts one pathway for diagnostics (`CRAMEncoder.call`).
        """
        images = _at_least_float32(images)
        mask = ops.cast(mask, images.dtype)
        occluded = images * (1.0 - mask)
        kwargs = {} if ablate is None else {"ablate": ablate}
        z, tau, _ = self.encoder(
            [occluded, mask], training=training, return_glimpses=True, **kwargs
        )
        generated = ops.cast(self.generator(z, training=training), images.dtype)
        return generated, None if tau is None else ops.cast(tau, images.dtype)

    def call(self, inputs, training=False):
        images, mask = inputs
        images = _at_least_float32(images)
        generated, _ = self.generate(images, mask, training=training)
        return completed_image(images, generated, mask)

    # --- Training -----------------------------------------------------------

    def compute_losses(self, images, mask, replicas=1):
        """One forward pass in training mode; every loss, in `keras.ops`.

        The one definition of the losses for every backend; `train_step`
        differs per backend only in how it takes the gradients and applies
        them.

        Args:
            images: (B, H, W, C) in [0, 1], this replica's examples.
            mask: (B, H, W, 1), 1 = hole.
            replicas: the number of replicas the global batch is split over
                (`tf.distribute`); 1 otherwise.

        Returns:
            `(objectives, losses)`: `objectives` maps "generator",
            "local_discriminator" and "global_discriminator" to the scalar
            that network's optimizer minimises (per-example losses summed
            over this replica's examples and divided by the global batch
            size); `losses` maps the tracker names to this replica's batch
            means (for logging).
        """

        def average(per_example):
            # Sum over this replica's examples / global batch size, as
            # tf.nn.compute_average_loss (without its XLA-ignored asserts).
            count = ops.cast(ops.shape(per_example)[0] * replicas, per_example.dtype)
            return ops.sum(per_example) / count

        # float32 (at least) images, generator output and logits: every loss
        # is computed in float32 whatever the networks compute in.
        images = _at_least_float32(images)
        mask = ops.cast(mask, images.dtype)
        generated, tau = self.generate(images, mask, training=True)
        completed = completed_image(images, generated, mask)
        # Real and fake in one batch, so batch norm sees both alike.
        both = ops.concatenate([completed, images], axis=0)
        both_masks = ops.concatenate([mask, mask], axis=0)
        local_logits = self.local_discriminator([both, both_masks], training=True)
        global_logits = self.global_discriminator(both, training=True)
        local_fake, local_real = ops.split(
            ops.cast(local_logits, images.dtype), 2, axis=0
        )
        global_fake, global_real = ops.split(
            ops.cast(global_logits, images.dtype), 2, axis=0
        )
        # Per-example losses (B,).
        recon = hole_l1(images, generated, mask)
        adv = ops.softplus(-local_fake[:, 0]) + ops.softplus(-global_fake[:, 0])
        local_d = ops.softplus(-local_real[:, 0]) + ops.softplus(local_fake[:, 0])
        global_d = ops.softplus(-global_real[:, 0]) + ops.softplus(global_fake[:, 0])
        if tau is not None and self.clue_weight > 0:
            from cram_keras.losses import clue_loss

            clue = clue_loss(mask, tau, self.encoder.glimpse_size)
        else:
            clue = ops.zeros((), images.dtype)
        adversarial_on = ops.cast(
            self.g_optimizer.iterations >= self.warmup_steps, images.dtype
        )
        objectives = {
            "generator": self.clue_weight * clue / replicas
            + self.alpha * average(recon)
            + self.beta * adversarial_on * average(adv),
            "local_discriminator": average(local_d),
            "global_discriminator": average(global_d),
        }
        losses = {
            "g_loss": self.clue_weight * clue
            + self.alpha * ops.mean(recon)
            + self.beta * adversarial_on * ops.mean(adv),
            "recon_loss": ops.mean(recon),
            "clue_loss": clue,
            "adv_loss": ops.mean(adv),
            "local_d_loss": ops.mean(local_d),
            "global_d_loss": ops.mean(global_d),
        }
        return objectives, losses

    def compute_losses_and_gradients(self, images, mask):
        """TensorFlow: `compute_losses` and each network's gradients.

        Returns:
            `(losses, gradients)`: `losses` maps tracker names to per-replica
            means (for logging); `gradients` maps "generator",
            "local_discriminator", "global_discriminator" to gradient lists
            matching `generator_variables` and each discriminator's
            `trainable_variables`.
        """
        import tensorflow as tf  # The JAX step is `_jax_train_step`.

        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        with tf.GradientTape(persistent=True) as tape:
            objectives, losses = self.compute_losses(images, mask, replicas)
        gradients = {
            name: tape.gradient(objectives[name], variables)
            for name, (_, variables) in zip(
                _NETWORKS, self._optimizer_variables(), strict=True
            )
        }
        del tape
        return losses, gradients

    def _require_backend(self, method):
        """The backend, if the inpainter trains on it (else one line)."""
        backend = keras.backend.backend()
        if backend not in TRAINING_BACKENDS:
            raise NotImplementedError(
                f"CRAMInpainter.{method}: the inpainter trains on TensorFlow or "
                "JAX only (its training step takes the gradients with "
                "tf.GradientTape or jax.vjp); call the model or its networks "
                "directly on other backends, or set KERAS_BACKEND=tensorflow "
                f"or KERAS_BACKEND=jax. Received: backend={backend!r}"
            )
        return backend

    def fit(self, *args, **kwargs):
        self._require_backend("fit")
        return super().fit(*args, **kwargs)

    def evaluate(self, *args, **kwargs):
        self._require_backend("evaluate")
        return super().evaluate(*args, **kwargs)

    def predict(self, *args, **kwargs):
        self._require_backend("predict")
        return super().predict(*args, **kwargs)

    def train_step(self, *args):
        # `*args`: the JAX trainer calls train_step(state, data), TensorFlow
        # train_step(data).
        # 1. Occlude: the encoder sees the image with zeros in the hole and
        #    the mask as its clue; the generator decodes z; the completed
        #    image is the input outside the hole and G(z) inside.
        # 2. Score real and completed images with the local (crop around the
        #    hole) and global discriminators, in one batch.
        # 3. Losses: L_G = clue_weight*L_clue + alpha*L_recon + beta*L_gan
        #    (L_gan off during the warm-up); each D: BCE(real=1, fake=0).
        #    Steps 1-3: `compute_losses`, the same on every backend.
        # 4. Each optimizer applies its own loss's gradients to its own
        #    network's variables: encoder + generator, local D, global D.
        # 5. Update the Mean trackers.
        if self._require_backend("train_step") == "jax":
            return self._jax_train_step(*args)
        (data,) = args
        images, mask = data
        losses, gradients = self.compute_losses_and_gradients(images, mask)
        for name, (optimizer, variables) in zip(
            _NETWORKS, self._optimizer_variables(), strict=True
        ):
            optimizer.apply(gradients[name], variables)
        return _update_trackers(self.train_trackers, losses)

    def _jax_train_step(self, state, data):
        """`train_step` on JAX, stateless (the pattern of Keras' JAX trainer).

        `state` holds the current values of `trainable_variables`,
        `non_trainable_variables`, `optimizer.variables` (the three
        optimizers' in turn) and `metrics_variables`; the step returns the
        logs and the same four lists, updated. One forward pass
        (`compute_losses`, inside a `StatelessScope`, which also collects
        the batch-norm statistics it assigns); `jax.vjp` of the three
        objectives, pulled back once each; each optimizer's
        `stateless_apply` on its own network's variables (its gradient
        clipping included, as in `optimizer.apply` on TensorFlow).
        """
        import jax

        trainable, non_trainable, optimizer_values, metric_values = state
        images, mask = data
        trainable_variables = self.trainable_variables
        non_trainable_variables = self.non_trainable_variables

        def objectives(trainable):
            mapping = [
                *zip(trainable_variables, trainable, strict=True),
                *zip(non_trainable_variables, non_trainable, strict=True),
                *zip(self.optimizer.variables, optimizer_values, strict=True),
            ]
            with keras.StatelessScope(state_mapping=mapping) as scope:
                values, losses = self.compute_losses(images, mask)
            updated = _current_values(scope, non_trainable_variables, non_trainable)
            return tuple(values[name] for name in _NETWORKS), (losses, updated)

        values, pullback, (losses, non_trainable) = jax.vjp(
            objectives, list(trainable), has_aux=True
        )
        position = {id(v): i for i, v in enumerate(trainable_variables)}
        trainable = list(trainable)
        new_optimizer_values = []
        start = 0
        for k, (optimizer, variables) in enumerate(self._optimizer_variables()):
            # d(objective k) / d(every trainable value); this network's part.
            cotangent = tuple(
                ops.ones_like(v) if j == k else ops.zeros_like(v)
                for j, v in enumerate(values)
            )
            (gradients,) = pullback(cotangent)
            # `variables` is what the optimizer was built on, in that order
            # (`_build_optimizers`), as `stateless_apply` needs.
            indices = [position[id(v)] for v in variables]
            count = len(optimizer.variables)
            updated, slots = optimizer.stateless_apply(
                optimizer_values[start : start + count],
                [gradients[i] for i in indices],
                [trainable[i] for i in indices],
            )
            for i, value in zip(indices, updated, strict=True):
                trainable[i] = value
            new_optimizer_values.extend(slots)
            start += count
        metrics_variables = self.metrics_variables
        with keras.StatelessScope(
            state_mapping=list(zip(metrics_variables, metric_values, strict=True))
        ) as scope:
            logs = _update_trackers(self.train_trackers, losses)
        metric_values = _current_values(scope, metrics_variables, metric_values)
        return logs, (trainable, non_trainable, new_optimizer_values, metric_values)

    def _test_scores(self, images, mask):
        """Per-image hole PSNR, hole L1 and SSIM of the completed images."""
        completed = self([images, mask], training=False)
        return {
            "hole_psnr": hole_psnr(images, completed, mask),
            "hole_l1": hole_l1(images, completed, mask),
            "ssim": ssim(images, completed),
        }

    def test_step(self, *args):
        if self._require_backend("test_step") == "jax":
            # state: the values of the trainable, non-trainable and metrics
            # variables; returned as they end the step.
            state, (images, mask) = args
            variables = (
                self.trainable_variables,
                self.non_trainable_variables,
                self.metrics_variables,
            )
            mapping = [
                pair
                for group, values in zip(variables, state, strict=True)
                for pair in zip(group, values, strict=True)
            ]
            with keras.StatelessScope(state_mapping=mapping) as scope:
                logs = _update_trackers(
                    self.test_trackers, self._test_scores(images, mask)
                )
            state = tuple(
                _current_values(scope, group, values)
                for group, values in zip(variables, state, strict=True)
            )
            return logs, state
        (data,) = args
        images, mask = data
        return _update_trackers(self.test_trackers, self._test_scores(images, mask))

    def predict_step(self, *args):
        backend = self._require_backend("predict_step")
        data = args[-1]
        # `predict` takes the same (image, mask) datasets as fit and evaluate.
        images, mask = data[:2] if isinstance(data, (list, tuple)) else data
        if backend == "jax":
            trainable, non_trainable = args[0]
            return self.stateless_call(
                trainable, non_trainable, [images, mask], training=False
            )
        return self([images, mask], training=False)

    def recalibrate_batch_norm(self, dataset, num_batches=50):
        """Sets the encoder's and generator's batch-norm statistics to their
        average over `num_batches` batches of `dataset` ("precise BN", Wu &
        Johnson 2021, "Rethinking 'Batch' in BatchNorm").

        The moving averages kept during training (momentum 0.99) trail the
        weights, which move fast in a short GAN run; on the 1,083-image SVHN
        subset this cost 1.5 dB of test hole PSNR. Here each batch of
        `(images, masks)` runs through the encoder and generator in training
        mode with momentum 0, so that afterwards every moving mean and
        variance holds that batch's statistics; they are summed (float64) and
        their average over the batches is written back at the end: the plain
        average of the per-batch statistics. Nothing else changes (no
        gradients, no optimizer step). The discriminators are not used for
        inference and are left alone. On TensorFlow and JAX the forward pass
        is one compiled function, traced once per model (eager for at most 4
        batches, where tracing would cost more than it saves).

        Returns:
            The number of batches used.
        """
        norms = [
            layer
            for network in (self.encoder, self.generator)
            for layer in network._flatten_layers()
            if isinstance(layer, layers.BatchNormalization)
        ]
        momenta = [layer.momentum for layer in norms]
        variables = [
            v for layer in norms for v in (layer.moving_mean, layer.moving_variance)
        ]
        sums = None
        used = 0
        try:
            for layer in norms:
                layer.momentum = 0.0  # The moving statistics := the batch's.
            # Compiled for more than a few batches (tracing costs more).
            forward = self._recalibration_forward(compiled=num_batches > 4)
            for images, mask in dataset:
                if used >= num_batches:
                    break
                forward(images, mask)
                values = [
                    np.asarray(ops.convert_to_numpy(v), "float64") for v in variables
                ]
                sums = (
                    values
                    if sums is None
                    else [a + b for a, b in zip(sums, values, strict=True)]
                )
                used += 1
        finally:
            for layer, momentum in zip(norms, momenta, strict=True):
                layer.momentum = momentum
        if used:
            for variable, total in zip(variables, sums, strict=True):
                variable.assign((total / used).astype(variable.dtype))
        return used

    def _recalibration_forward(self, compiled=True):
        """`generate(images, mask, training=True)`, compiled on TensorFlow
        (`tf.function`) and JAX (`jax.jit` of the stateless pass, whose
        batch-norm statistics are then assigned). Traced with the batch
        norms' momentum 0 (a constant of the trace), and only ever called so."""
        backend = keras.backend.backend()
        if not compiled or backend not in TRAINING_BACKENDS:
            return lambda images, mask: self.generate(images, mask, training=True)
        if getattr(self, "_recalibration_fn", None) is None:
            if backend == "tensorflow":
                import tensorflow as tf

                self._recalibration_fn = tf.function(
                    lambda images, mask: self.generate(images, mask, training=True)[0],
                    reduce_retracing=True,
                )
            else:
                self._recalibration_fn = self._jax_recalibration_forward()
        return self._recalibration_fn

    def _jax_recalibration_forward(self):
        import jax

        def statistics(trainable, non_trainable, images, mask):
            mapping = [
                *zip(self.trainable_variables, trainable, strict=True),
                *zip(self.non_trainable_variables, non_trainable, strict=True),
            ]
            with keras.StatelessScope(state_mapping=mapping) as scope:
                self.generate(images, mask, training=True)
            return _current_values(scope, self.non_trainable_variables, non_trainable)

        statistics = jax.jit(statistics)

        def forward(images, mask):
            values = statistics(
                [v.value for v in self.trainable_variables],
                [v.value for v in self.non_trainable_variables],
                np.asarray(images),
                np.asarray(mask),
            )
            for variable, value in zip(
                self.non_trainable_variables, values, strict=True
            ):
                variable.assign(value)

        return forward

    # --- Serialisation ------------------------------------------------------

    def get_config(self):
        config = super().get_config()
        config.update(
            encoder=keras.layers.serialize(self.encoder),
            generator=keras.layers.serialize(self.generator),
            local_discriminator=keras.layers.serialize(self.local_discriminator),
            global_discriminator=keras.layers.serialize(self.global_discriminator),
            alpha=self.alpha,
            beta=self.beta,
            clue_weight=self.clue_weight,
            warmup_steps=self.warmup_steps,
        )
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        for key in (
            "encoder",
            "generator",
            "local_discriminator",
            "global_discriminator",
        ):
            config[key] = keras.layers.deserialize(config[key])
        return cls(**config)
