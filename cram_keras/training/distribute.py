"""Choosing a distribution strategy (``--strategy``) for a training script.

``auto``: MultiWorkerMirroredStrategy when ``TF_CONFIG`` names a cluster,
MirroredStrategy with more than one GPU, otherwise the default strategy.
``default``, ``mirrored``, ``multiworker`` and ``tpu`` choose explicitly.
``mirrored`` mirrors over every GPU; on a machine without one, over every
logical CPU device: one, unless the program split the CPU with
``tf.config.set_logical_device_configuration`` before TensorFlow started
(which runs several replicas on one CPU, e.g. to check a distributed run
without a GPU).

On TensorFlow the scripts create models, optimizers and metrics inside
``strategy.scope()``; ``--batch-size`` is the global batch, which Keras
splits over the replicas. Under MultiWorkerMirroredStrategy every worker
runs the same program and reads checkpoints from the same run directory
(a shared filesystem); only the chief writes checkpoints, logs and figures.

`Distribution.barrier` waits for every worker (e.g. until the chief has
written a file that the others read), and `Distribution.all_agree` tells
every worker whether all of them could do something. What Keras' ``fit``
does not do under a strategy, and what a run does instead, is
`cram_keras.training.workarounds`.

On JAX, ``auto`` and ``default`` run on one device unless JAX sees several,
in which case ``auto`` shards each batch over them with
``keras.distribution.DataParallel``; ``mirrored``, ``multiworker`` and
``tpu`` are TensorFlow strategies and are refused with a clear message.
"""

import contextlib
import dataclasses
import json
import os

import keras

STRATEGIES = ("auto", "default", "mirrored", "multiworker", "tpu")


class StrategyError(ValueError):
    """The requested strategy cannot run here (usage error, exit 2)."""


@dataclasses.dataclass
class Distribution:
    """The resolved strategy of a run.

    Attributes:
        name: what ran: "default", "mirrored", "multiworker", "tpu" or
            "jax_data_parallel".
        strategy: the ``tf.distribute.Strategy`` (TensorFlow), else None.
        replicas: replicas in sync (global batch = replicas x per-replica).
        workers: processes in the cluster.
        worker_index: this process's index (0 for the chief).
        is_chief: whether this process writes the run's files.
    """

    name: str
    strategy: object = None
    replicas: int = 1
    workers: int = 1
    worker_index: int = 0
    is_chief: bool = True

    def scope(self):
        if self.strategy is None:
            return contextlib.nullcontext()
        return self.strategy.scope()

    def describe(self):
        return {
            "strategy": self.name,
            "replicas": self.replicas,
            "workers": self.workers,
        }

    def barrier(self):
        """Returns once every worker of the cluster has called it (at once
        with a single worker). Every worker must call it the same number of
        times, in the same order relative to training."""
        if self.workers < 2 or self.strategy is None:
            return
        import tensorflow as tf

        strategy = self.strategy
        ones = strategy.run(lambda: tf.ones(()))
        total = strategy.reduce(tf.distribute.ReduceOp.SUM, ones, axis=None)
        if int(total.numpy()) != strategy.num_replicas_in_sync:  # pragma: no cover
            raise RuntimeError(
                f"barrier: {int(total.numpy())} of {strategy.num_replicas_in_sync} "
                "replicas answered."
            )

    def chief_first(self, fn):
        """``fn()`` on the chief, then, once it has returned there, on every
        other worker (e.g. the chief writes a file that the others read);
        returns its result. Every worker must call it at the same point, as
        `barrier`."""
        if self.is_chief:
            result = fn()
        self.barrier()
        if not self.is_chief:
            result = fn()
        return result

    def all_agree(self, ok):
        """Whether every worker of the cluster passed a true ``ok`` (``ok``
        itself with a single worker). Every worker must call it at the same
        point, as `barrier`."""
        if self.workers < 2 or self.strategy is None:
            return bool(ok)
        import tensorflow as tf

        strategy = self.strategy
        value = 1.0 if ok else 0.0
        votes = strategy.run(lambda: tf.constant(value))
        total = strategy.reduce(tf.distribute.ReduceOp.SUM, votes, axis=None)
        return int(round(float(total.numpy()))) == strategy.num_replicas_in_sync


