"""Two-stage gradient clipping as in the RNN-SPN paper's released code.

The released Theano code clips every gradient elementwise to [-1, 1] and then
rescales the whole list to a global norm of at most 5
(``T.clip(g, -1, 1)`` followed by ``lasagne.updates.total_norm_constraint``).
Keras optimizers offer ``clipvalue`` and ``global_clipnorm`` only as mutually
exclusive options, and under ``tf.distribute`` they clip each replica's
partial gradient before the cross-replica sum. ``TwoStageClipModel`` instead
sums the gradients over replicas first, clips the global-batch gradient in
both stages, and only then applies it.
"""

import keras
from keras import ops


def clip_gradients_two_stage(gradients, clip_value=1.0, clip_norm=5.0):
    """Clips gradients elementwise to ``[-clip_value, clip_value]``, then to a
    global L2 norm of at most ``clip_norm``.

    Args:
        gradients: list of tensors (``None`` entries are passed through).
        clip_value: positive float, or ``None`` to skip the elementwise stage.
        clip_norm: positive float, or ``None`` to skip the global-norm stage.

    Returns:
        The list of clipped gradients, in the same order.
    """
    for name, value in (("clip_value", clip_value), ("clip_norm", clip_norm)):
        if value is not None and not value > 0:
            raise ValueError(
                f"`{name}` must be a positive number or None. Received: "
                f"{name}={value!r}"
            )
    grads = list(gradients)
    if clip_value is not None:
        grads = [
            None if g is None else ops.clip(g, -clip_value, clip_value) for g in grads
        ]
    if clip_norm is not None:
        present = [g for g in grads if g is not None]
        if present:
            squares = [ops.sum(ops.square(ops.cast(g, "float32"))) for g in present]
            global_norm = ops.sqrt(ops.sum(ops.stack(squares)))
            # Same rule as tf.clip_by_global_norm: g * clip_norm / max(norm, clip_norm).
            scale = clip_norm / ops.maximum(global_norm, clip_norm)
            grads = [None if g is None else g * ops.cast(scale, g.dtype) for g in grads]
    return grads


class TwoStageClipModel(keras.Model):
    """A ``keras.Model`` whose ``fit`` clips gradients in two stages.

    ``compile(gradient_clip_value=1.0, gradient_clip_norm=5.0, ...)`` takes the
    two thresholds (``None`` disables a stage) and every usual ``compile``
    argument. ``train_step`` (TensorFlow backend):

    1. forward pass and loss (Keras scales the loss by 1 / replicas);
    2. gradients of this replica's share of the loss;
    3. sum over replicas, so every replica holds the global-batch gradient;
    4. clip elementwise, then to the global norm;
    5. hand each replica 1 / replicas of the clipped gradient to the
       optimizer, whose own cross-replica sum restores the clipped gradient.

    On one device steps 3 and 5 do nothing. Forward passes, ``evaluate`` and
    ``predict`` run on every backend; ``fit`` needs the TensorFlow backend.
    """

    def compile(self, *, gradient_clip_value=1.0, gradient_clip_norm=5.0, **kwargs):
        optimizer = kwargs.get("optimizer")
        if isinstance(optimizer, keras.optimizers.Optimizer):
            clashing = {
                name: getattr(optimizer, name, None)
                for name in ("clipvalue", "clipnorm", "global_clipnorm")
            }
            clashing = {k: v for k, v in clashing.items() if v}
            if clashing:
                raise ValueError(
                    "TwoStageClipModel clips gradients itself "
                    "(gradient_clip_value, gradient_clip_norm); the optimizer "
                    f"must not clip as well. Received an optimizer with {clashing}."
                )
        # Validate the thresholds once, here, rather than inside the step.
        clip_gradients_two_stage([], gradient_clip_value, gradient_clip_norm)
        self.gradient_clip_value = gradient_clip_value
        self.gradient_clip_norm = gradient_clip_norm
        super().compile(**kwargs)

    def train_step(self, data):
        if keras.backend.backend() != "tensorflow":
            raise NotImplementedError(
                "TwoStageClipModel.fit is implemented for the TensorFlow backend "
                f"only. Received: KERAS_BACKEND={keras.backend.backend()!r}. "
                "Set KERAS_BACKEND=tensorflow to train."
            )
        import tensorflow as tf

        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        # 1-2. Forward pass, loss and this replica's gradients.
        with tf.GradientTape() as tape:
            y_pred = self(x, training=True)
            loss = self.compute_loss(
                x=x, y=y, y_pred=y_pred, sample_weight=sample_weight, training=True
            )
        variables = self.trainable_variables
        grads = tape.gradient(loss, variables)
        # 3. Global-batch gradient on every replica.
        context = tf.distribute.get_replica_context()
        replicas = context.num_replicas_in_sync if context is not None else 1
        if replicas > 1:
            present = [i for i, g in enumerate(grads) if g is not None]
            reduced = context.all_reduce(
                tf.distribute.ReduceOp.SUM, [grads[i] for i in present]
            )
            grads = list(grads)
            for i, g in zip(present, reduced, strict=True):
                grads[i] = g
        # 4. Two-stage clipping of the global gradient.
        grads = clip_gradients_two_stage(
            grads, self.gradient_clip_value, self.gradient_clip_norm
        )
        # 5. The optimizer sums over replicas again: hand it 1 / replicas each.
        if replicas > 1:
            grads = [None if g is None else g / replicas for g in grads]
        self.optimizer.apply(grads, variables)
        # Metrics: the loss tracker wants the unscaled (per-global-batch) loss.
        for metric in self.metrics:
            if metric.name == "loss":
                batch_size = tf.shape(tf.nest.flatten(x)[0])[0]
                metric.update_state(loss * replicas, sample_weight=batch_size)
            else:
                metric.update_state(y, y_pred, sample_weight)
        return self.get_metrics_result()
