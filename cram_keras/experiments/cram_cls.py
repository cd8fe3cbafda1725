"""E2: CRAM classification with a clue (Chung & Cho 2018, Sections III-B1,
IV-A and V-A) on cluttered translated MNIST, with the clue ablation and a
keras-tuner search over glimpse counts.

The paper's own classification experiment (Section VI-A) is "work in
progress": it reports no number. We run CRAM on the benchmark of its parent
model RAM and print the published anchors beside ours (docs/design.md, E2):

    RAM, 8 glimpses (Mnih et al. 2014, Table 2)   60x60 cluttered MNIST     4.04 %
    RAM's convolutional baseline (same table)      60x60 cluttered MNIST     8.09 %
    ST-CNN (Jaderberg et al. 2015, Table 1)        60x60 translated+clutter  1.70 %

(The STN number is on its own, similar 60x60 translated-and-cluttered
variant, not on RAM's exact generator.)

Clues (`clue`):

* ``oracle``: the digit's ground-truth silhouette from the generator
  (`cram_keras.data.translated`), 1 on the digit's own pixels.
* ``saliency``: the paper's route. A `SaliencyNetwork` (CNN-DecNN) is trained
  with Adam (default rate 1e-3) on binary cross-entropy, and its
  probabilities thresholded at 0.5 are the clue at training and at test
  time, for every split. The paper pretrains it on MSRA10k, which cannot be
  downloaded offline; here it is trained on the training split's own
  ground-truth masks (its validation split picks the best epoch), so the
  learned clue is a realistic, imperfect stand-in for the oracle. For SVHN,
  which has no masks, it is trained on contrast pseudo-masks
  (`cram_keras.data.saliency_masks.contrast_pseudo_masks`: pixels far from
  the median border colour, the "background prior" of classical saliency
  detection). A network trained
  elsewhere (e.g. on MSRA10k) can be given as `saliency_model`, a `.keras`
  file.
* ``none``: the ablation; an all-zero clue and clue weight 0 (no clue loss).

SVHN (`dataset="svhn"`) always uses the learned saliency (or ``none``): there
is no ground truth. Its validation split is the last `n_valid` training
images.

Paper setting (a GPU; 55k/5k/10k images, Adam 1e-4, batch 64)::

    python train_cls.py --dataset cluttered60 --clue oracle
    python train_cls.py --dataset cluttered60 --clue saliency
    python train_cls.py --dataset cluttered60 --clue none
    python train_cls.py --dataset cluttered100 --clue saliency
    python train_cls.py --dataset svhn                       # learned saliency
    python train_cls.py --tune --max-trials 16 --epochs 10   # glimpses x rate

Model sizes are the encoder's defaults (`CRAMEncoder`: 12 px glimpses,
512-unit LSTMs, 5.9 M parameters with 4 glimpses) and a 3-layer MLP decoder
(256, 256, 10). Test errors are taken at the best validation epoch (early
stopping on validation accuracy, patience 20).

CPU-budget setting: the same architecture on a 20k-image training subset for
a few epochs per clue; the configuration ``configs/cram_cls/budget.py`` holds
the committed command and its wall time, ``benchmarks/results/cram_cls_budget.json``
the results.
"""

import dataclasses
import functools

import keras

from cram_keras.data.classification import load_classification_splits
from cram_keras.data.pipelines import as_float, clue_batch, clue_batches
from cram_keras.evaluation.glimpses import glimpse_statistics
from cram_keras.experiments.config import (
    check_choices,
    check_fields,
    config_to_dict,
    dtype_policy_option,
    option,
    resolve,
)
from cram_keras.experiments.errors import UsageError
from cram_keras.experiments.experiment import (
    Experiment,
    check_batch_size,
    check_one_worker_search,
    jit_compile_for_backend,
)
from cram_keras.experiments.runner import run_experiment
from cram_keras.experiments.saliency import prepare_clues
from cram_keras.models.cram import CRAMClassifier, CRAMEncoder
from cram_keras.training.checkpoint import crash_point
from cram_keras.utils import (
    check_int,
    check_int_list,
    check_number,
    check_range,
)

