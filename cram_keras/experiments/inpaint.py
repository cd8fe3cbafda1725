"""E3: CRAM inpainting on SVHN with a centred 8x8 hole (Chung & Cho 2018,
Sections III-B2, IV-B, V-B, VI-B and Fig. 7), measured against OpenCV
Telea, OpenCV Navier-Stokes, mean fill and the same generator and
discriminators trained with a no-attention CNN encoder.

Paper setting (a GPU; SVHN from TFDS ``svhn_cropped``, 73,257 / 26,032)::

    python train_inpaint.py --epochs 50                  # CRAM
    python train_inpaint.py --epochs 50 --encoder cnn    # no-attention baseline

The paper reports no numbers (Fig. 7 only) and leaves the sizes open; ours
are the released code's for the encoder (``width=64``: context CNN 16-32-64,
localisation CNN 8-16-32, glimpse CNN 16-32-64, 512-unit LSTMs; 4 glimpses
of 12 px, window at least 12 of 32 pixels) and DCGAN-like for the generator
and discriminators (``width`` scales them all). Adam (1e-4, the paper's
rate; beta_1 0.5 as DCGAN) for each of the three networks; alpha 1, beta
1e-3, clue weight 0.1; 5 reconstruction-only epochs. After training, the
encoder's and generator's batch-norm statistics are recalibrated over 50
training batches (``CRAMInpainter.recalibrate_batch_norm``; +1.5 dB on the
SVHN subset). ``jit_compile`` is off by default on TensorFlow: XLA made a
CRAM step ten times slower on the 2-core CPU we measured (5.0 s against
0.46 s, batch 64); on JAX the step is always compiled (``jax.jit``).

CPU-budget setting: the same architecture on ``mnist32`` and on the real
1,083-image SVHN subset, 8 to 14 minutes per model on 2 shared cores: the
configurations ``configs/inpaint/*.py`` hold the committed commands and wall
times, ``benchmarks/results/inpaint_*.json`` the results.

All methods are scored by ``cram_keras.evaluation.baselines.evaluate_inpainting``
on the same test images and masks (the centred hole, or random rectangles
drawn once from ``test_mask_seed``). The final-epoch model is scored; the
per-epoch validation numbers in ``log.csv`` and TensorBoard (on the first
``monitor_examples`` test images) are computed with the batch-norm
statistics the final scoring uses (recalibrated on the same training batches
before every validation pass), so the last epoch's logged validation PSNR is
the final score on those images; they select nothing.
"""

import dataclasses
import functools
import json
import os
import time

import keras
import numpy as np

from cram_keras.data.inpainting import (
    IMAGE_SIZE,
    MASK_KINDS,
    check_inpainting_images,
    inpainting_masks,
    load_inpainting_dataset,
)
from cram_keras.data.pipelines import inpainting_eval_dataset as eval_dataset
from cram_keras.data.pipelines import inpainting_train_dataset
from cram_keras.evaluation.baselines import evaluate_inpainting
from cram_keras.evaluation.inpainting import complete, score_inpainter
from cram_keras.experiments.config import (
    check_choices,
    check_fields,
    dtype_policy_option,
    option,
    resolve,
)
from cram_keras.experiments.errors import UsageError
from cram_keras.experiments.experiment import (
    Experiment,
    check_batch_size,
    jit_compile_for_backend,
)
from cram_keras.experiments.run_dir import hold_run_dir
from cram_keras.experiments.runner import run_experiment
from cram_keras.experiments.search import held_out, search_runs
from cram_keras.experiments.summary import note
from cram_keras.models.cram import GLIMPSE_STARTS, CRAMEncoder
from cram_keras.models.inpainting import (
    CNNEncoder,
    ContextSkipEncoder,
    CRAMInpainter,
    GlobalDiscriminator,
    InpaintingGenerator,
    LocalDiscriminator,
)
from cram_keras.training.callbacks import (
    BeforeValidation,
    InpaintingFigures,
    tensorboard_installed,
)
from cram_keras.training.checkpoint import (
    ModelFileError,
    check_inpainter_fits,
    crash_point,
    load_inpainter,
)
from cram_keras.training.distribute import Distribution
from cram_keras.training.workarounds import python_scalar
from cram_keras.utils import (
    check_int,
    check_number,
    check_range,
    write_json,
)

