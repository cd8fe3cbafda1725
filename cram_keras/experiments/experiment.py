"""What an experiment supplies (`Experiment`: its Config and hooks), and
what every hook gets (`Run`: one run in progress).

`cram_keras.experiments.runner.run_experiment` calls the hooks in this
order: `load_data`, `check_inputs`, `prepare`, then either
`custom_training` or, for the epoch loop (`cram_keras.experiments.epochs`),
`build_model`, `example_batch`, `valid_dataset`, `samples_per_epoch` and
every epoch `learning_rate`, `train_dataset`, `epoch_callbacks`; then
`summarize_log`, `after_training`, `evaluate`, `write_outputs` (the chief)
and `export` (with ``--export``). Each takes the `Run`; the model being
trained is ``run.model``, the data ``run.data``.
"""

import dataclasses
import os
import sys

import keras

from cram_keras.experiments.errors import UsageError
from cram_keras.experiments.summary import note
from cram_keras.training.distribute import Distribution
from cram_keras.training.workarounds import python_scalar


@dataclasses.dataclass
class Run:
    """One run in progress: what every hook of an `Experiment` gets.

    Attributes:
        directory: the run directory (`path` names a file in it).
        config: the resolved Config.
        distribution: the strategy (`cram_keras.training.distribute`).
        smoke: a ``--smoke`` run (the bundled samples unless the config
            names data).
        log: where the run's notes go (stderr).
        data: what `Experiment.load_data` returned (None before).
        model: the model being trained and evaluated (None before it is
            built).
    """

    directory: str
    config: object
    distribution: Distribution = dataclasses.field(
        default_factory=lambda: Distribution("default")
    )
    smoke: bool = False
    log: object = note
    data: object = None
    model: object = None

    @property
    def is_chief(self):
        """Whether this process writes the run's files."""
        return self.distribution.is_chief

    def path(self, *names):
        return os.path.join(self.directory, *names)

    def evaluate(self, dataset):
        """``run.model.evaluate(dataset)`` as a dict of floats."""
        scores = self.model.evaluate(dataset, return_dict=True, verbose=0)
        return {k: float(python_scalar(v)) for k, v in scores.items()}


class Experiment:
    """The parts of an experiment that differ between the scripts.

    Subclasses set the class attributes and override the hooks; the
    defaults below are what a plain supervised ``fit`` needs.
    """

    name = None  # "rnn_spn": runs/<name>/<run name>
    Config = None  # the frozen dataclass of every setting
    title = ""  # one line for --help
    examples = ""  # the script's usage examples for --help
    backends = ("tensorflow",)
    monitor = None  # e.g. "val_digit_accuracy": early stopping and best weights
    monitor_mode = "max"
    smoke_overrides = {}
    speed_key = "train_samples_per_second"  # its name in metrics.json
    name_fields = ("seed",)  # Config fields that run_name() spells out

    # === The command line ===

    def add_arguments(self, parser):
        """Flags of this script beyond the Config's (e.g. --eval-only)."""

    def run_without_training(self, args, config):
        """Handles such a flag and returns an exit code, or None to train."""
        return None

    def smoke_config(self, **overrides):
        """Seconds-long end-to-end run on tiny data and networks (used by
        the tests): the Config with `smoke_overrides` and ``overrides``."""
        values = dict(self.smoke_overrides)
        values.update({k: v for k, v in overrides.items() if v is not None})
        return self.Config(**values)

    def run_name(self, config):
        raise NotImplementedError

    def monitor_for(self, config):
        """The validation value that early stopping and the best weights
        follow for a run of ``config`` (``monitor`` unless the experiment
        monitors only some runs); ``None``: the last epoch is kept."""
        return self.monitor

    # === Data ===

    def load_data(self, run):
        """Everything the run needs from disk; nothing is written yet. On a
        ``run.smoke`` run, the bundled samples unless the config names a data
        source. Its ``source`` attribute (a `DataSource` or dict), where it
        has one, is recorded in config.json and metrics.json."""
        raise NotImplementedError

    def check_inputs(self, run):
        """Raises `UsageError` for a config that cannot run on ``run.data``."""

    def prepare(self, run):
        """A stage before the model (e.g. a saliency network); resumable."""

    def train_dataset(self, run, epoch):
        raise NotImplementedError

    def valid_dataset(self, run):
        return None

    def samples_per_epoch(self, run):
        raise NotImplementedError

    # === Model and training ===

    def build_model(self, run):
        """The compiled model (called inside the strategy's scope)."""
        raise NotImplementedError

    def example_batch(self, run):
        """A small ``(x, y)`` batch that builds the compiled loss and metrics
        before ``fit`` (a distributed first batch cannot), or None."""
        return None

    def learning_rate(self, run, epoch):
        """The learning rate of ``epoch``, or None to leave it alone."""
        return None

    def epoch_callbacks(self, run):
        return []

    def custom_training(self, run):
        """Returns ``(model, summary)`` to replace the epoch loop (e.g. a
        hyperparameter search), or None for the standard loop."""
        return None

    def summarize_log(self, rows):
        """Per-epoch curves for metrics.json from the committed log rows."""
        return {}

    def after_training(self, run):
        """Post-training step on ``run.model``'s final weights (must be
        repeatable: a rerun after a kill starts it again from the same
        checkpoint)."""

    # === Results ===

    def evaluate(self, run):
        """The scores of ``run.model`` for metrics.json."""
        raise NotImplementedError

    def write_outputs(self, run, metrics):
        """Figures (called on the chief only)."""

    def export(self, run, path):
        """Writes ``run.model`` as a SavedModel into ``path``."""
        raise NotImplementedError


