"""What Keras and TensorFlow do not do under a tf.distribute strategy, shown
on Keras itself: each test below fails the day upstream no longer needs the
part of `cram_keras.training.workarounds` it names, which can go then.

1. ``int()`` / ``float()`` of a variable made under a strategy raise
   (`python_scalar`).
2. ``fit`` under MultiWorkerMirroredStrategy fails without
   `work_around_multiworker_fit`, in each of its two parts.
3. Each worker keeps its own batch-norm moving statistics
   (`sync_replica_variables`).

2 and 3 run two worker processes of one cluster on 127.0.0.1.
"""

import json

import keras
import numpy as np
import pytest
from testing import run_workers

from cram_keras.training.workarounds import python_scalar


def test_python_scalar_reads_what_int_cannot():
    """When the first two checks fail, Keras reads such variables itself."""
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


# A worker of a two-worker cluster: fits a tiny model under
# MultiWorkerMirroredStrategy without each part of the fit workaround, reads
# the optimizer's step count, and reads its batch-norm moving mean after a
# fit on rows that differ between the workers, before and after
# `sync_replica_variables`; prints what happened as JSON.
_KERAS_LIMITS = """
import json
import numpy as np
import keras
from cram_keras.training.distribute import resolve_strategy
from cram_keras.training.workarounds import (
    python_scalar, sync_replica_variables, work_around_multiworker_fit)

distribution = resolve_strategy("multiworker")

def skip_symbolic_build(model):
    model._maybe_symbolic_build = lambda iterator=None, data_batch=None: None

def vector_logs_only(model):
    work_around_multiworker_fit(model)
    del model._maybe_symbolic_build

def built(layers):
    with distribution.scope():
        model = keras.Sequential([keras.Input((2,)), *layers, keras.layers.Dense(1)])
        model.compile(optimizer="sgd", loss="mse")
        model.compute_loss(x=x[:2], y=y[:2], y_pred=model(x[:2]))
        model.optimizer.build(model.trainable_variables)
    return model

results, models = {}, {}
x, y = np.ones((8, 2), "float32"), np.ones((8, 1), "float32")
for name, patch in [("workaround", work_around_multiworker_fit),
                    ("symbolic_build_skipped_only", skip_symbolic_build),
                    ("vector_logs_only", vector_logs_only),
                    ("none", lambda model: None)]:
    model = models[name] = built([])
    patch(model)
    try:
        model.fit(x, y, batch_size=4, epochs=1, verbose=0)
        results[name] = "trained"
    except Exception as err:
        results[name] = f"{type(err).__name__}: {err}"
steps = models["workaround"].optimizer.iterations
try:
    int(steps)
    results["int"] = "read"
except TypeError as err:
    results["int"] = f"TypeError: {err}"
results["python_scalar"] = python_scalar(steps)

# Momentum 0: the moving mean is the mean of the last batch this worker saw.
model = work_around_multiworker_fit(built([keras.layers.BatchNormalization(momentum=0.0)]))
rows = np.arange(16, dtype="float32").reshape(8, 2)
model.fit(rows, y, batch_size=4, epochs=1, verbose=0, shuffle=False)
moving_mean = model.layers[0].moving_mean
results["moving_mean"] = np.asarray(moving_mean.numpy()).tolist()
results["synced"] = sync_replica_variables(model, distribution)
results["moving_mean_synced"] = np.asarray(moving_mean.numpy()).tolist()
print("RESULTS " + json.dumps(results))
"""


@pytest.fixture(scope="module")
def workers():
    """What each of the two workers found (`_KERAS_LIMITS`)."""
    results = []
    for proc, stdout, stderr in run_workers(["-c", _KERAS_LIMITS], timeout=600):
        assert proc.returncode == 0, stdout[-2000:] + stderr[-4000:]
        line = next(x for x in stdout.splitlines() if x.startswith("RESULTS "))
        results.append(json.loads(line[len("RESULTS ") :]))
    return results


@pytest.mark.slow
def test_keras_fit_still_needs_the_multiworker_workaround(workers):
    """When this fails, Keras' fit (or int() of a distributed variable) works
    under MultiWorkerMirroredStrategy without our help: drop the part of
    `work_around_multiworker_fit` (or `python_scalar`) it names."""
    for result in workers:
        assert result["workaround"] == "trained"
        # Without skipping the symbolic build, it reduces a distributed batch.
        assert result["vector_logs_only"].startswith("ValueError")
        assert "PerReplica" in result["vector_logs_only"]
        assert (
            result["none"].startswith("ValueError") and "PerReplica" in result["none"]
        )
        # Without 1-element logs, the multi-worker "mean" of a 0-d log fails.
        assert result["symbolic_build_skipped_only"].startswith("ValueError")
        assert "reduction dimension 0" in result["symbolic_build_skipped_only"]
        assert (
            result["int"].startswith("TypeError")
            and "MirroredVariable" in result["int"]
        )
        # 8 examples in global batches of 4.
        assert result["python_scalar"] == 2


@pytest.mark.slow
def test_keras_still_keeps_batch_norm_statistics_per_worker(workers):
    """When this fails, Keras averages (or synchronises) the batch-norm
    moving statistics over the replicas itself: drop
    `sync_replica_variables` and `SyncReplicaVariables`."""
    chief, other = workers
    # The workers saw different rows, and each kept its own moving mean.
    assert not np.allclose(chief["moving_mean"], other["moving_mean"])
    # Averaged, they hold one value: the mean of the two.
    assert chief["synced"] == other["synced"] == 2  # moving mean and variance
    mean = np.mean([chief["moving_mean"], other["moving_mean"]], axis=0)
    for worker in workers:
        np.testing.assert_allclose(worker["moving_mean_synced"], mean, rtol=1e-6)
