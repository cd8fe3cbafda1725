"""The settings of a CRAM classification run
(`cram_keras.experiments.cram_cls`): `Config`, with the checks of every
value and the settings it resolves from the dataset, and the smoke run's
settings. The defaults are the paper setting: the encoder's sizes are
`CRAMEncoder`'s defaults (12 px glimpses, 512-unit LSTMs), Adam 1e-4, batch
64, early stopping on validation accuracy with patience 20.
"""

import dataclasses

from cram_keras.experiments.config import (
    check_choices,
    check_fields,
    dtype_policy_option,
    option,
    resolve,
)
from cram_keras.utils import check_int, check_int_list, check_number, check_range

DATASETS = ("cluttered60", "cluttered100", "svhn")
CLUES = ("oracle", "saliency", "none")
DEFAULT_BETA = 0.1
# Images in the official SVHN training and test files.
SVHN_SIZES = {"train": 73_257, "test": 26_032}

# Fields that must be integers >= 1.
_POSITIVE = (
    "n_train", "n_valid", "n_test", "glimpses", "glimpse_size", "core_units",
    "context_units", "localization_units", "glimpse_units", "epochs",
    "batch_size", "patience", "saliency_epochs", "saliency_batch_size", "max_trials",
)  # fmt: skip
_LIST_FIELDS = (
    "context_filters",
    "localization_filters",
    "glimpse_filters",
    "decoder_units",
    "saliency_filters",
)