def data_settings(config, bundled):
    """Where a classification Config's data come from and how many of them,
    as the keyword arguments of its loader (`load_classification_splits`,
    `load_cluttered_sequences`): the folders, the generator's seed
    (`data_seed`), the split sizes and `bundled`."""
    return dict(
        data_dir=config.data_dir,
        cache_dir=config.cache_dir,
        seed=config.data_seed,
        n_train=config.n_train,
        n_valid=config.n_valid,
        n_test=config.n_test,
        bundled=bundled,
    )


def check_backend(experiment):
    """The Keras backend, if ``experiment`` trains on it (else `UsageError`)."""
    backend = keras.backend.backend()
    if backend not in experiment.backends:
        script = os.path.basename(sys.argv[0] or "") or experiment.name
        if not script.startswith("train_"):
            script = experiment.name
        raise UsageError(
            f"{script} trains on {' or '.join(experiment.backends)} only. "
            f"Received: KERAS_BACKEND={backend!r}. Set KERAS_BACKEND="
            f"{experiment.backends[0]} (or unset it)."
        )
    return backend


def jit_compile_for_backend(flag, run_eagerly=False):
    """`jit_compile` for ``model.compile``: ``flag`` on TensorFlow (XLA, off
    by default since it is slower on CPU for these models); always on for
    JAX, where `jax.jit` is the only compiled path (without it every op of
    the step is dispatched one by one: about 6x slower even on CPU for the
    RNN-SPN smoke run, far more on a GPU), unless the step runs eagerly."""
    if run_eagerly:
        return False
    return True if keras.backend.backend() == "jax" else bool(flag)


def check_one_worker_search(distribution):
    """`UsageError` for a search (``--tune``) under MultiWorkerMirroredStrategy:
    its trials run one after another in one process."""
    if distribution.workers > 1:
        raise UsageError(
            "--tune runs keras-tuner's trials one after another in one process; "
            "it does not run under MultiWorkerMirroredStrategy. Run it on one "
            "machine (--strategy default or mirrored)."
        )


def check_batch_size(batch_size, available, what, remedy):
    """`UsageError` when one global batch needs more examples than there are."""
    if batch_size > available:
        raise UsageError(
            f"--batch-size {batch_size} is larger than the {available} {what}. {remedy}"
        )


# The splits of a classification experiment, as its messages name them.
SPLIT_NAMES = (("train", "training"), ("valid", "validation"), ("test", "test"))


def check_batches_for_replicas(distribution, sets):
    """`UsageError` where a distribution cannot split a batch of a set.

    A `tf.distribute` strategy hands a replica an empty batch when a global
    batch has fewer examples than there are replicas: TensorFlow's CPU
    convolutions (oneDNN) return a wrong shape for it, its max-pooling
    gradient aborts the process, and batch normalisation turns the weights
    into NaN (Keras' layer, on any device). JAX's data parallelism shards
    every batch evenly over its devices, so each batch, the last one too,
    must be a multiple of their number.

    Args:
        distribution: the run's `Distribution`.
        sets: `(what, examples, batch_size, flag, full_batches_only)` for
            each set the distribution splits: e.g. `("training images", 65,
            16, "--batch-size", False)`; with `full_batches_only` the last,
            short batch is dropped (only the batch size matters).
    """
    replicas = distribution.replicas
    if replicas < 2:
        return
    if distribution.name == "jax_data_parallel":
        lead = f"JAX's data parallelism shards every batch over {replicas} devices"
        need = advice = f"a multiple of {replicas}"
        why = "which does not split evenly over the devices"

        def fits(size):
            return size % replicas == 0
    elif distribution.strategy is not None:
        lead = (
            f"--strategy {distribution.name} splits every batch over "
            f"{replicas} replicas"
        )
        need = f"full or holds at least {replicas}"
        advice = f"at least {replicas}"
        why = (
            "so a replica would get no example, which TensorFlow's CPU "
            "convolutions (oneDNN) and batch normalisation do not survive"
        )

        def fits(size):
            return size == 0 or size >= replicas
    else:
        return
    for what, examples, batch_size, flag, full_only in sets:
        if not fits(batch_size) or batch_size < replicas:
            raise UsageError(
                f"{lead}, but {flag} is {batch_size}, {why}. Use {flag} of {advice}."
            )
        if examples < replicas:
            raise UsageError(
                f"{lead}, but there are only {examples} {what}, {why}. Use at "
                f"least {replicas} {what}, or fewer replicas."
            )
        last = 0 if full_only else examples % batch_size
        if not fits(last):
            good = [
                b
                for b in range(batch_size, replicas - 1, -1)
                if fits(b)
                and all(
                    fits(n % b) for _, n, _, other, full in sets
                    if other == flag and not full
                )
            ]  # fmt: skip
            sep = "=" if flag.startswith("--set") else " "
            example = f" (e.g. {flag}{sep}{good[0]})" if good else ""
            raise UsageError(
                f"{lead}, but the {examples} {what} in batches of {batch_size} "
                f"end with a batch of {last} ({examples} = "
                f"{examples // batch_size} x {batch_size} + {last}), {why}. "
                f"Choose {flag} so that the last batch is {need}{example}, or "
                f"change the number of {what}."
            )