DATASETS = ("cluttered60", "cluttered100", "svhn")
CLUES = ("oracle", "saliency", "none")
NUM_CLASSES = 10
DEFAULT_BETA = 0.1
# Images in the official SVHN training and test files.
SVHN_SIZES = {"train": 73_257, "test": 26_032}
ANCHORS = {
    "ram_8_glimpses_cluttered60": 0.0404,
    "ram_convnet_cluttered60": 0.0809,
    "stn_st_cnn_cluttered60": 0.017,
}

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
        "all-zero clue and no clue loss (ablation); none means oracle, saliency "
        "for svhn",
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
# eagerly (no tracing: faster than a compiled step for a few batches).
SMOKE = dict(
    n_train=32, n_valid=16, n_test=16, glimpses=2, glimpse_size=8, core_units=16,
    context_filters=[4], context_units=8, localization_filters=[4],
    localization_units=8, glimpse_filters=[4], glimpse_units=8,
    decoder_units=[16, 16], epochs=2, batch_size=16, learning_rate=1e-3,
    patience=5, run_eagerly=True, saliency_filters=[4, 8], saliency_epochs=2,
    saliency_batch_size=16, max_trials=2, figure_examples=2,
)  # fmt: skip


# === Data ===


def load_splits(config, bundled=False):
    """`({split: {"images", "labels", "saliency", "boxes"}}, DataSource)`
    of `config` (`cram_keras.data.classification`)."""
    return load_classification_splits(
        config.dataset,
        config.data_dir,
        n_train=config.n_train,
        n_valid=config.n_valid,
        n_test=config.n_test,
        cache_dir=config.cache_dir,
        seed=config.data_seed,
        bundled=bundled,
    )


# === Model ===


def build_model(config, num_glimpses=None):
    """`CRAMClassifier` for `config` (`num_glimpses` overrides `config.glimpses`)."""
    encoder = CRAMEncoder(
        num_glimpses=num_glimpses or config.glimpses,
        glimpse_size=config.glimpse_size,
        core_units=config.core_units,
        context_filters=config.context_filters,
        context_units=config.context_units,
        localization_filters=config.localization_filters,
        localization_units=config.localization_units,
        glimpse_filters=config.glimpse_filters,
        glimpse_units=config.glimpse_units,
        name="encoder",
    )
    return CRAMClassifier(
        encoder,
        num_classes=NUM_CLASSES,
        decoder_units=config.decoder_units,
        clue_weight=config.beta,
        name="cram",
    )


def compile_model(model, config, learning_rate=None):
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate or config.learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
        jit_compile=jit_compile_for_backend(config.jit_compile, config.run_eagerly),
        run_eagerly=config.run_eagerly,
    )
    return model


# === The experiment ===


class _Data:
    def __init__(self, splits, source):
        self.splits = splits
        self.source = source
        self.clues = None  # {split: uint8 clues, or None}: `prepare`
        self.saliency_info = {}


