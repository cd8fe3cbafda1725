"""The inpainter's training and test steps on TensorFlow and JAX
(`CRAMInpainter.train_step`, `test_step`).

The losses are written once (`CRAMInpainter.compute_losses`); only the
gradients and the optimizer updates differ per backend: `tf.GradientTape`
and `optimizer.apply` on TensorFlow; `jax.vjp` and
`optimizer.stateless_apply` on JAX, whose steps are stateless (the pattern of
Keras' JAX trainer: the model's state comes in and goes out as values). Each
optimizer updates only its own network's variables (the released code gave
no variable lists, so every step moved every network; docs/deviations.md).
"""

from keras import ops

from cram_keras.evaluation.metrics import hole_l1, hole_psnr, ssim
from cram_keras.models.inpainting.stateless import current_values, stateless_scope

# Backends with a training step (`CRAMInpainter.train_step`).
TRAINING_BACKENDS = ("tensorflow", "jax")
# The objectives (`CRAMInpainter.compute_losses`), in the order of
# `CRAMInpainter.optimizers_and_variables`.
OBJECTIVES = ("generator", "local_discriminator", "global_discriminator")


def update_trackers(trackers, values):
    """Adds `values[name]` to each `Mean` tracker; returns every tracker's result."""
    for name, value in values.items():
        trackers[name].update_state(value)
    return {name: tracker.result() for name, tracker in trackers.items()}


def tensorflow_losses_and_gradients(model, images, mask):
    """TensorFlow: `model.compute_losses` and each network's gradients.

    Returns:
        `(losses, gradients)`: `losses` maps tracker names to per-replica
        means (for logging); `gradients` maps "generator",
        "local_discriminator", "global_discriminator" to gradient lists
        matching `generator_variables` and each discriminator's
        `trainable_variables`.
    """
    import tensorflow as tf  # The JAX step is `jax_train_step`.

    replicas = tf.distribute.get_strategy().num_replicas_in_sync
    with tf.GradientTape(persistent=True) as tape:
        objectives, losses = model.compute_losses(images, mask, replicas)
    gradients = {
        name: tape.gradient(objectives[name], variables)
        for name, (_, variables) in zip(
            OBJECTIVES, model.optimizers_and_variables(), strict=True
        )
    }
    del tape
    return losses, gradients


def tensorflow_train_step(model, data):
    """One training step on TensorFlow: each optimizer applies its own
    loss's gradients to its own network's variables; the logs."""
    images, mask = data
    losses, gradients = model.compute_losses_and_gradients(images, mask)
    for name, (optimizer, variables) in zip(
        OBJECTIVES, model.optimizers_and_variables(), strict=True
    ):
        optimizer.apply(gradients[name], variables)
    return update_trackers(model.train_trackers, losses)


def jax_train_step(model, state, data):
    """One training step on JAX, stateless (the pattern of Keras' JAX trainer).

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
    trainable_variables = model.trainable_variables
    non_trainable_variables = model.non_trainable_variables

    def objectives(trainable):
        with stateless_scope(
            (trainable_variables, trainable),
            (non_trainable_variables, non_trainable),
            (model.optimizer.variables, optimizer_values),
        ) as scope:
            values, losses = model.compute_losses(images, mask)
        updated = current_values(scope, non_trainable_variables, non_trainable)
        return tuple(values[name] for name in OBJECTIVES), (losses, updated)

    values, pullback, (losses, non_trainable) = jax.vjp(
        objectives, list(trainable), has_aux=True
    )
    position = {id(v): i for i, v in enumerate(trainable_variables)}
    trainable = list(trainable)
    new_optimizer_values = []
    start = 0
    for k, (optimizer, variables) in enumerate(model.optimizers_and_variables()):
        # d(objective k) / d(every trainable value); this network's part.
        cotangent = tuple(
            ops.ones_like(v) if j == k else ops.zeros_like(v)
            for j, v in enumerate(values)
        )
        (gradients,) = pullback(cotangent)
        # `variables` is what the optimizer was built on, in that order
        # (`CRAMInpainter.build_optimizers`), as `stateless_apply` needs.
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
    metrics_variables = model.metrics_variables
    with stateless_scope((metrics_variables, metric_values)) as scope:
        logs = update_trackers(model.train_trackers, losses)
    metric_values = current_values(scope, metrics_variables, metric_values)
    return logs, (trainable, non_trainable, new_optimizer_values, metric_values)


def test_scores(model, images, mask):
    """Per-image hole PSNR, hole L1 and SSIM of the completed images."""
    completed = model([images, mask], training=False)
    return {
        "hole_psnr": hole_psnr(images, completed, mask),
        "hole_l1": hole_l1(images, completed, mask),
        "ssim": ssim(images, completed),
    }


def tensorflow_test_step(model, data):
    """One test step on TensorFlow: the test trackers updated; the logs."""
    images, mask = data
    return update_trackers(model.test_trackers, test_scores(model, images, mask))


def jax_test_step(model, state, data):
    """One test step on JAX, stateless: `state` holds the values of the
    trainable, non-trainable and metrics variables; returned as they end
    the step, after the logs."""
    images, mask = data
    variables = (
        model.trainable_variables,
        model.non_trainable_variables,
        model.metrics_variables,
    )
    with stateless_scope(*zip(variables, state, strict=True)) as scope:
        logs = update_trackers(model.test_trackers, test_scores(model, images, mask))
    state = tuple(
        current_values(scope, group, values)
        for group, values in zip(variables, state, strict=True)
    )
    return logs, state
