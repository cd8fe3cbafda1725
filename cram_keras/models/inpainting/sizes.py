"""The inpainter's networks sized from an inpainting Config
(`cram_keras.experiments.inpaint_config`): one `width` scales every CNN and
MLP (w = 64: the released code's sizes), the holes set the local
discriminator's crop.
"""

from cram_keras.models.cram import CRAMEncoder
from cram_keras.models.inpainting.discriminators import (
    GlobalDiscriminator,
    LocalDiscriminator,
)
from cram_keras.models.inpainting.encoders import CNNEncoder, ContextSkipEncoder
from cram_keras.models.inpainting.generator import InpaintingGenerator
from cram_keras.models.inpainting.model import CRAMInpainter


def local_crop_size(config, image_size=32):
    """Side of the local discriminator's crop: the largest hole + 2 margins."""
    hole = config.hole_size if config.mask == "center" else config.max_hole
    size = min(hole + 2 * config.local_margin, image_size)
    if size < 16:
        # Four stride-2 convolutions need 16 pixels to end at 1x1.
        size = min(16, image_size)
    return size


def build_encoder(config):
    w = config.width
    if config.encoder == "cnn":
        return CNNEncoder(
            units=config.core_units, filters=(w, 2 * w, 4 * w), name="encoder"
        )
    cram = CRAMEncoder(
        num_glimpses=config.glimpses,
        glimpse_size=config.glimpse_size,
        core_units=config.core_units,
        context_filters=(w // 4, w // 2, w),
        context_units=4 * w,
        localization_filters=(w // 8, w // 4, w // 2),
        localization_units=4 * w,
        min_scale=config.min_scale,
        initial_scale=config.initial_scale,
        glimpse_filters=(w // 4, w // 2, w),
        glimpse_units=4 * w,
        glimpse_start=config.glimpse_start,
        name="encoder" if config.encoder == "cram" else "cram",
    )
    if config.encoder == "cram":
        return cram
    # The context skip: a CNN a quarter of the CNN baseline's width, whose
    # z is a quarter of the core's.
    skip = CNNEncoder(
        units=max(config.core_units // 4, 1),
        filters=(max(w // 4, 1), max(w // 2, 1), w),
        name="skip",
    )
    return ContextSkipEncoder(cram, skip, name="encoder")


def build_inpainter(config, image_shape, warmup_steps):
    """The inpainter for images of `image_shape` (H, W, C), built, whose
    adversarial loss switches on after `warmup_steps` steps.

    `width` w sets: generator 4w-2w-w transposed convolutions from a 4x4x4w
    map; local discriminator w-2w-4w-8w convolutions + MLP 8w-1; global
    discriminator w-2w-4w + MLP 8w-1; CNN encoder w-2w-4w + dense
    core_units; CRAM encoder context w/4-w/2-w, localisation w/8-w/4-w/2,
    glimpse w/4-w/2-w, MLPs 4w (w = 64: the released code's sizes).
    """
    w = config.width
    size, channels = image_shape[0], image_shape[-1]
    model = CRAMInpainter(
        encoder=build_encoder(config),
        generator=InpaintingGenerator(
            image_size=size,
            channels=channels,
            filters=(4 * w, 2 * w, w),
            name="generator",
        ),
        local_discriminator=LocalDiscriminator(
            crop_size=local_crop_size(config, size),
            filters=(w, 2 * w, 4 * w, 8 * w),
            units=8 * w,
            name="local_discriminator",
        ),
        global_discriminator=GlobalDiscriminator(
            filters=(w, 2 * w, 4 * w), units=8 * w, name="global_discriminator"
        ),
        alpha=config.alpha,
        beta=config.beta,
        clue_weight=config.clue_weight,
        warmup_steps=warmup_steps,
        name=f"inpainter_{config.encoder}",
    )
    model.build([(None,) + tuple(image_shape), (None,) + tuple(image_shape[:2]) + (1,)])
    return model
