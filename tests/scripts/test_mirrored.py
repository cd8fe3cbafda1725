"""Reading a number from a variable made under a tf.distribute strategy
(`python_scalar`), which ``int()`` cannot. Each script's smoke run under
--strategy mirrored on a CPU split into two logical devices is the artifact
test in tests/scripts/test_train_<script>.py."""

import keras
import numpy as np
import pytest

from cram_keras.training.distribute import python_scalar


def test_python_scalar_reads_what_int_cannot():
    """`python_scalar` exists because ``int()`` and ``float()`` of a Keras
    variable made under a tf.distribute strategy raise; when the first two
    checks fail, Keras reads such variables itself."""
    import tensorflow as tf

    strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
    with strategy.scope():
        count = keras.Variable(7, dtype="int64", trainable=False)
        rate = keras.Variable(0.25, dtype="float32")
    with pytest.raises(TypeError, match="MirroredVariable"):
        int(count)
    with pytest.raises(TypeError, match="MirroredVariable"):
        float(rate)
    assert python_scalar(count) == 7 and type(python_scalar(count)) is int
    assert python_scalar(rate) == 0.25 and type(python_scalar(rate)) is float
    # Any one-element value, of any rank; anything larger is refused.
    assert python_scalar(np.array([[3]])) == 3
    assert python_scalar(tf.constant([1.5])) == 1.5
    assert python_scalar(np.bool_(True)) is True
    assert python_scalar(2.0) == 2.0
    with pytest.raises(ValueError, match=r"shape \(2,\)"):
        python_scalar(np.zeros(2))
