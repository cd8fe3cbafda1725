"""What Keras 3.15 and TensorFlow 2.21 do not do for a run under a
tf.distribute strategy (several replicas, or several workers), and what a
run does instead. All of it is here; the run calls it where
it trains (`cram_keras.experiments.epochs`).

1. **Reading a number** (`python_scalar`): ``int()`` and ``float()`` of a
   Keras variable made under a strategy raise ``TypeError`` (Keras hands
   its ``MirroredVariable`` to ``int()``).
2. **``fit`` under MultiWorkerMirroredStrategy** (`prepare_for_fit`,
   tensorflow/tensorflow#72388): its symbolic build reduces the whole
   first distributed batch, and its "mean" of the per-replica logs cannot
   take the 0-d scalars that a step returns.
3. **Batch-norm moving statistics** (`sync_replica_variables`,
   `SyncReplicaVariables`): Keras creates them with aggregation "none", so
   each replica (and each worker) updates its own copy from its own part of
   the batch, and a model saved, evaluated or checkpointed afterwards would
   hold replica 0's copy on one worker and another's elsewhere.
4. **The best weights on every worker** (`restore_best_weights`): Keras'
   own checkpoints under MultiWorkerMirroredStrategy are written by every
   worker; a run's checkpoints are written by the chief alone, so the other
   workers read the chief's record to restore the weights it names.

tests/training/test_workarounds.py shows the upstream behaviour behind
1 to 3 and fails the day Keras or TensorFlow no longer needs the part it
names; drop that part then.
"""

import keras
import numpy as np


def python_scalar(value):
    """``value``, one number (a Keras variable, a tensor, a NumPy value or a
    Python number; any shape with one element), as a Python int, float or
    bool. Reads what ``int()`` and ``float()`` cannot: a variable made under
    a strategy, and the 1-element logs of `prepare_for_fit`."""
    if isinstance(value, keras.Variable):
        value = value.numpy()  # a distributed variable reads its own copy
    array = np.asarray(keras.ops.convert_to_numpy(value))
    if array.size != 1:
        raise ValueError(
            f"Expected a single number. Received: a value of shape {array.shape}"
        )
    return array.reshape(()).item()


def prepare_for_fit(model, distribution):
    """Makes ``model`` (built, with its loss and metrics built) trainable
    with ``fit`` under ``distribution``; see `work_around_multiworker_fit`."""
    if distribution.name == "multiworker":
        work_around_multiworker_fit(model)
    return model


def work_around_multiworker_fit(model):
    """Keras' ``fit`` under MultiWorkerMirroredStrategy fails twice: its
    symbolic build reduces the whole first distributed batch, and its "mean"
    reduction of the per-replica logs (``strategy.reduce(MEAN, v, axis=0)``)
    cannot take the 0-d scalars that a step returns. The model, loss and
    metrics must already be built (the run builds them from an example
    batch), so the first step's symbolic build is skipped for this model;
    and its train and test steps return every log as a 1-element vector,
    which the same reduction averages over the replicas as on one machine
    (`python_scalar` reads such a log)."""
    model._maybe_symbolic_build = lambda iterator=None, data_batch=None: None
    for name in ("train_step", "test_step"):
        step = getattr(model, name)

        def vector_logs(data, step=step):
            logs = step(data)
            return {k: keras.ops.reshape(v, (1,)) for k, v in logs.items()}

        setattr(model, name, vector_logs)
    return model


def sync_replica_variables(model, distribution):
    """Sets every replica's copy of each variable of ``model`` that the
    replicas update on their own to the mean over all replicas (of every
    worker). Returns the number of variables it averaged.

    Such variables are the batch-norm moving statistics. The mean of the
    replicas' moving means is the moving mean of the global batch means (the
    average is linear); that of the moving variances, the mean
    within-replica variance. Every worker must call it at the same point (a
    collective reduce).
    """
    strategy = distribution.strategy
    if strategy is None or distribution.replicas < 2:
        return 0
    import tensorflow as tf

    targets = [
        v
        for v in model.non_trainable_variables
        if v.aggregation == "none"
        and keras.backend.is_float_dtype(v.dtype)
        and isinstance(v.value, tf.distribute.DistributedValues)
    ]
    for variable in targets:
        local = strategy.run(lambda v=variable: tf.identity(v.value))
        mean = strategy.reduce(tf.distribute.ReduceOp.MEAN, local, axis=None)
        variable.assign(mean)
    return len(targets)


class SyncReplicaVariables(keras.callbacks.Callback):
    """Before each validation, `sync_replica_variables`, so that every
    replica validates the weights the checkpoint will hold (nothing on one
    replica)."""

    def __init__(self, distribution):
        super().__init__()
        self.distribution = distribution

    def on_test_begin(self, logs=None):
        sync_replica_variables(self.model, self.distribution)


def restore_best_weights(model, checkpoints, record, distribution, log):
    """Loads the weights of the best epoch that ``record`` (this process's
    newest `EpochCheckpoints` record) names, on every worker alike.

    Only the chief writes checkpoints, so only its records name the best
    weights: the other workers wait until it has committed the last epoch
    and read its record."""
    if distribution.workers > 1:
        distribution.barrier()
        if not distribution.is_chief:
            record = checkpoints.latest(log=log)
    if record is not None and record.get("best_weights"):
        model.load_weights(checkpoints.path(record, "best_weights"))
