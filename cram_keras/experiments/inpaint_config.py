"""The settings of an inpainting run (`cram_keras.experiments.inpaint`):
`Config`, with the checks of every value, and the smoke run's settings.

The defaults are the paper setting. The paper reports no numbers (Fig. 7
only) and leaves the sizes open; ours are the released code's for the
encoder (``width=64``: context CNN 16-32-64, localisation CNN 8-16-32,
glimpse CNN 16-32-64, 512-unit LSTMs; 4 glimpses of 12 px, window at least
12 of 32 pixels) and DCGAN-like for the generator and discriminators
(``width`` scales them all: `cram_keras.models.inpainting.sizes`). Adam
(1e-4, the paper's rate; beta_1 0.5 as DCGAN) for each of the three
networks; alpha 1, beta 1e-3, clue weight 0.1; 5 reconstruction-only
epochs. After training, the encoder's and generator's batch-norm statistics
are recalibrated over 50 training batches
(``CRAMInpainter.recalibrate_batch_norm``; +1.5 dB on the SVHN subset).
``jit_compile`` is off by default on TensorFlow: XLA made a CRAM step ten
times slower on the 2-core CPU we measured (5.0 s against 0.46 s, batch
64); on JAX the step is always compiled (``jax.jit``).
"""

import dataclasses

from cram_keras.data.inpainting import IMAGE_SIZE, MASK_KINDS
from cram_keras.experiments.config import (
    check_choices,
    check_fields,
    dtype_policy_option,
    option,
    resolve,
)
from cram_keras.models.cram import GLIMPSE_STARTS
from cram_keras.utils import check_int, check_number, check_range

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
    patience: int | None = option(
        None,
        "early stopping: hold out valid_fraction of the training images, score "
        "them after every epoch (hole PSNR, batch norm recalibrated as for the "
        "final scores) and stop after this many epochs without a better score; "
        "the best epoch is scored (none: train every epoch, as the paper)",
    )
    valid_fraction: float = option(
        0.1,
        "--patience: fraction of the training images (the last ones) held out "
        "as its validation images; the model trains on the others",
        flag=False,
    )
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
        512,
        "images of the per-epoch validation numbers: the first test images, "
        "or with --patience the first held-out training images",
        flag=False,
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
        if self.patience is not None:
            check_int("patience", self.patience, low=1)
        check_number(
            "valid_fraction",
            self.valid_fraction,
            low=0,
            high=1,
            low_inclusive=False,
            high_inclusive=False,
        )
        if self.tune and self.patience is not None:
            raise ValueError(
                "`patience` stops one run on its own validation images; `tune` "
                "trains each trial for a fixed number of epochs and scores it on "
                "held-out images. Use one of --tune and --patience. Received: "
                f"tune=True, patience={self.patience}"
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


SMOKE = dict(
    epochs=2, batch_size=16, n_train=64, n_test=32, glimpses=2, core_units=32,
    width=8, warmup_steps=2, figure_examples=2, monitor_examples=16,
    eval_batch_size=32, jit_compile=False, bn_recalibration_batches=2,
    max_trials=2, glimpse_range=[1, 2],
)  # fmt: skip