class CRAMClassificationExperiment(Experiment):
    name = "cram_cls"
    Config = Config
    title = (
        "Train and evaluate CRAM classification with a clue (Chung & Cho 2018, "
        "Sections III-B1, IV-A, V-A) on cluttered translated MNIST or SVHN, "
        "with the clue ablation and a keras-tuner search over glimpse counts."
    )
    examples = """Examples:
    python train_cls.py --dataset cluttered60 --clue oracle
    python train_cls.py --dataset cluttered60 --clue saliency
    python train_cls.py --dataset cluttered60 --clue none      # ablation
    python train_cls.py --tune --max-trials 16 --epochs 10     # glimpses x rate
    python train_cls.py --smoke                                # seconds, offline"""
    backends = ("tensorflow", "jax")
    monitor = "val_accuracy"
    monitor_mode = "max"
    smoke_overrides = SMOKE

    name_fields = ("dataset", "clue", "glimpses", "seed", "tune")

    def run_name(self, config):
        name = f"{config.dataset}_{config.clue}_g{config.glimpses}_seed{config.seed}"
        return name + ("_tune" if config.tune else "")

    def load_data(self, run):
        return _Data(*load_splits(run.config, bundled=run.smoke))

    def check_inputs(self, run):
        check_batch_size(
            run.config.batch_size,
            len(run.data.splits["train"]["images"]),
            "training images",
            "Lower --batch-size or raise --n-train.",
        )
        if run.config.tune and keras.backend.backend() != "tensorflow":
            raise UsageError(
                "--tune runs keras-tuner, which this project drives on TensorFlow "
                f"only. Received: KERAS_BACKEND={keras.backend.backend()!r}."
            )

    def prepare(self, run):
        # With several workers the chief makes the clues (for clue="saliency"
        # it trains the saliency network into the run directory); the others
        # read what it wrote.
        data = run.data
        data.clues, data.saliency_info = run.distribution.chief_first(
            lambda: prepare_clues(run.config, data.splits, run.directory)
        )

    def dataset(self, run, split, epoch=None):
        """The batches of ``split``; the training split shuffled in the order
        of ``epoch``."""
        seed = run.config.seed if split == "train" else None
        images, labels = (run.data.splits[split][k] for k in ("images", "labels"))
        clues = run.data.clues[split]
        return clue_batches(images, clues, labels, run.config.batch_size, seed, epoch)

    def train_dataset(self, run, epoch):
        return self.dataset(run, "train", epoch)

    def valid_dataset(self, run):
        return self.dataset(run, "valid")

    def samples_per_epoch(self, run):
        return len(run.data.splits["train"]["images"])

    def _example(self, data):
        x = data.splits["train"]["images"]
        return [as_float(x[:2]), clue_batch(data.clues["train"], x, slice(0, 2))]

    def build_model(self, run):
        model = compile_model(build_model(run.config), run.config)
        model(self._example(run.data))
        return model

    def example_batch(self, run):
        return self._example(run.data), run.data.splits["train"]["labels"][:2]

    def custom_training(self, run):
        if not run.config.tune:
            return None
        check_one_worker_search(run.distribution)
        from cram_keras.training.tuner import run_glimpse_search

        config = run.config
        model, best, summary = run_glimpse_search(
            lambda glimpses, rate: compile_model(
                build_model(config, glimpses), config, rate
            ),
            self.train_dataset(run, None),
            self.valid_dataset(run),
            run.directory,
            example_inputs=self._example(run.data),
            glimpse_range=config.glimpse_range,
            learning_rate_range=config.learning_rate_range,
            max_trials=config.max_trials,
            seed=config.seed,
            epochs=config.epochs,
            best_config=lambda best: config_to_dict(
                dataclasses.replace(
                    config,
                    glimpses=best["num_glimpses"],
                    learning_rate=best["learning_rate"],
                    tune=False,
                )
            ),
        )
        summary.update(
            num_glimpses=best["num_glimpses"], learning_rate=best["learning_rate"]
        )
        return model, summary

    def evaluate(self, run):
        config, data = run.config, run.data
        results = {}
        for name in ("valid", "test"):
            if name == "test":
                crash_point("evaluate")
            scores = run.evaluate(self.dataset(run, name))
            results[f"{name}_error"] = 1.0 - scores["accuracy"]
            results[f"{name}_loss"] = scores["loss"]
            if "clue_loss" in scores:
                results[f"{name}_clue_loss"] = scores["clue_loss"]
        results.update(data.saliency_info)
        results.update(
            glimpse_statistics(run.model, data.splits["test"], data.clues["test"]),
            dataset=config.dataset,
            clue=config.clue,
            beta=config.beta,
            num_glimpses=config.glimpses,
            learning_rate=config.learning_rate,
            n_train=len(data.splits["train"]["images"]),
            parameters=int(run.model.count_params()),
        )
        return results

    def write_outputs(self, run, metrics):
        from cram_keras.visualization import glimpses_figure

        config, test, clues = run.config, run.data.splits["test"], run.data.clues
        n = min(config.figure_examples, len(test["images"]))
        if n:
            glimpses_figure(
                run.model,
                test["images"][:n],
                None if clues["test"] is None else clues["test"][:n],
                test["labels"][:n],
                run.path("glimpses.png"),
                run.path("glimpses.gif"),
                title=f"CRAM, clue: {config.clue}, data: "
                f"{_source_label(run.data.source)}",
            )

    def summarize_log(self, rows):
        return {
            "valid_error_per_epoch": [1.0 - r["val_accuracy"] for r in rows],
            "train_error_per_epoch": [1.0 - r["accuracy"] for r in rows],
        }

    def export(self, run, path):
        from cram_keras.training.export import export_classifier

        image_shape = run.data.splits["train"]["images"].shape[1:]
        export_classifier(run.model, path, image_shape)


def _source_label(source):
    if source is None:
        return "?"
    source = source.to_dict() if hasattr(source, "to_dict") else source
    return f"{source.get('name')} ({source.get('origin')})"


EXPERIMENT = CRAMClassificationExperiment()
smoke_config = EXPERIMENT.smoke_config
train_and_evaluate = functools.partial(run_experiment, EXPERIMENT)
