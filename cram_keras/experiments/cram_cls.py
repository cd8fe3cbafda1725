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

import keras
import numpy as np

from cram_keras.data.pipelines import as_float, clue_batch
from cram_keras.data.pipelines import clue_dataset as make_dataset
from cram_keras.evaluation.glimpses import glimpse_statistics
from cram_keras.experiments.config import (
    DTYPE_POLICIES,
    config_to_dict,
    dtype_policy_option,
    option,
)
from cram_keras.experiments.runner import (
    Experiment,
    UsageError,
    check_batch_size,
    jit_compile_for_backend,
)
from cram_keras.experiments.saliency import prepare_clues
from cram_keras.models.cram import CRAMClassifier, CRAMEncoder
from cram_keras.utils import (
    check_choice,
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
        def resolve(name, value):
            object.__setattr__(self, name, value)

        check_choice("dataset", self.dataset, DATASETS)
        svhn = self.dataset == "svhn"
        if self.clue is None:
            resolve("clue", "saliency" if svhn else "oracle")
        check_choice("clue", self.clue, CLUES)
        check_choice("dtype_policy", self.dtype_policy, DTYPE_POLICIES)
        if svhn and self.clue == "oracle":
            raise ValueError(
                "SVHN has no ground-truth saliency, so there is no oracle clue. "
                "Use clue='saliency' (the default for svhn) or 'none'. "
                f"Received: dataset={self.dataset!r}, clue={self.clue!r}"
            )
        if self.beta is None:
            resolve("beta", 0.0 if self.clue == "none" else DEFAULT_BETA)
        resolve("beta", check_number("beta", self.beta, low=0))  # clue-loss weight
        if self.clue == "none" and self.beta != 0:
            raise ValueError(
                "clue='none' is the ablation without a clue: its clue is all "
                "zeros and it has no clue loss, so `beta` must be 0 (or left "
                f"unset). Received: beta={self.beta!r}"
            )
        check_int("n_valid", self.n_valid, low=1)
        if self.n_train is None:
            resolve("n_train", SVHN_SIZES["train"] - self.n_valid if svhn else 55_000)
        if self.n_test is None:
            resolve("n_test", SVHN_SIZES["test"] if svhn else 10_000)
        for name in (
            "n_train",
            "n_valid",
            "n_test",
            "glimpses",
            "glimpse_size",
            "core_units",
            "context_units",
            "localization_units",
            "glimpse_units",
            "epochs",
            "batch_size",
            "patience",
            "saliency_epochs",
            "saliency_batch_size",
            "max_trials",
        ):
            check_int(name, getattr(self, name), low=1)
        for name in ("seed", "data_seed", "figure_examples"):
            check_int(name, getattr(self, name), low=0)
        for name in _LIST_FIELDS:
            resolve(name, check_int_list(name, getattr(self, name)))
        for name in ("learning_rate", "saliency_learning_rate"):
            value = check_number(name, getattr(self, name), low=0, low_inclusive=False)
            resolve(name, value)
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
            "glimpse_range",
            check_range("glimpse_range", self.glimpse_range, low=1, integer=True),
        )
        resolve(
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


SMOKE = dict(
    n_train=32, n_valid=16, n_test=16, glimpses=2, glimpse_size=8, core_units=16,
    context_filters=[4], context_units=8, localization_filters=[4],
    localization_units=8, glimpse_filters=[4], glimpse_units=8,
    decoder_units=[16, 16], epochs=2, batch_size=16, learning_rate=1e-3,
    patience=5, run_eagerly=True, saliency_filters=[4, 8], saliency_epochs=2,
    saliency_batch_size=16, max_trials=2, figure_examples=2,
)  # fmt: skip


def smoke_config(**overrides):
    """Seconds-long end-to-end run on a tiny generated set (used by the tests):
    a tiny CRAM (2 glimpses, 16-unit core, one-layer CNNs), run eagerly (no
    tracing: faster than a compiled step for a few batches)."""
    return EXPERIMENT.smoke_config(**overrides)


# === Data ===


def load_splits(config, bundled=False):
    """`({split: {"images", "labels", "saliency", "boxes"}}, DataSource)`,
    uint8 NHWC images.

    `saliency` (ground-truth masks, uint8 {0, 1}) and `boxes` are `None` for
    SVHN. ``bundled``: the cluttered sets are generated from the bundled
    MNIST sample when no --data-dir is given (the smoke runs).
    """
    if config.dataset == "svhn":
        from cram_keras.data.sources import load_svhn_labelled

        data, source = load_svhn_labelled(config.data_dir)
        x_train, y_train = data["train"]
        x_test, y_test = data["test"]
        valid = slice(len(x_train) - config.n_valid, len(x_train))
        splits = {
            "train": (x_train[: config.n_train], y_train[: config.n_train]),
            "valid": (x_train[valid], y_train[valid]),
            "test": (x_test[: config.n_test], y_test[: config.n_test]),
        }
        return {
            split: {"images": x, "labels": y, "saliency": None, "boxes": None}
            for split, (x, y) in splits.items()
        }, source
    from cram_keras.data.translated import load_cluttered_translated

    data, source = load_cluttered_translated(
        config.data_dir,
        preset=config.dataset,
        cache_dir=config.cache_dir,
        seed=config.data_seed,
        n_train=config.n_train,
        n_valid=config.n_valid,
        n_test=config.n_test,
        dtype="uint8",
        bundled=bundled,
        return_source=True,
    )
    return {
        split: {
            "images": data[split].images,
            "labels": data[split].labels,
            "saliency": data[split].saliency,
            "boxes": data[split].boxes,
        }
        for split in ("train", "valid", "test")
    }, source


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


# === Training ===


def _evaluate(model, datasets, run=None):
    from cram_keras.training.checkpoint import crash_point

    results = {}
    for name, ds in datasets.items():
        if name == "test":
            crash_point("evaluate")
        scores = (
            run.evaluate(model, ds)
            if run is not None
            else model.evaluate(ds, return_dict=True, verbose=0)
        )
        results[f"{name}_error"] = 1.0 - float(scores["accuracy"])
        results[f"{name}_loss"] = float(scores["loss"])
        if "clue_loss" in scores:
            results[f"{name}_clue_loss"] = float(scores["clue_loss"])
    return results


def _clue_batch_arrays(batch):
    images, clues, labels = batch
    return (as_float(images), clues.astype("float32")), labels


class _Data:
    def __init__(self, splits, source):
        self.splits = splits
        self.source = source
        self.clues = None
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

    def load_data(self, config, log, smoke=False):
        splits, source = load_splits(config, bundled=smoke)
        return _Data(splits, source)

    def check_inputs(self, config, data):
        check_batch_size(
            config.batch_size,
            len(data.splits["train"]["images"]),
            "training images",
            "Lower --batch-size or raise --n-train.",
        )
        if config.tune and keras.backend.backend() != "tensorflow":
            raise UsageError(
                "--tune runs keras-tuner, which this project drives on TensorFlow "
                f"only. Received: KERAS_BACKEND={keras.backend.backend()!r}."
            )

    def prepare(self, run, data):
        # With several workers the chief makes the clues (for clue="saliency"
        # it trains the saliency network into the run directory); the others
        # wait for it and read what it wrote.
        if run.is_chief:
            data.clues, data.saliency_info = prepare_clues(
                run.config, data.splits, run.directory
            )
        run.distribution.barrier()
        if not run.is_chief:
            data.clues, data.saliency_info = prepare_clues(
                run.config, data.splits, run.directory
            )

    def _dataset(self, config, data, split, epoch=None, shuffle=False):
        if keras.backend.backend() == "tensorflow":
            return make_dataset(
                data.splits[split]["images"],
                data.clues[split],
                data.splits[split]["labels"],
                config.batch_size,
                config.seed if shuffle else None,
                epoch,
            )
        from cram_keras.data.pipelines import array_batches

        images = data.splits[split]["images"]
        clues = data.clues[split]
        if clues is None:
            clues = np.zeros(images.shape[:-1] + (1,), "uint8")
        return array_batches(
            (images, clues, data.splits[split]["labels"]),
            config.batch_size,
            config.seed if shuffle else None,
            epoch,
            convert=_clue_batch_arrays,
        )

    def train_dataset(self, config, data, epoch):
        return self._dataset(config, data, "train", epoch, shuffle=True)

    def valid_dataset(self, config, data):
        return self._dataset(config, data, "valid")

    def samples_per_epoch(self, config, data):
        return len(data.splits["train"]["images"])

    def _example(self, data):
        x = data.splits["train"]["images"]
        return [as_float(x[:2]), clue_batch(data.clues["train"], x, slice(0, 2))]

    def build_model(self, config, data):
        model = compile_model(build_model(config), config)
        model(self._example(data))
        return model

    def example_batch(self, config, data):
        return self._example(data), data.splits["train"]["labels"][:2]

    def custom_training(self, run, data, distribution):
        if not run.config.tune:
            return None
        if distribution.workers > 1:
            raise UsageError(
                "--tune runs keras-tuner's trials one after another in one "
                "process; it does not run under MultiWorkerMirroredStrategy. Run "
                "it on one machine (--strategy default or mirrored)."
            )
        from cram_keras.training.tuner import run_glimpse_search

        config = run.config
        model, best, summary = run_glimpse_search(
            lambda glimpses, rate: compile_model(
                build_model(config, glimpses), config, rate
            ),
            self.train_dataset(config, data, None),
            self.valid_dataset(config, data),
            run.directory,
            example_inputs=self._example(data),
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

    def evaluate(self, model, run, data):
        config = run.config
        results = _evaluate(
            model,
            {
                "valid": self.valid_dataset(config, data),
                "test": self._dataset(config, data, "test"),
            },
            run,
        )
        results.update(data.saliency_info)
        results.update(
            glimpse_statistics(model, data.splits["test"], data.clues["test"]),
            dataset=config.dataset,
            clue=config.clue,
            beta=config.beta,
            num_glimpses=config.glimpses,
            learning_rate=config.learning_rate,
            n_train=len(data.splits["train"]["images"]),
            parameters=int(model.count_params()),
        )
        return results

    def write_outputs(self, model, run, data, metrics):
        config = run.config
        test = data.splits["test"]
        n = min(config.figure_examples, len(test["images"]))
        if n:
            clues = data.clues["test"]
            from cram_keras.visualization import glimpses_figure

            glimpses_figure(
                model,
                test["images"][:n],
                None if clues is None else clues[:n],
                test["labels"][:n],
                run.path("glimpses.png"),
                run.path("glimpses.gif"),
                title=f"CRAM, clue: {config.clue}, data: {_source_label(data.source)}",
            )

    def summarize_log(self, rows):
        return {
            "valid_error_per_epoch": [1.0 - r["val_accuracy"] for r in rows],
            "train_error_per_epoch": [1.0 - r["accuracy"] for r in rows],
        }

    def export(self, model, run, data, path):
        from cram_keras.training.export import export_classifier

        export_classifier(model, path, data.splits["train"]["images"].shape[1:])


def _source_label(source):
    if source is None:
        return "?"
    source = source.to_dict() if hasattr(source, "to_dict") else source
    return f"{source.get('name')} ({source.get('origin')})"


EXPERIMENT = CRAMClassificationExperiment()


def train_and_evaluate(config, output_dir, **kwargs):
    """Trains CRAM with `config.clue` (or runs the glimpse search), evaluates
    the best validation epoch on the test set, and writes the run into
    `output_dir` (see `cram_keras.experiments.runner`): config.json, log.csv,
    tensorboard/, checkpoints/, model.keras, metrics.json, glimpses.png,
    glimpses.gif, saliency/ (clue="saliency"), saved_model/ with `export`;
    with `tune`: tuner/, trials.csv, trials.json and best_config.json.
    Returns the metrics dict."""
    from cram_keras.experiments.runner import run_experiment

    return run_experiment(EXPERIMENT, config, output_dir, **kwargs)
