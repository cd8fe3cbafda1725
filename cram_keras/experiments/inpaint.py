"""E3: CRAM inpainting on SVHN with a centred 8x8 hole (Chung & Cho 2018,
Sections III-B2, IV-B, V-B, VI-B and Fig. 7), measured against OpenCV
Telea, OpenCV Navier-Stokes, mean fill and the same generator and
discriminators trained with a no-attention CNN encoder.

Paper setting (a GPU; SVHN from TFDS ``svhn_cropped``, 73,257 / 26,032)::

    python train_inpaint.py --epochs 50                  # CRAM
    python train_inpaint.py --epochs 50 --encoder cnn    # no-attention baseline

The settings and their defaults (the sizes, the optimisers, the loss
weights, the batch-norm recalibration) are ``Config``'s, in
`cram_keras.experiments.inpaint_config`; this module holds the hooks.

CPU-budget setting: the same architecture on ``mnist32`` and on the real
1,083-image SVHN subset, 8 to 14 minutes per model on 2 shared cores: the
configurations ``configs/inpaint/*.py`` hold the committed commands and wall
times, ``benchmarks/results/inpaint_*.json`` the results.

All methods are scored by ``cram_keras.evaluation.baselines.evaluate_inpainting``
on the same test images and masks (the centred hole, or random rectangles
drawn once from ``test_mask_seed``). The per-epoch validation numbers in
``log.csv`` and TensorBoard are computed with the batch-norm statistics the
final scoring uses (recalibrated on the same training batches before every
validation pass). By default the final-epoch model is scored and the
validation images are the first ``monitor_examples`` test images, so the
last epoch's logged validation PSNR is the final score on those images; they
select nothing. With ``patience`` (--patience) the last ``valid_fraction``
of the training images are held out instead, their hole PSNR stops the run
after ``patience`` epochs without improvement, and the best epoch's weights
are scored.
"""

import functools
import os

import keras
import numpy as np

from cram_keras.data.inpainting import (
    check_inpainting_images,
    dataset_label,
    evaluation_masks,
    load_images,
    mask_settings,
)
from cram_keras.data.pipelines import inpainting_eval_dataset as eval_dataset
from cram_keras.data.pipelines import inpainting_train_dataset
from cram_keras.evaluation.baselines import evaluate_inpainting
from cram_keras.evaluation.inpainting import complete, score_inpainter
from cram_keras.experiments.experiment import (
    Experiment,
    check_batch_size,
    check_batches_for_replicas,
    jit_compile_for_backend,
)
from cram_keras.experiments.inpaint_config import SMOKE, Config
from cram_keras.experiments.inpaint_eval import evaluate_checkpoint
from cram_keras.experiments.runner import run_experiment
from cram_keras.experiments.search import held_out, search_runs
from cram_keras.models.inpainting.sizes import build_inpainter
from cram_keras.training.callbacks import (
    BeforeValidation,
    InpaintingFigures,
    tensorboard_installed,
)
from cram_keras.training.checkpoint import crash_point
from cram_keras.training.optimizers import FusedAdam
from cram_keras.training.workarounds import python_scalar

# === Data ===


def train_dataset(config, x_train, epoch=None):
    """Shuffled, batched (image, mask) pairs; full batches only (batch norm).
    See `cram_keras.data.pipelines.inpainting_train_dataset` (`epoch`: the
    order of that one epoch, independent of what ran before)."""
    return inpainting_train_dataset(
        x_train,
        config.batch_size,
        seed=config.seed,
        augment=config.augment,
        epoch=epoch,
        **mask_settings(config),
    )


# === Model ===


def build_model(config, image_shape, steps_per_epoch):
    """The inpainter of `config` for images of `image_shape` (H, W, C),
    built (`cram_keras.models.inpainting.sizes`); its adversarial loss
    switches on after `warmup_steps`, else after `warmup_epochs` epochs of
    `steps_per_epoch` steps."""
    warmup = config.warmup_steps
    if warmup is None:
        warmup = int(round(config.warmup_epochs * steps_per_epoch))
    return build_inpainter(config, image_shape, warmup)


