"""`CRAMInpainter`, the GAN model that trains an encoder, the generator and
the local and global discriminators (the package docstring describes its
parts)."""

import keras
import numpy as np
from keras import ops

from cram_keras.evaluation.metrics import completed_image
from cram_keras.layers.conv_blocks import deserialize_layers
from cram_keras.models.inpainting.losses import at_least_float32, inpainter_losses
from cram_keras.models.inpainting.optimizers import InpainterOptimizers
from cram_keras.models.inpainting.recalibration import (
    compiled_training_forward,
    recalibrate_batch_norm,
)
from cram_keras.models.inpainting.stateless import jax_inference
from cram_keras.models.inpainting.steps import (
    TRAINING_BACKENDS,
    jax_test_step,
    jax_train_step,
    tensorflow_losses_and_gradients,
    tensorflow_test_step,
    tensorflow_train_step,
)
from cram_keras.utils import check_int

# The networks, as the model's attributes and constructor arguments.
_NETWORKS = ("encoder", "generator", "local_discriminator", "global_discriminator")


def _check_weight(name, value):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise ValueError(
            f"`{name}` must be a non-negative number. Received: {name}={value!r}"
        )
    return float(value)


@keras.saving.register_keras_serializable(package="cram_keras")
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
        self.warmup_steps = check_int("warmup_steps", warmup_steps, low=0)
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
        # Symbolic inputs: every network builds its weights and is traced
        # once for the output shapes, without running (on JAX an eager pass
        # compiles every op on its own: tens of seconds on a CPU).
        images = keras.KerasTensor((1,) + image_shape[1:])
        mask = keras.KerasTensor((1,) + image_shape[1:3] + (1,))
        generated = self.generator(self.encoder([images, mask]))
        self.local_discriminator([generated, mask])
        self.global_discriminator(generated)
        self.built = True
        self.build_optimizers()

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
        self.build_optimizers()

    def build_optimizers(self):
        """Builds each optimizer on its own network's variables, once the
        model is built and compiled (before training, so that
        BackupAndRestore and load_weights can restore their slots: moments,
        iteration counters)."""
        if not self.built or self.g_optimizer is None:
            return
        for optimizer, variables in self.optimizers_and_variables():
            if not optimizer.built:
                optimizer.build(variables)

    def _networks(self):
        return tuple(getattr(self, name) for name in _NETWORKS)

    def optimizers_and_variables(self):
        """`(optimizer, variables)` of the generator (encoder + generator
        weights), the local and the global discriminator, in that order."""
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
        images = at_least_float32(images)
        mask = ops.cast(mask, images.dtype)
        occluded = images * (1.0 - mask)
        kwargs = {} if ablate is None else {"ablate": ablate}
        z, tau, _ = self.encoder(
            [occluded, mask], training=training, return_glimpses=True, **kwargs
        )
        generated = ops.cast(self.generator(z, training=training), images.dtype)
        return generated, None if tau is None else ops.cast(tau, images.dtype)

    def infer(self, images, mask, ablate=None):
        """`generate(images, mask, ablate=ablate)` in inference mode, as
        NumPy arrays `(generated, tau)` (tau None without glimpses). On JAX
        one compiled program per input shape and `ablate` (`jax.jit` of the
        stateless pass: called eagerly, JAX compiles every op on its own, a
        few seconds per new input shape on a CPU); eager on TensorFlow."""
        images = np.asarray(images, np.float32)
        mask = np.asarray(mask, np.float32)
        if keras.backend.backend() == "jax":
            if getattr(self, "_inference_fn", None) is None:
                self._inference_fn = jax_inference(self)
            generated, tau = self._inference_fn(
                [v.value for v in self.trainable_variables],
                [v.value for v in self.non_trainable_variables],
                images,
                mask,
                ablate=ablate,
            )
        else:
            generated, tau = self.generate(images, mask, ablate=ablate)
        return (
            ops.convert_to_numpy(generated),
            None if tau is None else ops.convert_to_numpy(tau),
        )

    def call(self, inputs, training=False):
        images, mask = inputs
        images = at_least_float32(images)
        generated, _ = self.generate(images, mask, training=training)
        return completed_image(images, generated, mask)

    # --- Training -----------------------------------------------------------

    def compute_losses(self, images, mask, replicas=1):
        """One forward pass in training mode; every loss, in `keras.ops`
        (`cram_keras.models.inpainting.losses.inpainter_losses`).

        Args:
            images: (B, H, W, C) in [0, 1], this replica's examples.
            mask: (B, H, W, 1), 1 = hole.
            replicas: the number of replicas the global batch is split over
                (`tf.distribute`); 1 otherwise.

        Returns:
            `(objectives, losses)`: each network's objective (keyed
            "generator", "local_discriminator", "global_discriminator") and
            the tracker names' batch means.
        """
        return inpainter_losses(self, images, mask, replicas)

    def compute_losses_and_gradients(self, images, mask):
        """TensorFlow: `compute_losses` and each network's gradients
        (`cram_keras.models.inpainting.steps.tensorflow_losses_and_gradients`).

        Returns:
            `(losses, gradients)`: the tracker names' per-replica means, and
            the gradient lists of "generator", "local_discriminator" and
            "global_discriminator" (`optimizers_and_variables` order).
        """
        return tensorflow_losses_and_gradients(self, images, mask)

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
            return jax_train_step(self, *args)
        return tensorflow_train_step(self, *args)

    def test_step(self, *args):
        # `*args` as in `train_step`.
        if self._require_backend("test_step") == "jax":
            return jax_test_step(self, *args)
        return tensorflow_test_step(self, *args)

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
        plain average over `num_batches` batches of `(images, masks)` from
        `dataset` (precise BN: `cram_keras.models.inpainting.recalibration`).

        The moving averages kept during training (momentum 0.99) trail the
        weights, which move fast in a short GAN run; on the 1,083-image SVHN
        subset this cost 1.5 dB of test hole PSNR. Nothing else changes (no
        gradients, no optimizer step); the discriminators are not used for
        inference and are left alone. On TensorFlow and JAX the forward pass
        is one compiled function, traced once per model (on TensorFlow eager
        for at most 4 batches, where tracing would cost more than it saves).

        Returns:
            The number of batches used.
        """
        # On TensorFlow compiled for more than a few batches (tracing costs
        # more); on JAX always (eager, every op compiles on its own).
        compiled = num_batches > 4 or keras.backend.backend() == "jax"
        forward = self._recalibration_forward(compiled=compiled)
        return recalibrate_batch_norm(
            (self.encoder, self.generator), forward, dataset, num_batches
        )

    def _recalibration_forward(self, compiled=True):
        """`generate(images, mask, training=True)`, compiled on TensorFlow
        and JAX (`compiled_training_forward`). Traced with the batch norms'
        momentum 0 (a constant of the trace), and only ever called so."""
        backend = keras.backend.backend()
        if not compiled or backend not in TRAINING_BACKENDS:
            return lambda images, mask: self.generate(images, mask, training=True)
        if getattr(self, "_recalibration_fn", None) is None:
            self._recalibration_fn = compiled_training_forward(self)
        return self._recalibration_fn

    # --- Serialisation ------------------------------------------------------

    def get_config(self):
        config = super().get_config()
        config.update(
            **{name: keras.layers.serialize(getattr(self, name)) for name in _NETWORKS},
            alpha=self.alpha,
            beta=self.beta,
            clue_weight=self.clue_weight,
            warmup_steps=self.warmup_steps,
        )
        return config

    @classmethod
    def from_config(cls, config):
        return cls(**deserialize_layers(config, *_NETWORKS))