def _tf_config():
    raw = os.environ.get("TF_CONFIG")
    if not raw:
        return None
    try:
        config = json.loads(raw)
    except ValueError as err:
        raise StrategyError(
            f"TF_CONFIG is not valid JSON ({err}). Received: TF_CONFIG={raw!r}. "
            'Set it as in docs/running.md, e.g. {"cluster": {"worker": ["host1:12345", '
            '"host2:12345"]}, "task": {"type": "worker", "index": 0}}.'
        ) from None
    if not isinstance(config, dict) or "cluster" not in config or "task" not in config:
        raise StrategyError(
            f"TF_CONFIG must hold 'cluster' and 'task'. Received: TF_CONFIG={raw!r}."
        )
    return config


def _chief_of(config):
    """(worker_index, is_chief, workers) from a parsed TF_CONFIG."""
    cluster = config["cluster"]
    task = config["task"]
    kind, index = task.get("type"), int(task.get("index", 0))
    workers = sum(len(cluster.get(k, [])) for k in ("chief", "worker"))
    if "chief" in cluster:
        is_chief = kind == "chief"
        position = 0 if is_chief else index + len(cluster["chief"])
    else:
        is_chief = kind == "worker" and index == 0
        position = index
    return position, is_chief, max(workers, 1)


def resolve_strategy(name="auto"):
    """Creates the strategy ``name`` (see the module docstring).

    Call it first thing in a program: MultiWorkerMirroredStrategy must be
    created before TensorFlow runs any operation.
    """
    if name not in STRATEGIES:
        raise StrategyError(
            f"--strategy must be one of {', '.join(STRATEGIES)}. "
            f"Received: --strategy {name!r}."
        )
    backend = keras.backend.backend()
    if backend != "tensorflow":
        return _resolve_other_backend(name, backend)
    import tensorflow as tf

    tf_config = _tf_config()
    if name == "auto":
        if tf_config is not None and _chief_of(tf_config)[2] > 1:
            name = "multiworker"
        elif len(tf.config.list_logical_devices("GPU")) > 1:
            name = "mirrored"
        else:
            name = "default"
    if name == "default":
        return Distribution("default", tf.distribute.get_strategy())
    if name == "mirrored":
        devices = None  # every GPU
        if not tf.config.list_logical_devices("GPU"):
            devices = [d.name for d in tf.config.list_logical_devices("CPU")]
        strategy = tf.distribute.MirroredStrategy(devices)
        return Distribution(
            "mirrored", strategy, replicas=strategy.num_replicas_in_sync
        )
    if name == "multiworker":
        if tf_config is None:
            raise StrategyError(
                "--strategy multiworker needs TF_CONFIG, the cluster description "
                "of every worker (see the multi-machine example in docs/running.md). "
                "Received: TF_CONFIG unset."
            )
        index, is_chief, workers = _chief_of(tf_config)
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
        return Distribution(
            "multiworker",
            strategy,
            replicas=strategy.num_replicas_in_sync,
            workers=workers,
            worker_index=index,
            is_chief=is_chief,
        )
    # tpu
    try:
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver()
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
    except (ValueError, tf.errors.NotFoundError, RuntimeError) as err:
        raise StrategyError(
            f"--strategy tpu: no TPU could be resolved here ({err}). Use "
            "--strategy auto on a machine without a TPU."
        ) from None
    strategy = tf.distribute.TPUStrategy(resolver)
    return Distribution("tpu", strategy, replicas=strategy.num_replicas_in_sync)


def _resolve_other_backend(name, backend):
    if name in ("mirrored", "multiworker", "tpu"):
        raise StrategyError(
            f"--strategy {name} is a tf.distribute strategy and needs "
            f"KERAS_BACKEND=tensorflow. Received: KERAS_BACKEND={backend!r}. "
            "On JAX use --strategy auto (data parallel over all local devices) "
            "or default."
        )
    if backend == "jax" and name == "auto":
        devices = keras.distribution.list_devices()
        if len(devices) > 1:
            keras.distribution.set_distribution(
                keras.distribution.DataParallel(devices=devices)
            )
            return Distribution("jax_data_parallel", replicas=len(devices))
    return Distribution("default")