def compile_model(model, config):
    def adam(rate):
        return FusedAdam(learning_rate=rate, beta_1=config.adam_beta_1)

    model.compile(
        g_optimizer=adam(config.learning_rate),
        local_d_optimizer=adam(config.d_learning_rate),
        global_d_optimizer=adam(config.d_learning_rate),
        jit_compile=jit_compile_for_backend(config.jit_compile),
    )
    return model


# === The experiment ===


class _Data:
    """A run's images: training, test and the test holes; the validation
    images and their holes where some training images are held out
    (--patience, a --tune trial), else `None`."""

    def __init__(self, x_train, x_test, masks, source):
        self.x_train, self.x_test, self.masks, self.source = (
            x_train,
            x_test,
            masks,
            source,
        )
        self.x_valid = self.valid_masks = None


def _source_label(source):
    source = source.to_dict() if hasattr(source, "to_dict") else (source or {})
    label = source.get("name") or "?"
    if source.get("origin") == "bundled":
        label += f" (bundled sample, {source.get('n_train')}/{source.get('n_test')})"
    return label


class InpaintingExperiment(Experiment):
    name = "inpaint"
    Config = Config
    title = (
        "Train and evaluate CRAM inpainting (Chung & Cho 2018, Sections III-B2, "
        "IV-B, V-B, VI-B; Fig. 7): SVHN 32x32 with a centred 8x8 hole, scored "
        "against OpenCV Telea / Navier-Stokes, mean fill and (with --encoder cnn) "
        "the same GAN with a no-attention encoder."
    )
    examples = """Examples:
    python train_inpaint.py --epochs 50                    # the paper's SVHN run
    python train_inpaint.py --epochs 50 --encoder cnn      # no-attention baseline
    python train_inpaint.py --dataset mnist32 --data-dir MNIST_DIR --epochs 3
    python train_inpaint.py --dataset npz:svhn_subset.npz --data-dir DIR --mask random
    python train_inpaint.py --tune --max-trials 16 --epochs 10   # glimpses x rate x window
    python train_inpaint.py --epochs 1000 --patience 30    # until validation stops improving
    python train_inpaint.py --smoke                        # seconds, offline
    python train_inpaint.py --eval-only runs/inpaint/RUN/model.keras

The run directory gets config.json, log.csv, metrics.json (the model and the
classical baselines on the same test images and masks), figures/ (one Fig. 7
figure per epoch), inpaint.png, tensorboard/, checkpoints/, model.keras, and
with --export a SavedModel. Rerunning the same command resumes a run."""
    backends = ("tensorflow", "jax")  # CRAMInpainter.train_step's backends
    monitor_mode = "max"
    smoke_overrides = SMOKE
    speed_key = "train_images_per_second"

    def monitor_for(self, config):
        # Early stopping and the best weights (--patience) follow the hole
        # PSNR of the held-out training images; else the last epoch is scored.
        return "val_hole_psnr" if config.patience is not None else None

    def add_arguments(self, parser):
        parser.add_argument(
            "--eval-only",
            metavar="CHECKPOINT",
            default=None,
            help="do not train: score CHECKPOINT (a model.keras, or a run "
            "directory) and the classical baselines on --dataset's test set with "
            "--mask; eval_metrics.json goes to --output-dir (default: the "
            "checkpoint's folder)",
        )

    def run_without_training(self, args, config):
        if not args.eval_only:
            return None
        output_dir = args.output_dir or (
            args.eval_only
            if os.path.isdir(args.eval_only)
            else os.path.dirname(os.path.abspath(args.eval_only))
        )
        evaluate_checkpoint(config, args.eval_only, output_dir, bundled=args.smoke)
        return 0

    name_fields = ("dataset", "encoder", "mask", "seed")

    def run_name(self, config):
        return (
            f"{dataset_label(config.dataset)}_{config.encoder}_{config.mask}"
            f"_seed{config.seed}"
        )

    def load_data(self, run):
        config = run.config
        x_train, x_test, source = load_images(
            config, bundled=run.smoke, return_source=True
        )
        if config.tune:  # The search's validation images are not trained on.
            x_train, _ = held_out(x_train, config.tune_valid_fraction)
        masks = evaluation_masks(config, len(x_test), x_test.shape[1])
        data = _Data(x_train, x_test, masks, source)
        if config.patience is not None:
            hold_out_validation(
                data, config, config.valid_fraction, "--patience", "valid_fraction"
            )
        return data

    def check_inputs(self, run):
        check_inpainting_images(run.config.dataset, run.data.x_test)
        check_batch_size(
            run.config.batch_size,
            len(run.data.x_train),
            "training images",
            "Training uses full batches only (batch norm); lower --batch-size.",
        )
        config, data = run.config, run.data
        monitored = data.x_test if data.x_valid is None else data.x_valid
        scored = [("test images", len(data.x_test))]
        if data.x_valid is not None:
            scored.append(("held-out validation images", len(data.x_valid)))
        scored.append(
            ("monitored images", min(config.monitor_examples, len(monitored)))
        )
        check_batches_for_replicas(
            run.distribution,
            [("training images", len(data.x_train), config.batch_size,
              "--batch-size", True)]
            + [(what, n, config.eval_batch_size, "--set eval_batch_size", False)
               for what, n in scored],
        )  # fmt: skip

    def steps_per_epoch(self, run):
        return len(run.data.x_train) // run.config.batch_size

    def train_dataset(self, run, epoch):
        return train_dataset(run.config, run.data.x_train, epoch)

    def valid_dataset(self, run):
        # The held-out training images where there are some (they select the
        # best epoch), else the first test images (they select nothing).
        config, data = run.config, run.data
        if data.x_valid is not None:
            images, masks = data.x_valid, data.valid_masks
        else:
            images, masks = data.x_test, data.masks
        n = min(config.monitor_examples, len(images))
        return eval_dataset(images[:n], masks[:n], config.eval_batch_size)

    def samples_per_epoch(self, run):
        return self.steps_per_epoch(run) * run.config.batch_size

    def build_model(self, run):
        image_shape = run.data.x_test.shape[1:]
        model = build_model(run.config, image_shape, self.steps_per_epoch(run))
        return compile_model(model, run.config)

    def epoch_callbacks(self, run):
        # Every worker recalibrates (the statistics are part of the weights
        # each one keeps); only the chief draws.
        callbacks = [BeforeValidation(lambda model: _recalibrate(model, run))]
        if not run.is_chief:
            return callbacks
        data = run.data
        n = min(run.config.figure_examples, len(data.x_test))
        return callbacks + [
            InpaintingFigures(
                data.x_test[:n],
                data.masks[:n],
                run.path("figures"),
                run.path("tensorboard") if tensorboard_installed() else None,
                note=f" ({validation_statistics(run.config)})",
            )
        ]

    def custom_training(self, run):
        if not run.config.tune:
            return None
        config = run.config
        ranges = {
            "glimpses": config.glimpse_range,
            "learning_rate": config.learning_rate_range,
            "min_scale": config.min_scale_range,
        }
        return search_runs(
            run, _TRIAL, ranges, SEARCH_OBJECTIVE, log_scale=("learning_rate",)
        )

    def after_training(self, run):
        _recalibrate(run.model, run)

    def evaluate(self, run):
        config, data, model = run.config, run.data, run.model
        crash_point("evaluate")
        scores = score_inpainter(
            model, data.x_test, data.masks, config.method, config.eval_batch_size
        )
        optimizers = {
            "generator": model.g_optimizer,
            "local_discriminator": model.local_d_optimizer,
            "global_discriminator": model.global_d_optimizer,
        }
        return {
            "methods": scores["methods"],
            "method": config.method,
            "dataset": config.dataset,
            "mask": config.mask,
            "n_train": int(len(data.x_train)),
            "n_test": int(len(data.x_test)),
            "steps": {
                name: int(python_scalar(optimizer.iterations))
                for name, optimizer in optimizers.items()
            },
            "warmup_steps": model.warmup_steps,
            # The per-epoch validation metrics in log.csv / TensorBoard use
            # the same statistics as these scores.
            "batch_norm_statistics": validation_statistics(config),
            "pathway_diagnostics": scores["pathway_diagnostics"],
            "n_valid": None if data.x_valid is None else int(len(data.x_valid)),
            "parameters": {
                name: int(sum(np.prod(v.shape) for v in getattr(model, name).weights))
                for name in (
                    "encoder",
                    "generator",
                    "local_discriminator",
                    "global_discriminator",
                )
            },
        }

    def write_outputs(self, run, metrics):
        from cram_keras.visualization import glimpse_windows_figure, inpainting_figure

        config, data, model = run.config, run.data, run.model
        n = min(config.figure_examples, len(data.x_test))
        inpainting_figure(
            model,
            data.x_test[:n],
            data.masks[:n],
            run.path("inpaint.png"),
            title=f"{config.method} on {_source_label(data.source)}",
        )
        if metrics.get("pathway_diagnostics"):
            _, taus = model.infer(data.x_test[:n], data.masks[:n])

            stats = metrics["pathway_diagnostics"]["windows"]
            glimpse_windows_figure(
                data.x_test[:n],
                data.masks[:n],
                taus,
                run.path("glimpse_windows.png"),
                title=(
                    f"{config.method}: glimpse windows (mean s {stats['mean_scale']:.2f}, "
                    f"ring covered {100 * (stats['ring_coverage'] or 0):.0f} %)"
                ),
            )

    def export(self, run, path):
        from cram_keras.training.export import export_inpainter

        export_inpainter(run.model, path, run.data.x_test.shape[1:])


