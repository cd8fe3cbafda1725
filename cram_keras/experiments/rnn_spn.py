"""E1: RNN-SPN vs FFN-SPN vs CNN on cluttered MNIST sequences (Sønderby et
al. 2015, Table 1 and Fig. 3).

Paper setting (a GPU; the released code's protocol)::

    python train_rnn_spn.py --model rnn_spn --downsample 2   # Table 1: 1.5 %
    python train_rnn_spn.py --model ffn_spn --downsample 2   # Table 1: 2.0 %
    python train_rnn_spn.py --model conv                     # Table 1: 2.9 %

RMSprop(5e-4, rho 0.9, eps 1e-6), gradients clipped elementwise to +-1 and
then to global norm 5 (`TwoStageClipOptimizer`), learning rate / 1.5 on the
code's schedule after epoch 30, batch 100, up to 300 epochs, early stopping
after 50 epochs without a better validation per-digit error, test errors at
the best validation epoch.

CPU-budget setting: the same architecture and data with ``--epochs`` small
(the configuration ``configs/rnn_spn/budget.py`` holds the committed command
and its wall time). The run machinery (resume, checkpoints, strategies, flags) is
`cram_keras.experiments.runner`; this module holds only what is RNN-SPN's.
`train_and_evaluate(config, output_dir, **kwargs)` trains ``config.model``
and writes every artifact into ``output_dir``; it returns the metrics dict.
"""

import dataclasses
import functools
import math

import keras

from cram_keras.data.pipelines import array_batches, as_float, sequence_dataset
from cram_keras.experiments.config import (
    check_choices,
    check_fields,
    dtype_policy_option,
    option,
)
from cram_keras.experiments.experiment import (
    Experiment,
    check_batch_size,
    jit_compile_for_backend,
)
from cram_keras.experiments.runner import run_experiment
from cram_keras.models.rnn_spn import DROPOUT_PLACEMENTS, MODELS
from cram_keras.training.callbacks import DropoutRamp, step_decay_after
from cram_keras.training.checkpoint import crash_point
from cram_keras.training.metrics import sequence_metrics
from cram_keras.utils import check_int, check_number

MODEL_NAMES = tuple(MODELS)
# Side of the cluttered MNIST sequence images (`load_cluttered_sequences`).
IMAGE_SIZE = 100
# The smallest crop the classifier behind the transformer keeps a pixel of:
# 3x3 "valid" convolution, 2x2 pooling, 3x3 convolution, 2x2 pooling, 3x3
# convolution (`classification_cnn`): 18 -> 16 -> 8 -> 6 -> 3 -> 1.
MIN_CROP = 18


def crop_size(downsample, image_size=IMAGE_SIZE):
    """Side of the transformer's crops: ``int(image_size / downsample)``."""
    return int(image_size / downsample)


def max_downsample(image_size=IMAGE_SIZE):
    """The largest ``downsample`` (3 decimals, rounded down) whose crops the
    classifier can take (at least `MIN_CROP` pixels)."""
    bound = math.floor(image_size / MIN_CROP * 1000) / 1000
    while crop_size(bound, image_size) < MIN_CROP:  # float rounding
        bound = round(bound - 0.001, 3)
    return bound


