"""The inpainter's losses (Chung & Cho, 2018, eq. 9, 12-15 and 17), written once
in `keras.ops` for every backend (`CRAMInpainter.compute_losses`): one
forward pass in training mode, the objective each network's optimizer
minimises, and the losses logged.

Every loss is computed in float32 (at least), whatever the networks compute
in: under a `mixed_bfloat16` policy the generator's output, the glimpse
parameters and the discriminators' logits are cast to float32 first
(`at_least_float32`).

Deviations from the paper and the released code (docs/deviations.md):

- L_recon is the L1 error averaged over the hole's pixels and channels of
  each image (eq. 12 sums it), so `alpha` does not depend on the hole size.
- The generator's adversarial loss is the non-saturating
  `-log D(completed)` rather than eq. 14-15's `log(1 - D(completed))`
  (same fixed point, useful gradients early on; Goodfellow et al. 2014).
"""

import keras
from keras import ops

from cram_keras.evaluation.metrics import completed_image, hole_l1
from cram_keras.losses import clue_loss


def at_least_float32(x):
    """`x` as a tensor, cast to float32 if it is a narrower float (bfloat16 or
    float16, a mixed dtype policy's compute dtype)."""
    x = ops.convert_to_tensor(x)
    if keras.backend.standardize_dtype(x.dtype) in ("bfloat16", "float16"):
        return ops.cast(x, "float32")
    return x


def inpainter_losses(model, images, mask, replicas=1):
    """One forward pass of the `CRAMInpainter` `model` in training mode;
    every loss, in `keras.ops`.

    The one definition of the losses for every backend; the training step
    differs per backend only in how it takes the gradients and applies them
    (`cram_keras.models.inpainting.steps`).

    Args:
        model: the `CRAMInpainter`.
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
    images = at_least_float32(images)
    mask = ops.cast(mask, images.dtype)
    generated, tau = model.generate(images, mask, training=True)
    completed = completed_image(images, generated, mask)
    # Real and fake in one batch, so batch norm sees both alike.
    both = ops.concatenate([completed, images], axis=0)
    both_masks = ops.concatenate([mask, mask], axis=0)
    local_logits = model.local_discriminator([both, both_masks], training=True)
    global_logits = model.global_discriminator(both, training=True)
    local_fake, local_real = ops.split(ops.cast(local_logits, images.dtype), 2, axis=0)
    global_fake, global_real = ops.split(
        ops.cast(global_logits, images.dtype), 2, axis=0
    )
    # Per-example losses (B,).
    recon = hole_l1(images, generated, mask)
    adv = ops.softplus(-local_fake[:, 0]) + ops.softplus(-global_fake[:, 0])
    local_d = ops.softplus(-local_real[:, 0]) + ops.softplus(local_fake[:, 0])
    global_d = ops.softplus(-global_real[:, 0]) + ops.softplus(global_fake[:, 0])
    if tau is not None and model.clue_weight > 0:
        clue = clue_loss(mask, tau, model.encoder.glimpse_size)
    else:
        clue = ops.zeros((), images.dtype)
    adversarial_on = ops.cast(
        model.g_optimizer.iterations >= model.warmup_steps, images.dtype
    )
    objectives = {
        "generator": model.clue_weight * clue / replicas
        + model.alpha * average(recon)
        + model.beta * adversarial_on * average(adv),
        "local_discriminator": average(local_d),
        "global_discriminator": average(global_d),
    }
    losses = {
        "g_loss": model.clue_weight * clue
        + model.alpha * ops.mean(recon)
        + model.beta * adversarial_on * ops.mean(adv),
        "recon_loss": ops.mean(recon),
        "clue_loss": clue,
        "adv_loss": ops.mean(adv),
        "local_d_loss": ops.mean(local_d),
        "global_d_loss": ops.mean(global_d),
    }
    return objectives, losses