EXPERIMENT = InpaintingExperiment()
smoke_config = EXPERIMENT.smoke_config
train_and_evaluate = functools.partial(run_experiment, EXPERIMENT)


# === The --tune search ===

# The objective of the search (in each trial's metrics.json).
SEARCH_OBJECTIVE = "valid_hole_psnr"


class _SearchTrial(InpaintingExperiment):
    """One trial of the --tune search: an ordinary run (resumable, scored on
    the test set like any run) on the training images less the held-out
    ones, whose per-epoch validation numbers are on the held-out images and
    whose metrics.json adds their hole PSNR, scored as the final scoring
    scores (after the batch-norm recalibration, by `evaluate_inpainting`):
    `valid_hole_psnr`, the search's objective."""

    def load_data(self, run):
        data = super().load_data(run)
        config = run.config
        hold_out_validation(
            data, config, config.tune_valid_fraction, "--tune", "tune_valid_fraction"
        )
        return data

    def evaluate(self, run):
        metrics = super().evaluate(run)
        data = run.data
        completed = complete(
            run.model, data.x_valid, data.valid_masks, run.config.eval_batch_size
        )
        scores = evaluate_inpainting(data.x_valid, completed, data.valid_masks)
        metrics[SEARCH_OBJECTIVE] = float(scores["hole_psnr"])
        return metrics