ENCODERS = ("cram", "cnn", "cram_skip")
# Name of each encoder's model in metrics.json's "methods".
METHOD_NAMES = {"cram": "cram", "cnn": "cnn_encoder", "cram_skip": "cram_skip"}


@dataclasses.dataclass(frozen=True)
class Config:
    """Every setting of an inpainting run; the defaults are the paper setting."""

    # Data.
    dataset: str = option(
        "svhn",
        "svhn (TFDS svhn_cropped, or the official train_32x32.mat / test_32x32.mat "
        "in --data-dir; offline: the bundled 1,083-image sample, 883 train / 200 "
        "test), mnist32 (MNIST zero-padded to 32x32), or npz:PATH (an images-only "
        ".npz with key X, uint8 (N, 32, 32, C) with C = 1 or 3; the last 200 of "
        ">= 1000 images, else the last 20%, are the test set)",
        metavar="{svhn,mnist32,npz:PATH}",
    )
    data_dir: str | None = option(
        None,
        "directory with the official files (offline); without it svhn and mnist32 "
        "come from TFDS when prepared or reachable, else from the bundled samples; "
        "for npz:PATH, the base of a relative PATH",
        metavar="DIR",
    )
    n_train: int | None = option(
        None, "train on the first N training images only (none: all)"
    )
    n_test: int | None = option(
        None, "score the first N test images (none: all)", flag=False
    )
    mask: str = option(
        "center",
        "center: the paper's centred 8x8 hole; random: rectangles with sides "
        "4..16 (test masks drawn once, the same for every method)",
        choices=MASK_KINDS,
    )
    hole_size: int = option(8, "side of the centred hole (8 of 32: 6.25%)", flag=False)
    min_hole: int = option(4, "random rectangles: smallest side", flag=False)
    max_hole: int = option(16, "random rectangles: largest side", flag=False)
    test_mask_seed: int = option(1234, "seed of the random test masks", flag=False)
    augment: bool = option(
        False, "random flips, transposes and negatives of the training images"
    )
    # Model.
    encoder: str = option(
        "cram",
        "cram: the recurrent attention encoder with the mask as clue; cnn: the "
        "no-attention baseline (a CNN on the occluded image, no clue loss); "
        "cram_skip: beyond the paper, CRAM's z concatenated with a small CNN of "
        "the whole occluded image (a context skip)",
        choices=ENCODERS,
    )
    glimpses: int = option(4, "glimpses of the CRAM encoder")
    glimpse_start: str = option(
        "shared",
        "shared: one localisation network places every glimpse, all starting at "
        "the same centred window (the paper); per_step: beyond the paper, each "
        "glimpse step has its own learned start, beginning centred; spread: the "
        "same, beginning around the image centre (right, below, left, above)",
        choices=GLIMPSE_STARTS,
    )
    glimpse_size: int = option(12, "glimpse patch side in pixels", flag=False)
    min_scale: float = option(
        0.375, "smallest glimpse window (12 of 32 pixels)", flag=False
    )
    initial_scale: float = option(0.5, "scale of the first glimpse window", flag=False)
    core_units: int = option(512, "units of the core LSTMs", flag=False)
    width: int = option(64, "scales every CNN and MLP (see build_model)", flag=False)
    local_margin: int = option(
        4, "context pixels around the hole in the local crop", flag=False
    )
    # Loss (eq. 17).
    alpha: float = option(1.0, "weight of L_recon, the hole L1")
    beta: float = option(1e-3, "weight of L_gan, local + global adversarial loss")
    clue_weight: float = option(0.1, "weight of L_clue")
    warmup_epochs: float = option(
        5.0, "reconstruction-only epochs before L_gan switches on"
    )
    warmup_steps: int | None = option(
        None, "reconstruction-only steps (wins over warmup_epochs when set)", flag=False
    )
    # Optimisation.
    epochs: int = option(50, "training epochs")
    batch_size: int = option(64, "global batch size (split over replicas)")
    learning_rate: float = option(
        1e-4, "Adam rate of the encoder + generator", flag=False
    )
    d_learning_rate: float = option(1e-4, "Adam rate of each discriminator", flag=False)
    adam_beta_1: float = option(0.5, "Adam beta_1 (DCGAN)", flag=False)
    bn_recalibration_batches: int = option(
        50,
        "training batches over which the encoder's and generator's batch-norm "
        "statistics are averaged after training (0: off)",
        flag=False,
    )
    jit_compile: bool = option(
        False,
        "XLA (measured 10x slower on the 2-core CPU; try it on a GPU)",
        flag=False,
    )
    dtype_policy: str = dtype_policy_option()
    seed: int = option(0, "training seed")
    # keras-tuner search (tune=True): glimpses x rate x smallest window.
    tune: bool = option(
        False,
        "keras-tuner random search over the number of glimpses (1-8), the "
        "encoder + generator Adam rate (3e-5 to 3e-4, log scale) and the "
        "smallest glimpse window (min_scale 0.25 to 0.45), maximising the hole "
        "PSNR on held-out training images; every trial is a run in "
        "trials/<id>, and the best one is scored; --glimpses is then searched, "
        "not used",
    )
    max_trials: int = option(16, "trials of the --tune search, counting finished ones")
    glimpse_range: list = option([1, 8], "--tune: glimpse counts searched", flag=False)
    learning_rate_range: list = option(
        [3e-5, 3e-4],
        "--tune: encoder + generator Adam rates searched (log scale)",
        flag=False,
    )
    min_scale_range: list = option(
        [0.25, 0.45],
        "--tune: smallest glimpse windows searched (0.25: the 8-pixel hole), "
        "below initial_scale",
        flag=False,
    )
    tune_valid_fraction: float = option(
        0.1,
        "--tune: fraction of the training images (the last ones) held out to "
        "score the trials; the trials train on the others",
        flag=False,
    )
    # Outputs.
    figure_examples: int = option(8, "test images in the figures", flag=False)
    monitor_examples: int = option(
        512, "test images of the per-epoch validation numbers", flag=False
    )
    eval_batch_size: int = option(256, "batch size of scoring", flag=False)
    export: bool = option(
        False, "also write a SavedModel (serve: image, mask -> completed image)"
    )

    def __post_init__(self):
        dataset_ok = isinstance(self.dataset, str) and (
            self.dataset in ("svhn", "mnist32")
            or (self.dataset.startswith("npz:") and len(self.dataset) > len("npz:"))
        )
        if not dataset_ok:
            raise ValueError(
                "`dataset` must be 'svhn', 'mnist32' or 'npz:PATH' (a .npz file "
                f"with key X). Received: dataset={self.dataset!r}"
            )
        check_choices(self)
        positive = (
            "glimpses", "glimpse_size", "core_units", "width", "epochs",
            "batch_size", "figure_examples", "monitor_examples", "eval_batch_size",
        )  # fmt: skip
        check_fields(self, check_int, positive, low=1)
        # Every image is IMAGE_SIZE pixels square (`check_inpainting_images`).
        size = IMAGE_SIZE
        for name, what in (
            ("hole_size", "the centred hole"),
            ("min_hole", "the smallest random hole"),
            ("max_hole", "the largest random hole"),
        ):
            check_int(
                name,
                getattr(self, name),
                low=1,
                high=size - 1,
                flag=f"--set {name}=N",
                reason=f"{what} must leave some of the {size}x{size} image to "
                "inpaint from",
            )
        check_number(
            "min_scale",
            self.min_scale,
            low=1 / size,
            high=1.0,
            high_inclusive=False,
            flag="--set min_scale=S",
            reason=f"the smallest glimpse window is min_scale x {size} pixels "
            "wide, which must be at least one pixel and less than the image",
        )
        check_number(
            "initial_scale",
            self.initial_scale,
            low=self.min_scale,
            high=1.0,
            low_inclusive=False,
            high_inclusive=False,
            flag="--set initial_scale=S",
            reason="the first glimpse window lies between the smallest one "
            "(min_scale) and the whole image",
        )
        for name in ("n_train", "n_test"):
            if getattr(self, name) is not None:
                check_int(name, getattr(self, name), low=1)
        check_int("local_margin", self.local_margin, low=0)
        check_int("bn_recalibration_batches", self.bn_recalibration_batches, low=0)
        if self.warmup_steps is not None:
            check_int("warmup_steps", self.warmup_steps, low=0)
        if self.width % 8:
            raise ValueError(
                "`width` must be a multiple of 8 (the smallest CNN has width / 8 "
                f"filters). Received: width={self.width!r}"
            )
        if self.min_hole > self.max_hole:
            raise ValueError(
                "`min_hole` must be at most `max_hole`. "
                f"Received: min_hole={self.min_hole}, max_hole={self.max_hole}"
            )
        weights = ("alpha", "beta", "clue_weight", "warmup_epochs")
        check_fields(self, check_number, weights, low=0)
        rates = ("learning_rate", "d_learning_rate")
        check_fields(self, check_number, rates, low=0, low_inclusive=False)
        # The --tune search.
        check_int("max_trials", self.max_trials, low=1)
        below_initial = dict(
            high=self.initial_scale,
            high_inclusive=False,
            high_name=f"initial_scale ({self.initial_scale})",
        )
        for name, bounds in (
            ("glimpse_range", dict(low=1, integer=True)),
            ("learning_rate_range", dict(low=0, low_inclusive=False)),
            ("min_scale_range", dict(low=0, low_inclusive=False, **below_initial)),
        ):
            resolve(self, name, check_range(name, getattr(self, name), **bounds))
        # As for min_scale: a window of at least one pixel.
        if self.min_scale_range[0] < 1 / IMAGE_SIZE:
            raise ValueError(
                "`min_scale_range` (--set min_scale_range=LOW,HIGH) must be [low, "
                f"high] with {1 / IMAGE_SIZE} <= low: the smallest glimpse window "
                f"is min_scale x {IMAGE_SIZE} pixels wide, at least one pixel. "
                f"Received: min_scale_range={self.min_scale_range!r}"
            )
        check_number(
            "tune_valid_fraction",
            self.tune_valid_fraction,
            low=0,
            high=1,
            low_inclusive=False,
            high_inclusive=False,
        )
        if self.tune and self.encoder == "cnn":
            raise ValueError(
                "`tune` searches the glimpses of a CRAM encoder; encoder='cnn' has "
                "none. Use encoder='cram' or 'cram_skip', or drop --tune."
            )

    @property
    def method(self):
        """This run's name in metrics.json: "cram", "cnn_encoder" or "cram_skip"."""
        return METHOD_NAMES[self.encoder]