@dataclasses.dataclass(frozen=True)
class Config:
    """Every setting of an RNN-SPN run; the defaults are the paper setting."""

    # Model.
    model: str = option(
        "rnn_spn",
        "rnn_spn: GRU + transformer per step; ffn_spn: one transformer, three "
        "heads; conv: the classifier alone",
        choices=MODEL_NAMES,
    )
    downsample: float = option(
        2.0,
        "downsample factor d of the transformer: crops are int(100/d) pixels "
        "wide (the paper's Table 1 tries 1..4)",
    )
    dropout: float = option(
        0.0,
        "dropout rate p (the released code's default 0; the paper tuned it on "
        "the validation set and does not report it): see dropout_placement "
        "and dropout_ramp_epochs",
        flag=False,
    )
    dropout_placement: str = option(
        "code",
        "where the dropout layers are: code (the released code's: in the "
        "classifier after its first two poolings, and for rnn_spn also in the "
        "localisation network after its second convolution) or paper (the "
        "appendix's: in the classifier after both poolings and after the third "
        "convolution, none in the localisation network)",
        flag=False,
        choices=DROPOUT_PLACEMENTS,
    )
    dropout_ramp_epochs: int = option(
        5,
        "linear dropout warm-up N, as the released rnn_spn.py (N = 5): the rate "
        "of 0-indexed epoch e < N is p * e / N (0 in the first epoch), p from "
        "epoch N on, derived from the epoch number (also after a resume); 0: p "
        "from the start (the released ffn_spn.py has no ramp)",
        flag=False,
    )
    gru_initializer: str = option(
        "lasagne",
        "initialisation of the RNN-SPN's GRU: lasagne (the released code's "
        "Normal(0, 0.1), zero biases; the default: benchmarks/results/"
        "rnn_spn_init.json found no clear difference) or keras (Glorot / "
        "orthogonal, the RNNSPN layer's own default)",
        flag=False,
        choices=("keras", "lasagne"),
    )
    # Optimisation (released code).
    epochs: int = option(300, "maximum epochs")
    batch_size: int = option(100, "global batch size (split over replicas)")
    learning_rate: float = option(5e-4, "RMSprop learning rate", flag=False)
    rho: float = option(0.9, "RMSprop rho", flag=False)
    epsilon: float = option(1e-6, "RMSprop epsilon", flag=False)
    clip_value: float = option(1.0, "elementwise gradient clip", flag=False)
    clip_norm: float = option(5.0, "global-norm gradient clip", flag=False)
    lr_decay_factor: float = option(1.5, "learning-rate divisor", flag=False)
    lr_decay_interval: int = option(10, "epochs between decays", flag=False)
    lr_no_decay_epochs: int = option(30, "epochs before the first decay", flag=False)
    patience: int = option(
        50,
        "early stopping: epochs without a better validation per-digit error",
        flag=False,
    )
    jit_compile: bool = option(
        False,
        "compile the train step with XLA on TensorFlow (off by default: slower on "
        "CPU for these models, see benchmarks/results/rnn_spn_speed.json); on JAX "
        "the step is always compiled with jax.jit",
    )
    dtype_policy: str = dtype_policy_option()
    seed: int = option(0, "training seed (initial weights, batch order)")
    # Data.
    data_dir: str | None = option(
        None,
        "directory with the four official MNIST IDX .gz files; without it MNIST "
        "comes from TFDS when prepared or reachable, else from the bundled sample",
        metavar="DIR",
    )
    cache_dir: str | None = option(
        None,
        "where generated sequence sets are cached (none: $CRAM_KERAS_CACHE or "
        "~/.cache/cram_keras)",
        metavar="DIR",
    )
    n_train: int = option(60000, "training sequences to generate (the paper's 60,000)")
    n_valid: int = option(10000, "validation sequences", flag=False)
    n_test: int = option(10000, "test sequences", flag=False)
    data_seed: int = option(1234, "seed of the sequence generator", flag=False)
    # Outputs.
    figure_examples: int = option(4, "test images in attention.png", flag=False)
    export: bool = option(
        False, "also write a SavedModel (serve: images -> per-step class probabilities)"
    )

    def __post_init__(self):
        check_choices(self)
        check_number("downsample", self.downsample, low=1.0)
        if self.model != "conv" and crop_size(self.downsample) < MIN_CROP:
            crop = crop_size(self.downsample)
            raise ValueError(
                f"`downsample` (--downsample) must be a number in [1, "
                f"{max_downsample():g}] for the {IMAGE_SIZE}x{IMAGE_SIZE} images of "
                f"cluttered MNIST: the transformer's crops are int({IMAGE_SIZE} / "
                "downsample) pixels wide, and the classifier after it (three 3x3 "
                "convolutions and two 2x2 poolings) needs crops of at least "
                f"{MIN_CROP} pixels. Received: downsample={self.downsample!r} "
                f"({crop}x{crop}-pixel crops)"
            )
        check_number("dropout", self.dropout, low=0.0, high=1.0, high_inclusive=False)
        check_int("dropout_ramp_epochs", self.dropout_ramp_epochs, low=0)
        rates = ("learning_rate", "rho", "epsilon", "clip_value", "clip_norm")
        check_fields(self, check_number, rates, low=0.0, low_inclusive=False)
        check_number("lr_decay_factor", self.lr_decay_factor, low=1.0)
        positive = ("epochs", "batch_size", "patience", "n_train", "n_valid", "n_test")
        check_fields(self, check_int, positive, low=1)
        counts = ("lr_decay_interval", "lr_no_decay_epochs", "seed", "data_seed")
        check_fields(self, check_int, (*counts, "figure_examples"), low=0)


SMOKE = dict(
    epochs=2, batch_size=16, n_train=64, n_valid=32, n_test=32, patience=5,
    figure_examples=2,
)  # fmt: skip


class _Data:
    def __init__(self, splits, source):
        self.splits = splits
        self.source = source


def load_splits(config, bundled=False):
    """Cluttered MNIST sequences: ``({split: (uint8 (N, 100, 100, 1), (N, 3))},
    DataSource)``."""
    from cram_keras.data.cluttered import load_cluttered_sequences

    data, source = load_cluttered_sequences(
        data_dir=config.data_dir,
        cache_dir=config.cache_dir,
        seed=config.data_seed,
        n_train=config.n_train,
        n_valid=config.n_valid,
        n_test=config.n_test,
        dtype="uint8",
        bundled=bundled,
        return_source=True,
    )
    splits = {
        split: (data[split].images, data[split].labels)
        for split in ("train", "valid", "test")
    }
    return splits, source


def build_model(config):
    cls = MODELS[config.model]
    kwargs = dict(dropout=config.dropout, dropout_placement=config.dropout_placement)
    if config.model != "conv":
        kwargs["downsample_factor"] = config.downsample
    if config.model == "rnn_spn":
        kwargs["gru_initializer"] = config.gru_initializer
    return cls(name=config.model, **kwargs)


