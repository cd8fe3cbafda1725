"""Two-stage gradient clipping as in the RNN-SPN paper's released code.

The released Theano code clips every gradient elementwise to [-1, 1] and then
rescales the whole list to a global norm of at most 5
(``T.clip(g, -1, 1)`` followed by ``lasagne.updates.total_norm_constraint``).
Keras optimizers offer ``clipvalue`` and ``global_clipnorm`` only as mutually
exclusive options, and under ``tf.distribute`` they clip each replica's
partial gradient before the cross-replica sum. ``TwoStageClipOptimizer``
wraps any optimizer and clips the gradient of the whole global batch in both
stages before handing it on; it is compiled like any optimizer:

    model.compile(
        optimizer=TwoStageClipOptimizer(keras.optimizers.RMSprop(5e-4)), ...
    )
"""

import numbers

import keras
from keras import ops

_CLIPPING_ARGS = ("clipvalue", "clipnorm", "global_clipnorm")


def _check_threshold(name, value):
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or value <= 0:
        raise ValueError(
            f"`{name}` must be a positive number or None. Received: {name}={value!r}"
        )
    return float(value)


def clip_gradients_two_stage(gradients, clip_value=1.0, clip_norm=5.0):
    """Clips gradients elementwise to ``[-clip_value, clip_value]``, then to a
    global L2 norm of at most ``clip_norm``.

    The second stage is ``tf.clip_by_global_norm``'s rule: every gradient is
    multiplied by ``clip_norm / max(global_norm, clip_norm)``.

    Args:
        gradients: list of tensors (``None`` entries are passed through).
        clip_value: positive float, or ``None`` to skip the elementwise stage.
        clip_norm: positive float, or ``None`` to skip the global-norm stage.

    Returns:
        The list of clipped gradients, in the same order.
    """
    clip_value = _check_threshold("clip_value", clip_value)
    clip_norm = _check_threshold("clip_norm", clip_norm)
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
            scale = clip_norm / ops.maximum(global_norm, clip_norm)
            grads = [None if g is None else g * ops.cast(scale, g.dtype) for g in grads]
    return grads


