"""`BatchNormalization`: Keras' batch normalisation, one fused op when
training on TensorFlow.

Keras computes batch normalisation from small ops on every backend (the
batch moments, then the scale and shift), and TensorFlow differentiates each
of them. In training mode on TensorFlow this layer computes the same thing
as one `FusedBatchNormV3` op (oneDNN's on the CPU), whose gradient is one op
too; the inpainter's training step, where two discriminators normalise every
layer, runs faster (docs/speed.md). The results are the same to
float32 round-off (the fused op sums in another order). Under
`mixed_bfloat16` the op takes and returns bfloat16 and computes the
moments and the normalisation in float32, as Keras' layer does after
casting its inputs up (the same to bfloat16 rounding). Everywhere else
(inference, JAX, float16 inputs, masks, renormalisation, synchronised
statistics, inputs of rank other than 2 or 4, or a channel axis other than
the last) it is Keras' layer unchanged.

The class keeps Keras' name on purpose: Keras files a layer's weights under
its class name, so weight files and checkpoints written with
`keras.layers.BatchNormalization` load into this layer and back.
"""

import keras

# The smallest epsilon TensorFlow's fused op accepts (cuDNN's limit, applied
# on every device); below it the layer keeps Keras' own ops.
_FUSED_MIN_EPSILON = 1.001e-5
# Input dtypes the fused op takes on the CPU (its statistics, scale and
# offset in float32).
_FUSED_INPUT_DTYPES = ("float32", "bfloat16")


@keras.saving.register_keras_serializable(package="cram_keras")
class BatchNormalization(keras.layers.BatchNormalization):
    """`keras.layers.BatchNormalization`, fused into one op when training on
    TensorFlow with float32 or bfloat16 inputs of shape (B, C) or
    (B, H, W, C).

    Same arguments, weights, moving statistics and results (to float32
    round-off; bfloat16 rounding for bfloat16 inputs) as
    `keras.layers.BatchNormalization`: the batch moments normalise the
    inputs, and the moving mean and variance follow the batch mean and the
    uncorrected batch variance with `momentum`.
    """

    def _fusable(self, inputs, training, mask):
        return (
            keras.backend.backend() == "tensorflow"
            and training is True
            and self.trainable
            and mask is None
            and not self.renorm
            and not self.synchronized
            and self.epsilon >= _FUSED_MIN_EPSILON
            and len(inputs.shape) in (2, 4)
            and self.axis in (-1, len(inputs.shape) - 1)
            and keras.backend.standardize_dtype(inputs.dtype) in _FUSED_INPUT_DTYPES
            and keras.backend.standardize_dtype(inputs.dtype) == self.compute_dtype
            # The op's statistics, scale and offset are float32.
            and keras.backend.standardize_dtype(self.variable_dtype) == "float32"
        )

    def call(self, inputs, training=None, mask=None):
        if not self._fusable(inputs, training, mask):
            return super().call(inputs, training=training, mask=mask)
        import tensorflow as tf  # Only reached on TensorFlow.

        channels = inputs.shape[-1]
        gamma = self.gamma if self.scale else tf.ones([channels], "float32")
        beta = self.beta if self.center else tf.zeros([channels], "float32")
        x = (
            inputs
            if len(inputs.shape) == 4
            else tf.reshape(inputs, [-1, 1, 1, channels])
        )
        outputs, mean, variance = tf.compat.v1.nn.fused_batch_norm(
            x,
            tf.convert_to_tensor(gamma),
            tf.convert_to_tensor(beta),
            epsilon=self.epsilon,
            data_format="NHWC",
            is_training=True,
        )
        # The op returns the batch variance corrected by n / (n - 1); the
        # moving variance follows the uncorrected one, as in Keras.
        count = tf.cast(tf.reduce_prod(tf.shape(x)[:-1]), "float32")
        variance = variance * ((count - 1.0) / count)
        momentum = self.momentum
        self.moving_mean.assign(
            self.moving_mean * momentum + tf.stop_gradient(mean) * (1.0 - momentum)
        )
        self.moving_variance.assign(
            self.moving_variance * momentum
            + tf.stop_gradient(variance) * (1.0 - momentum)
        )
        if len(inputs.shape) == 2:
            outputs = tf.reshape(outputs, tf.shape(inputs))
        return outputs