_TRIAL = _SearchTrial()


def hold_out_validation(data, config, fraction, purpose, field):
    """Moves the last ``fraction`` of ``data.x_train`` to ``data.x_valid``,
    with holes drawn as the test holes are (`evaluation_masks`)."""
    data.x_train, data.x_valid = held_out(
        data.x_train, fraction, purpose=purpose, field=field
    )
    data.valid_masks = evaluation_masks(
        config, len(data.x_valid), data.x_valid.shape[1]
    )


def _recalibrate(model, run):
    """Batch-norm statistics as the final scoring uses them: the average over
    `config.bn_recalibration_batches` training batches, always the same
    batches (a fixed seed and order), so the result depends only on the
    weights: the recalibration before each epoch's validation and the one
    before the final scoring agree, and a rerun after a kill gives the same
    statistics. Nothing with `bn_recalibration_batches=0` (the moving
    averages of training are used)."""
    config = run.config
    if not config.bn_recalibration_batches:
        return
    # Runs at the end of an epoch's fit (or after training): the next epoch
    # reseeds everything, so resetting the seeds here changes no training.
    keras.utils.set_random_seed(config.seed)
    model.recalibrate_batch_norm(
        train_dataset(config, run.data.x_train, epoch=config.epochs),
        config.bn_recalibration_batches,
    )


def validation_statistics(config):
    """How the batch-norm statistics of validation and scoring are set."""
    if config.bn_recalibration_batches:
        return f"BN recalibrated on {config.bn_recalibration_batches} training batches"
    return "BN moving averages"
