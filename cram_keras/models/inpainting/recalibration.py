"""Precise batch norm ("precise BN", Wu & Johnson 2021, "Rethinking 'Batch'
in BatchNorm") for the inpainter (`CRAMInpainter.recalibrate_batch_norm`):
each batch norm's moving statistics set to their plain average over batches
of data, and the inpainter's forward pass that collects them, compiled on
TensorFlow and JAX."""

import keras
import numpy as np
from keras import layers, ops

from cram_keras.models.inpainting.stateless import current_values, stateless_scope


def recalibrate_batch_norm(networks, forward, dataset, num_batches):
    """Sets the moving statistics of every batch norm in `networks` to their
    average over `num_batches` batches of `dataset`.

    Each batch of `(images, masks)` goes through `forward(images, mask)`,
    which runs `networks` in training mode, while every batch norm's
    momentum is 0, so that afterwards every moving mean and variance holds
    that batch's statistics; they are summed (float64) and their average
    over the batches is written back at the end. The momenta are restored
    whatever happens.

    Returns:
        The number of batches used.
    """
    norms = [
        layer
        for network in networks
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
        for images, mask in dataset:
            if used >= num_batches:
                break
            forward(images, mask)
            values = [np.asarray(ops.convert_to_numpy(v), "float64") for v in variables]
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


def compiled_training_forward(model):
    """`model.generate(images, mask, training=True)` compiled: a
    `tf.function` on TensorFlow; on JAX, `jax.jit` of the stateless pass,
    whose batch-norm statistics are then assigned. The batch norms' momentum
    is a constant of the trace."""
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        return tf.function(
            lambda images, mask: model.generate(images, mask, training=True)[0],
            reduce_retracing=True,
        )
    return _jax_training_forward(model)


def _jax_training_forward(model):
    import jax

    def statistics(trainable, non_trainable, images, mask):
        with stateless_scope(
            (model.trainable_variables, trainable),
            (model.non_trainable_variables, non_trainable),
        ) as scope:
            model.generate(images, mask, training=True)
        return current_values(scope, model.non_trainable_variables, non_trainable)

    statistics = jax.jit(statistics)

    def forward(images, mask):
        values = statistics(
            [v.value for v in model.trainable_variables],
            [v.value for v in model.non_trainable_variables],
            np.asarray(images),
            np.asarray(mask),
        )
        for variable, value in zip(model.non_trainable_variables, values, strict=True):
            variable.assign(value)

    return forward