@dataclasses.dataclass(frozen=True)
class Config:
    """Every setting of a CRAM classification run; defaults: the paper setting.

    `None` fields are resolved from the dataset in `__post_init__` (and so
    stored resolved in `config.json`): `clue` (oracle; saliency for SVHN),
    `beta` (0.1; 0 for `clue="none"`), `n_train` (55,000; all SVHN training
    images but the validation ones), `n_test` (10,000; SVHN's 26,032).
    Lists are lists (not tuples) so that `config.json` compares equal.
    """

    # Data.
    dataset: str = option(
        "cluttered60",
        "cluttered60: 60x60 MNIST with 4 clutter pieces of 8x8 (RAM's benchmark); "
        "cluttered100: 100x100 with 8; svhn: SVHN 32x32 digits (TFDS svhn_cropped, "
        "or the official train_32x32.mat / test_32x32.mat in --data-dir)",
        choices=DATASETS,
    )
    clue: str | None = option(
        None,
        "oracle: the digit's ground-truth silhouette; saliency: the mask of a "
        "CNN-DecNN trained on the training split's masks (SVHN: contrast "
        "pseudo-masks), thresholded at 0.5, at training and test time; none: an "
        "all-zero clue and no clue loss (ablation); unset (or null): oracle, "
        "saliency for svhn",
        choices=CLUES + (None,),
    )
    data_dir: str | None = option(
        None,
        "directory with the official files (MNIST IDX .gz files, or SVHN "
        "train_32x32.mat / test_32x32.mat); without it MNIST comes from TFDS when "
        "prepared or reachable, else from the bundled sample",
        metavar="DIR",
    )
    cache_dir: str | None = option(
        None,
        "where generated cluttered sets are cached (none: $CRAM_KERAS_CACHE or "
        "~/.cache/cram_keras)",
        metavar="DIR",
    )
    n_train: int | None = option(
        None, "training images (none: 55,000; SVHN: all but the validation ones)"
    )
    n_valid: int = option(5000, "validation images", flag=False)
    n_test: int | None = option(
        None, "test images (none: 10,000; SVHN: 26,032)", flag=False
    )
    data_seed: int = option(1234, "seed of the image generator", flag=False)
    # Model (CRAMEncoder, CRAMClassifier).
    glimpses: int = option(4, "number of glimpses N")
    glimpse_size: int = option(12, "side of the square glimpse patch in pixels")
    core_units: int = option(512, "units of the core LSTMs", flag=False)
    context_filters: list = option([16, 32, 64], "context CNN filters", flag=False)
    context_units: int = option(256, "context network units", flag=False)
    localization_filters: list = option(
        [8, 16, 32], "localisation CNN filters", flag=False
    )
    localization_units: int = option(256, "localisation network units", flag=False)
    glimpse_filters: list = option([16, 32, 64], "glimpse CNN filters", flag=False)
    glimpse_units: int = option(256, "glimpse network units", flag=False)
    decoder_units: list = option([256, 256], "decoder MLP units", flag=False)
    beta: float | None = option(
        None,
        "weight of the clue loss, >= 0 (none: 0.1; must be 0 or none with --clue none)",
    )
    # Optimisation (paper V-A: Adam, 1e-4).
    epochs: int = option(50, "maximum epochs; with --tune, epochs of every trial")
    batch_size: int = option(64, "global batch size (split over replicas)")
    learning_rate: float = option(1e-4, "Adam learning rate (paper V-A)")
    patience: int = option(20, "early stopping patience (epochs)", flag=False)
    dtype_policy: str = dtype_policy_option()
    seed: int = option(0, "training seed")
    jit_compile: bool = option(
        False,
        "compile the train step with XLA on TensorFlow (slower on CPU for this "
        "model); on JAX the step is always compiled with jax.jit unless run_eagerly",
        flag=False,
    )
    run_eagerly: bool = option(False, "run the train step eagerly", flag=False)
    # Saliency network (clue="saliency").
    saliency_filters: list = option([16, 32, 64], "saliency CNN filters", flag=False)
    saliency_epochs: int = option(10, "saliency network epochs", flag=False)
    saliency_batch_size: int = option(64, "saliency network batch size", flag=False)
    saliency_learning_rate: float = option(
        1e-3, "saliency network Adam rate (Adam's default, paper V-A)", flag=False
    )
    saliency_threshold: float = option(
        0.5, "saliency probability threshold", flag=False
    )
    saliency_model: str | None = option(
        None, "a trained SaliencyNetwork (.keras) that makes the clue", flag=False
    )
    # keras-tuner search (tune=True): glimpses x learning rate.
    tune: bool = option(
        False,
        "keras-tuner random search over the number of glimpses (1-8) and the "
        "learning rate (1e-5 to 1e-3, log scale); --glimpses and --learning-rate "
        "are then searched, not used",
    )
    max_trials: int = option(16, "trials of the --tune search, counting finished ones")
    glimpse_range: list = option([1, 8], "--tune: glimpse counts searched", flag=False)
    learning_rate_range: list = option(
        [1e-5, 1e-3], "--tune: learning rates searched (log scale)", flag=False
    )
    # Outputs.
    figure_examples: int = option(4, "test images in glimpses.png", flag=False)
    export: bool = option(
        False, "also write a SavedModel: serve(images, clue) -> class probabilities"
    )

    def __post_init__(self):
        check_choices(self)
        svhn = self.dataset == "svhn"
        if self.clue is None:
            resolve(self, "clue", "saliency" if svhn else "oracle")
        if svhn and self.clue == "oracle":
            raise ValueError(
                "SVHN has no ground-truth saliency, so there is no oracle clue. "
                "Use clue='saliency' (the default for svhn) or 'none'. "
                f"Received: dataset={self.dataset!r}, clue={self.clue!r}"
            )
        if self.beta is None:
            resolve(self, "beta", 0.0 if self.clue == "none" else DEFAULT_BETA)
        resolve(self, "beta", check_number("beta", self.beta, low=0))  # clue weight
        if self.clue == "none" and self.beta != 0:
            raise ValueError(
                "clue='none' is the ablation without a clue: its clue is all "
                "zeros and it has no clue loss, so `beta` must be 0 (or left "
                f"unset). Received: beta={self.beta!r}"
            )
        check_int("n_valid", self.n_valid, low=1)
        if self.n_train is None:
            resolve(
                self, "n_train", SVHN_SIZES["train"] - self.n_valid if svhn else 55_000
            )
        if self.n_test is None:
            resolve(self, "n_test", SVHN_SIZES["test"] if svhn else 10_000)
        check_fields(self, check_int, _POSITIVE, low=1)
        check_fields(self, check_int, ("seed", "data_seed", "figure_examples"), low=0)
        for name in _LIST_FIELDS:
            resolve(self, name, check_int_list(name, getattr(self, name)))
        for name in ("learning_rate", "saliency_learning_rate"):
            value = check_number(name, getattr(self, name), low=0, low_inclusive=False)
            resolve(self, name, value)
        check_number(
            "saliency_threshold",
            self.saliency_threshold,
            low=0,
            high=1,
            low_inclusive=False,
            high_inclusive=False,
        )
        if self.saliency_model is not None and self.clue != "saliency":
            raise ValueError(
                "`saliency_model` makes the clue, so it needs clue='saliency'. "
                f"Received: clue={self.clue!r}, saliency_model={self.saliency_model!r}"
            )
        if svhn and self.n_train + self.n_valid > SVHN_SIZES["train"]:
            raise ValueError(
                f"SVHN has {SVHN_SIZES['train']} training images; n_train + "
                f"n_valid must not exceed it (the validation images are the last "
                f"n_valid). Received: n_train={self.n_train}, n_valid={self.n_valid}"
            )
        if svhn and self.n_test > SVHN_SIZES["test"]:
            raise ValueError(
                f"SVHN has {SVHN_SIZES['test']} test images. "
                f"Received: n_test={self.n_test}"
            )
        resolve(
            self,
            "glimpse_range",
            check_range("glimpse_range", self.glimpse_range, low=1, integer=True),
        )
        resolve(
            self,
            "learning_rate_range",
            check_range(
                "learning_rate_range",
                self.learning_rate_range,
                low=0,
                low_inclusive=False,
            ),
        )
        if self.run_eagerly and self.jit_compile:
            raise ValueError(
                "`run_eagerly` and `jit_compile` exclude each other. "
                f"Received: run_eagerly={self.run_eagerly}, jit_compile={self.jit_compile}"
            )


# The smoke run: a tiny CRAM (2 glimpses, 16-unit core, one-layer CNNs), run
# eagerly on TensorFlow (no tracing: faster than a compiled step for a few
# batches; on JAX the step is compiled: `CRAMClassificationExperiment.smoke_config`).
SMOKE = dict(
    n_train=32, n_valid=16, n_test=16, glimpses=2, glimpse_size=8, core_units=16,
    context_filters=[4], context_units=8, localization_filters=[4],
    localization_units=8, glimpse_filters=[4], glimpse_units=8,
    decoder_units=[16, 16], epochs=2, batch_size=16, learning_rate=1e-3,
    patience=5, run_eagerly=True, saliency_filters=[4, 8], saliency_epochs=2,
    saliency_batch_size=16, max_trials=2, figure_examples=2,
)  # fmt: skip