def compile_model(model, config):
    """RMSprop wrapped in two-stage clipping of the global-batch gradient."""
    from cram_keras.training.clipping import TwoStageClipOptimizer

    model.compile(
        optimizer=TwoStageClipOptimizer(
            keras.optimizers.RMSprop(
                learning_rate=config.learning_rate,
                rho=config.rho,
                epsilon=config.epsilon,
            ),
            clip_value=config.clip_value,
            clip_norm=config.clip_norm,
        ),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=sequence_metrics(),
        jit_compile=jit_compile_for_backend(config.jit_compile),
    )
    return model


def export_model(model, path, image_shape):
    """SavedModel: ``serve(images)`` -> per-step class probabilities (B, T, 10)."""
    from cram_keras.training.export import InputSpec, export_saved_model

    def serve(images):
        return keras.ops.softmax(model(images, training=False), axis=-1)

    return export_saved_model(
        path, serve, [InputSpec("images", tuple(image_shape), "unit")], model
    )


def batches(images, labels, batch_size, seed=None, epoch=None):
    """Batched ``(float32 images, int32 labels)``: a tf.data pipeline on
    TensorFlow, else a PyDataset; shuffled in the order of ``epoch`` when
    ``seed`` is given."""
    if keras.backend.backend() == "tensorflow":
        return sequence_dataset(images, labels, batch_size, seed, epoch)
    return array_batches((images, labels.astype("int32")), batch_size, seed, epoch)


class RNNSPNExperiment(Experiment):
    name = "rnn_spn"
    Config = Config
    title = (
        "Train and evaluate RNN-SPN, FFN-SPN or the CNN on cluttered MNIST "
        "sequences (Sønderby et al. 2015, Table 1)."
    )
    examples = """Examples:
    python train_rnn_spn.py --model rnn_spn --downsample 2          # paper setting
    python train_rnn_spn.py --data-dir MNIST_DIR --epochs 3
    python train_rnn_spn.py --smoke                                 # seconds, offline
    python train_rnn_spn.py --set gru_initializer=keras --epochs 6"""
    backends = ("tensorflow", "jax")
    monitor = "val_digit_accuracy"
    monitor_mode = "max"
    smoke_overrides = SMOKE
    speed_key = "train_sequences_per_second"

    name_fields = ("model", "downsample", "seed")

    def run_name(self, config):
        d = f"_d{config.downsample:g}" if config.model != "conv" else ""
        return f"{config.model}{d}_seed{config.seed}"

    def load_data(self, run):
        splits, source = load_splits(run.config, bundled=run.smoke)
        return _Data(splits, source)

    def check_inputs(self, run):
        check_batch_size(
            run.config.batch_size,
            len(run.data.splits["train"][0]),
            "training sequences",
            "Lower --batch-size or raise --n-train.",
        )

    def dataset(self, run, split, epoch=None):
        """The batches of ``split``; the training split shuffled in the order
        of ``epoch``."""
        images, labels = run.data.splits[split]
        seed = run.config.seed if split == "train" else None
        return batches(images, labels, run.config.batch_size, seed, epoch)

    def train_dataset(self, run, epoch):
        return self.dataset(run, "train", epoch)

    def valid_dataset(self, run):
        return self.dataset(run, "valid")

    def samples_per_epoch(self, run):
        return len(run.data.splits["train"][0])

    def build_model(self, run):
        model = compile_model(build_model(run.config), run.config)
        model(keras.ops.zeros((1,) + run.data.splits["train"][0].shape[1:]))
        return model

    def example_batch(self, run):
        x, y = run.data.splits["train"]
        return as_float(x[:2]), y[:2].astype("int32")

    def epoch_callbacks(self, run):
        return [DropoutRamp(run.config.dropout_ramp_epochs)]

    def learning_rate(self, run, epoch):
        config = run.config
        return step_decay_after(
            epoch,
            config.learning_rate,
            config.lr_decay_factor,
            config.lr_decay_interval,
            config.lr_no_decay_epochs,
        )

    def evaluate(self, run):
        config = run.config
        results = {}
        for name in ("valid", "test"):
            if name == "test":
                crash_point("evaluate")
            scores = run.evaluate(self.dataset(run, name))
            results[f"{name}_per_digit_error"] = 1.0 - float(scores["digit_accuracy"])
            results[f"{name}_sequence_error"] = 1.0 - float(scores["sequence_accuracy"])
            results[f"{name}_loss"] = float(scores["loss"])
        results.update(
            model=config.model,
            downsample=config.downsample if config.model != "conv" else None,
            parameters=int(run.model.count_params()),
        )
        return results

    def write_outputs(self, run, metrics):
        from cram_keras.visualization import attention_figure

        images, labels = run.data.splits["test"]
        n = min(run.config.figure_examples, len(images))
        if n:
            attention_figure(
                run.model, images[:n], labels[:n], run.path("attention.png")
            )

    def export(self, run, path):
        export_model(run.model, path, run.data.splits["train"][0].shape[1:])


EXPERIMENT = RNNSPNExperiment()
smoke_config = EXPERIMENT.smoke_config
train_and_evaluate = functools.partial(run_experiment, EXPERIMENT)
