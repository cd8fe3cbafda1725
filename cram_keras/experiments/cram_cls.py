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
from cram_keras.experiments.config import config_to_dict
from cram_keras.experiments.cram_cls_config import SMOKE, Config
from cram_keras.experiments.errors import UsageError
from cram_keras.experiments.experiment import (
    SPLIT_NAMES,
    Experiment,
    check_batch_size,
    check_batches_for_replicas,
    check_one_worker_search,
    data_settings,
    jit_compile_for_backend,
)
from cram_keras.experiments.runner import run_experiment
from cram_keras.experiments.saliency import prepare_clues
from cram_keras.models.cram import CRAMClassifier, CRAMEncoder
from cram_keras.training.checkpoint import crash_point
from cram_keras.training.optimizers import FusedAdam

NUM_CLASSES = 10
# The published anchors printed beside ours (see above).
ANCHORS = {
    "ram_8_glimpses_cluttered60": 0.0404,
    "ram_convnet_cluttered60": 0.0809,
    "stn_st_cnn_cluttered60": 0.017,
}

# === Data ===


def load_splits(config, bundled=False):
    """`({split: {"images", "labels", "saliency", "boxes"}}, DataSource)`
    of `config` (`cram_keras.data.classification`)."""
    return load_classification_splits(config.dataset, **data_settings(config, bundled))


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
        optimizer=FusedAdam(learning_rate or config.learning_rate),
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

    def smoke_config(self, **overrides):
        # The smoke run's step is eager on TensorFlow (for a few batches,
        # tracing costs more); on JAX an eager step compiles every op on its
        # own, which costs more than compiling the whole step once.
        if keras.backend.backend() == "jax":
            overrides.setdefault("run_eagerly", False)
        return super().smoke_config(**overrides)

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
        check_batches_for_replicas(
            run.distribution,
            [
                (f"{name} images", len(run.data.splits[split]["images"]),
                 run.config.batch_size, "--batch-size", False)
                for split, name in SPLIT_NAMES
            ],
        )  # fmt: skip
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
