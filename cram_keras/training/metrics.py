"""Metrics for digit-sequence classification (RNN-SPN paper, Table 1)."""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="cram_keras")
def sequence_correct(y_true, y_pred):
    """1.0 where every digit of a sequence is right, else 0.0.

    Args:
        y_true: integer labels (B, T).
        y_pred: logits or probabilities (B, T, classes).

    Returns:
        float32 (B,).
    """
    predicted = ops.argmax(y_pred, axis=-1)
    correct = ops.equal(ops.cast(predicted, "int32"), ops.cast(y_true, "int32"))
    return ops.cast(ops.all(correct, axis=-1), "float32")


def sequence_metrics():
    """``digit_accuracy`` (over all B x T digits) and ``sequence_accuracy``.

    Per-digit error = 1 - digit_accuracy, the paper's "per digit error";
    sequence error = 1 - sequence_accuracy.
    """
    return [
        keras.metrics.SparseCategoricalAccuracy(name="digit_accuracy"),
        keras.metrics.MeanMetricWrapper(sequence_correct, name="sequence_accuracy"),
    ]
