"""`FusedAdam`: Keras' Adam, each variable's update one fused op on
TensorFlow.

Keras updates each variable with Adam from about ten small ops (the two
moment updates, the step size, the root, the division); the inpainter's
three optimizers update about 120 variables a step. On TensorFlow this
optimizer does each update as one `ResourceApplyAdam` op, which computes
the same formula: the inpainter's training step runs faster,
and the updated variables agree with Keras' to a few units in the last place
(docs/speed.md). Everywhere else (JAX, AMSGrad, a `tf.distribute`
strategy, variables other than float32) it is Keras' Adam unchanged.
"""

import keras


@keras.saving.register_keras_serializable(package="cram_keras")
class FusedAdam(keras.optimizers.Adam):
    """`keras.optimizers.Adam` whose per-variable update is one op on
    TensorFlow. Same arguments and variables; the same results to float32
    round-off.

    The update, as Keras': with step t, m += (g - m)(1 - beta_1),
    v += (g^2 - v)(1 - beta_2), and the variable moves by
    lr sqrt(1 - beta_2^t) / (1 - beta_1^t) m / (sqrt(v) + epsilon).
    Weight decay, gradient clipping, loss scaling and the moving average
    of the weights happen outside the update, as in Keras.
    """

    def _fusable(self, variable):
        if keras.backend.backend() != "tensorflow" or self.amsgrad:
            return False
        import tensorflow as tf

        return not tf.distribute.has_strategy() and (
            keras.backend.standardize_dtype(variable.dtype) == "float32"
        )

    def update_step(self, gradient, variable, learning_rate):
        if not self._fusable(variable):
            return super().update_step(gradient, variable, learning_rate)
        import tensorflow as tf

        step = tf.cast(self.iterations + 1, "float32")
        beta_1 = tf.cast(self.beta_1, "float32")
        beta_2 = tf.cast(self.beta_2, "float32")
        index = self._get_variable_index(variable)
        tf.raw_ops.ResourceApplyAdam(
            var=variable.handle,
            m=self._momentums[index].handle,
            v=self._velocities[index].handle,
            beta1_power=tf.pow(beta_1, step),
            beta2_power=tf.pow(beta_2, step),
            lr=tf.cast(learning_rate, "float32"),
            beta1=beta_1,
            beta2=beta_2,
            epsilon=tf.cast(self.epsilon, "float32"),
            grad=tf.cast(gradient, "float32"),
        )
