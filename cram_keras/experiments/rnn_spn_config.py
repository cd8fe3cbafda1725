"""The settings of an RNN-SPN run (`cram_keras.experiments.rnn_spn`):
`Config`, with the checks of every value (the crops the classifier can
take), and the smoke run's settings. The defaults are the paper setting,
the released code's protocol.
"""

import dataclasses
import math

from cram_keras.experiments.config import (
    check_choices,
    check_fields,
    dtype_policy_option,
    option,
)
from cram_keras.models.rnn_spn import DROPOUT_PLACEMENTS, MODELS
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