def dataset_label(name):
    """Short name of a dataset for titles and directories: `npz:a/b.npz` -> `b`."""
    if name.startswith("npz:"):
        return os.path.splitext(os.path.basename(name[len("npz:") :]))[0]
    return name


SMOKE = dict(
    epochs=2, batch_size=16, n_train=64, n_test=32, glimpses=2, core_units=32,
    width=8, warmup_steps=2, figure_examples=2, monitor_examples=16,
    eval_batch_size=32, jit_compile=False, bn_recalibration_batches=2,
    max_trials=2, glimpse_range=[1, 2],
)  # fmt: skip


# === Data ===


def load_images(config, bundled=False, return_source=False):
    """Train and test images (float32 [0, 1], (N, 32, 32, C)), subsampled;
    with ``return_source`` also the DataSource."""
    bundled = bundled and config.dataset in ("svhn", "mnist32")
    x_train, x_test, source = load_inpainting_dataset(
        config.dataset, config.data_dir, bundled=bundled, return_source=True
    )
    if config.n_train is not None:
        x_train = x_train[: config.n_train]
    if config.n_test is not None:
        x_test = x_test[: config.n_test]
    if return_source:
        return x_train, x_test, source
    return x_train, x_test


def evaluation_masks(config, num_images, image_size=32):
    """The masks every method is scored with: (N, H, W, 1), 1 = hole."""
    return inpainting_masks(
        num_images,
        image_size,
        config.mask,
        hole_size=config.hole_size,
        min_size=config.min_hole,
        max_size=config.max_hole,
        seed=config.test_mask_seed,
    )