@keras.saving.register_keras_serializable(package="cram_keras")
class TwoStageClipOptimizer(keras.optimizers.Optimizer):
    """Wraps an optimizer; clips the global-batch gradient in two stages first.

    Every step clips the gradients elementwise to ``[-clip_value, clip_value]``,
    then rescales them to a global L2 norm of at most ``clip_norm``
    (``clip_gradients_two_stage``), and hands the result to
    ``inner_optimizer``. The clipped gradient is that of the whole global
    batch:

    * TensorFlow, under a ``tf.distribute`` strategy with several replicas
      (``apply`` called in a replica context, as ``model.fit`` does): each
      replica's gradient is all-reduced (sum) first, so every replica clips
      the same global gradient; each replica then hands the inner optimizer
      ``1 / replicas`` of the clipped gradient, and the inner optimizer's own
      cross-replica sum restores it.
    * JAX, and TensorFlow on one device: the gradient ``fit`` computes is
      already the global-batch gradient.

    The learning rate, the iteration counter and the slot variables are the
    inner optimizer's (``learning_rate`` and ``iterations`` delegate to it),
    so learning-rate callbacks and checkpoints see one optimizer. Like
    ``keras.optimizers.LossScaleOptimizer``, the wrapper keeps two unused
    variables of its own (its base class's iteration counter and learning
    rate); ``variables`` lists them before the inner optimizer's.

    For mixed precision wrap the other way round,
    ``LossScaleOptimizer(TwoStageClipOptimizer(...))``, so that the gradients
    are unscaled before they are clipped.

    Args:
        inner_optimizer: the ``keras.optimizers.Optimizer`` that applies the
            clipped gradients. It must not clip (``clipvalue``, ``clipnorm``,
            ``global_clipnorm``), scale the loss (``loss_scale_factor``, a
            ``LossScaleOptimizer``) or accumulate gradients
            (``gradient_accumulation_steps``) itself: each would see the
            gradient before or after the wrong stage.
        clip_value: elementwise bound, a positive float, or None to skip
            this stage (1.0, the released RNN-SPN code's).
        clip_norm: global L2-norm bound, a positive float, or None to skip
            this stage (5.0, the released RNN-SPN code's).
        name: optional name (default: the class name).

    Example:

    >>> optimizer = TwoStageClipOptimizer(
    ...     keras.optimizers.RMSprop(5e-4, rho=0.9, epsilon=1e-6),
    ...     clip_value=1.0, clip_norm=5.0)
    >>> model.compile(optimizer=optimizer, loss="mse")
    """

    def __init__(self, inner_optimizer, clip_value=1.0, clip_norm=5.0, name=None):
        if not isinstance(inner_optimizer, keras.optimizers.Optimizer):
            raise ValueError(
                "`inner_optimizer` must be a `keras.optimizers.Optimizer` "
                f"instance. Received: inner_optimizer={inner_optimizer!r}"
            )
        if isinstance(inner_optimizer, keras.optimizers.LossScaleOptimizer):
            raise ValueError(
                "`inner_optimizer` must not be a `LossScaleOptimizer`: the "
                "gradients would be clipped before they are unscaled. Wrap the "
                "other way round, LossScaleOptimizer(TwoStageClipOptimizer(...)). "
                f"Received: inner_optimizer={inner_optimizer!r}"
            )
        clashing = {
            arg: getattr(inner_optimizer, arg, None)
            for arg in _CLIPPING_ARGS
            + ("loss_scale_factor", "gradient_accumulation_steps")
        }
        clashing = {arg: value for arg, value in clashing.items() if value}
        if clashing:
            received = ", ".join(f"{k}={v!r}" for k, v in clashing.items())
            raise ValueError(
                "TwoStageClipOptimizer clips the gradients itself (clip_value, "
                "clip_norm); `inner_optimizer` must not clip, scale the loss or "
                "accumulate gradients as well. Received: inner_optimizer with "
                f"{received}"
            )
        clip_value = _check_threshold("clip_value", clip_value)
        clip_norm = _check_threshold("clip_norm", clip_norm)
        super().__init__(learning_rate=0.0, name=name)
        self.inner_optimizer = inner_optimizer
        self.clip_value = clip_value
        self.clip_norm = clip_norm

    def build(self, var_list):
        self.inner_optimizer.build(var_list)
        super().build(var_list)

    @property
    def variables(self):
        return self._variables + self.inner_optimizer.variables

    @property
    def learning_rate(self):
        return self.inner_optimizer.learning_rate

    @learning_rate.setter
    def learning_rate(self, learning_rate):
        self.inner_optimizer.learning_rate = learning_rate

    @property
    def iterations(self):
        return self.inner_optimizer.iterations

    def _replica_sum(self, grads):
        """`(gradients summed over replicas, number of replicas)`.

        Only a TensorFlow replica context with several replicas sums; on JAX
        and on one device the gradients are returned as they are, with 1.
        """
        if keras.backend.backend() != "tensorflow":
            return grads, 1
        import tensorflow as tf

        context = tf.distribute.get_replica_context()
        replicas = context.num_replicas_in_sync if context is not None else 1
        if replicas == 1:
            return grads, 1
        present = [i for i, g in enumerate(grads) if g is not None]
        reduced = context.all_reduce(
            tf.distribute.ReduceOp.SUM, [grads[i] for i in present]
        )
        grads = list(grads)
        for i, g in zip(present, reduced, strict=True):
            grads[i] = g
        return grads, replicas

    def apply(self, grads, trainable_variables=None):
        grads = list(grads)
        if not grads:
            return
        if not self.built:
            if trainable_variables is None:
                raise ValueError(
                    "When passing `grads` without `trainable_variables`, the "
                    "optimizer must already be built. Call "
                    "`optimizer.build(trainable_variables)` first. Received: "
                    "trainable_variables=None"
                )
            trainable_variables = list(trainable_variables)
            with keras.name_scope(self.name, caller=self):
                self.build(trainable_variables)
            self.built = True
        # 1. The global-batch gradient on every replica.
        grads, replicas = self._replica_sum(grads)
        # 2. Elementwise, then global-norm clipping.
        grads = clip_gradients_two_stage(grads, self.clip_value, self.clip_norm)
        # 3. The inner optimizer sums over replicas again: 1 / replicas each.
        if replicas > 1:
            grads = [None if g is None else g / replicas for g in grads]
        self.inner_optimizer.apply(grads, trainable_variables)

    def finalize_variable_values(self, var_list):
        self.inner_optimizer.finalize_variable_values(var_list)

    def get_config(self):
        # Not super().get_config(): the base arguments (clipnorm, weight
        # decay, EMA, ...) belong to the inner optimizer.
        return {
            "name": self.name,
            "inner_optimizer": keras.saving.serialize_keras_object(
                self.inner_optimizer
            ),
            "clip_value": self.clip_value,
            "clip_norm": self.clip_norm,
        }

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        inner_optimizer = keras.saving.deserialize_keras_object(
            config.pop("inner_optimizer"), custom_objects=custom_objects
        )
        return cls(inner_optimizer, **config)