def train_dataset(config, x_train, epoch=None):
    """Shuffled, batched (image, mask) pairs; full batches only (batch norm).
    See `cram_keras.data.pipelines.inpainting_train_dataset` (`epoch`: the
    order of that one epoch, independent of what ran before)."""
    return inpainting_train_dataset(
        x_train,
        config.batch_size,
        mask=config.mask,
        seed=config.seed,
        hole_size=config.hole_size,
        min_size=config.min_hole,
        max_size=config.max_hole,
        augment=config.augment,
        epoch=epoch,
    )


# === Model ===


def local_crop_size(config, image_size=32):
    """Side of the local discriminator's crop: the largest hole + 2 margins."""
    hole = config.hole_size if config.mask == "center" else config.max_hole
    size = min(hole + 2 * config.local_margin, image_size)
    if size < 16:
        # Four stride-2 convolutions need 16 pixels to end at 1x1.
        size = min(16, image_size)
    return size


def build_encoder(config):
    w = config.width
    if config.encoder == "cnn":
        return CNNEncoder(
            units=config.core_units, filters=(w, 2 * w, 4 * w), name="encoder"
        )
    cram = CRAMEncoder(
        num_glimpses=config.glimpses,
        glimpse_size=config.glimpse_size,
        core_units=config.core_units,
        context_filters=(w // 4, w // 2, w),
        context_units=4 * w,
        localization_filters=(w // 8, w // 4, w // 2),
        localization_units=4 * w,
        min_scale=config.min_scale,
        initial_scale=config.initial_scale,
        glimpse_filters=(w // 4, w // 2, w),
        glimpse_units=4 * w,
        glimpse_start=config.glimpse_start,
        name="encoder" if config.encoder == "cram" else "cram",
    )
    if config.encoder == "cram":
        return cram
    # The context skip: a CNN a quarter of the CNN baseline's width, whose
    # z is a quarter of the core's.
    skip = CNNEncoder(
        units=max(config.core_units // 4, 1),
        filters=(max(w // 4, 1), max(w // 2, 1), w),
        name="skip",
    )
    return ContextSkipEncoder(cram, skip, name="encoder")


def build_model(config, image_shape, steps_per_epoch):
    """The inpainter for images of `image_shape` (H, W, C), built.

    `width` w sets: generator 4w-2w-w transposed convolutions from a 4x4x4w
    map; local discriminator w-2w-4w-8w convolutions + MLP 8w-1; global
    discriminator w-2w-4w + MLP 8w-1; CNN encoder w-2w-4w + dense
    core_units; CRAM encoder context w/4-w/2-w, localisation w/8-w/4-w/2,
    glimpse w/4-w/2-w, MLPs 4w (w = 64: the released code's sizes).
    """
    w = config.width
    size, channels = image_shape[0], image_shape[-1]
    warmup = config.warmup_steps
    if warmup is None:
        warmup = int(round(config.warmup_epochs * steps_per_epoch))
    model = CRAMInpainter(
        encoder=build_encoder(config),
        generator=InpaintingGenerator(
            image_size=size,
            channels=channels,
            filters=(4 * w, 2 * w, w),
            name="generator",
        ),
        local_discriminator=LocalDiscriminator(
            crop_size=local_crop_size(config, size),
            filters=(w, 2 * w, 4 * w, 8 * w),
            units=8 * w,
            name="local_discriminator",
        ),
        global_discriminator=GlobalDiscriminator(
            filters=(w, 2 * w, 4 * w), units=8 * w, name="global_discriminator"
        ),
        alpha=config.alpha,
        beta=config.beta,
        clue_weight=config.clue_weight,
        warmup_steps=warmup,
        name=f"inpainter_{config.encoder}",
    )
    model.build([(None,) + tuple(image_shape), (None,) + tuple(image_shape[:2]) + (1,)])
    return model


def compile_model(model, config):
    def adam(rate):
        return keras.optimizers.Adam(learning_rate=rate, beta_1=config.adam_beta_1)

    model.compile(
        g_optimizer=adam(config.learning_rate),
        local_d_optimizer=adam(config.d_learning_rate),
        global_d_optimizer=adam(config.d_learning_rate),
        jit_compile=jit_compile_for_backend(config.jit_compile),
    )
    return model


# === The experiment ===


class _Data:
    def __init__(self, x_train, x_test, masks, source):
        self.x_train, self.x_test, self.masks, self.source = (
            x_train,
            x_test,
            masks,
            source,
        )


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
    python train_inpaint.py --smoke                        # seconds, offline
    python train_inpaint.py --eval-only runs/inpaint/RUN/model.keras

The run directory gets config.json, log.csv, metrics.json (the model and the
classical baselines on the same test images and masks), figures/ (one Fig. 7
figure per epoch), inpaint.png, tensorboard/, checkpoints/, model.keras, and
with --export a SavedModel. Rerunning the same command resumes a run."""
    backends = ("tensorflow", "jax")  # CRAMInpainter.train_step's backends
    smoke_overrides = SMOKE
    speed_key = "train_images_per_second"

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
        return _Data(x_train, x_test, masks, source)

    def check_inputs(self, run):
        check_inpainting_images(run.config.dataset, run.data.x_test)
        check_batch_size(
            run.config.batch_size,
            len(run.data.x_train),
            "training images",
            "Training uses full batches only (batch norm); lower --batch-size.",
        )

    def steps_per_epoch(self, run):
        return len(run.data.x_train) // run.config.batch_size

    def train_dataset(self, run, epoch):
        return train_dataset(run.config, run.data.x_train, epoch)

    def valid_dataset(self, run):
        config, data = run.config, run.data
        n = min(config.monitor_examples, len(data.x_test))
        return eval_dataset(data.x_test[:n], data.masks[:n], config.eval_batch_size)

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
            _, taus = model.generate(
                keras.ops.convert_to_tensor(data.x_test[:n], "float32"),
                keras.ops.convert_to_tensor(data.masks[:n], "float32"),
            )
            taus = keras.ops.convert_to_numpy(taus)

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
        data.x_train, data.x_valid = held_out(
            data.x_train, run.config.tune_valid_fraction
        )
        data.valid_masks = evaluation_masks(
            run.config, len(data.x_valid), data.x_valid.shape[1]
        )
        return data

    def valid_dataset(self, run):
        config, data = run.config, run.data
        n = min(config.monitor_examples, len(data.x_valid))
        return eval_dataset(
            data.x_valid[:n], data.valid_masks[:n], config.eval_batch_size
        )

    def evaluate(self, run):
        metrics = super().evaluate(run)
        data = run.data
        completed = complete(
            run.model, data.x_valid, data.valid_masks, run.config.eval_batch_size
        )
        scores = evaluate_inpainting(data.x_valid, completed, data.valid_masks)
        metrics[SEARCH_OBJECTIVE] = float(scores["hole_psnr"])
        metrics["n_valid"] = int(len(data.x_valid))
        return metrics


_TRIAL = _SearchTrial()


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


def evaluate_checkpoint(config, checkpoint, output_dir, bundled=False):
    """Scores a saved inpainter and the baselines on ``config``'s test set;
    writes ``eval_metrics.json`` and ``eval_inpaint.png`` into ``output_dir``,
    which it holds as a run holds its run directory (`hold_run_dir`: a busy
    one is refused). A checkpoint it cannot score is a `UsageError`."""
    with hold_run_dir(output_dir, Distribution("default"), note):
        try:
            model = load_inpainter(checkpoint)
            _, x_test = load_images(config, bundled=bundled)
            check_inpainter_fits(model, x_test.shape[1:], config.dataset)
        except ModelFileError as err:
            raise UsageError(str(err)) from None
        masks = evaluation_masks(config, len(x_test), x_test.shape[1])
        encoders = {CNNEncoder: "cnn_encoder", ContextSkipEncoder: "cram_skip"}
        method = next(
            (name for cls, name in encoders.items() if isinstance(model.encoder, cls)),
            "cram",
        )
        start = time.perf_counter()
        results = dict(
            score_inpainter(model, x_test, masks, method, config.eval_batch_size),
            checkpoint=os.path.abspath(checkpoint),
            dataset=config.dataset,
            mask=config.mask,
            n_test=int(len(x_test)),
        )
        results["wall_seconds"] = time.perf_counter() - start
        os.makedirs(output_dir, exist_ok=True)
        from cram_keras.visualization import inpainting_figure

        n_fig = min(config.figure_examples, len(x_test))
        inpainting_figure(
            model,
            x_test[:n_fig],
            masks[:n_fig],
            os.path.join(output_dir, "eval_inpaint.png"),
        )
        write_json(os.path.join(output_dir, "eval_metrics.json"), results)
    print(json.dumps(results, indent=2, sort_keys=True))
    return results
