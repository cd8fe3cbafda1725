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
SVHN subset). ``jit_compile`` is off by default: XLA made a CRAM step ten
times slower on the 2-core CPU we measured (5.0 s against 0.46 s, batch 64).

CPU-budget setting: the same architecture on ``mnist32`` and on the real
1,083-image SVHN subset, 8 to 14 minutes per model on 2 shared cores: see
``benchmarks/inpaint_budget.py`` for the committed commands, wall times and
results (``benchmarks/results/inpaint_*.json``).

All methods are scored by ``cram_keras.evaluation.baselines.evaluate_inpainting``
on the same test images and masks (the centred hole, or random rectangles
drawn once from ``test_mask_seed``). The final-epoch model is scored; the
per-epoch validation numbers in ``log.csv`` (on the first
``monitor_examples`` test images) are for watching the run only and select
nothing.
"""

import csv
import dataclasses
import json
import os
import time

import keras
import numpy as np

from cram_keras.data.inpainting import (
    MASK_KINDS,
    inpainting_dataset,
    inpainting_masks,
    load_inpainting_dataset,
)
from cram_keras.evaluation.baselines import BASELINES, evaluate_inpainting
from cram_keras.experiments.config import prepare_run_dir, write_json
from cram_keras.models.inpainting import (
    CNNEncoder,
    CRAMInpainter,
    GlobalDiscriminator,
    InpaintingGenerator,
    LocalDiscriminator,
)
from cram_keras.training.callbacks import EpochTimer, WallClock

ENCODERS = ("cram", "cnn")
# Name of each encoder's model in metrics.json's "methods".
METHOD_NAMES = {"cram": "cram", "cnn": "cnn_encoder"}


@dataclasses.dataclass(frozen=True)
class Config:
    """Every setting of an inpainting run; the defaults are the paper setting."""

    # Data.
    dataset: str = "svhn"  # "svhn", "mnist32" or "npz:PATH"
    data_dir: str | None = None
    n_train: int | None = None  # None: all; else the first n_train images
    n_test: int | None = None  # None: all; else the first n_test images
    mask: str = "center"  # "center" (paper) or "random" rectangles
    hole_size: int = 8  # side of the centred hole (8 of 32: 6.25 %)
    min_hole: int = 4  # random rectangles: sides in min_hole..max_hole
    max_hole: int = 16
    test_mask_seed: int = 1234  # random test masks, the same for every method
    augment: bool = False  # random flips / transposes / inversions of training images
    # Model.
    encoder: str = "cram"  # "cram" or "cnn" (no attention, no clue)
    glimpses: int = 4
    glimpse_size: int = 12
    min_scale: float = 0.375  # smallest glimpse window: 12 of 32 pixels
    initial_scale: float = 0.5
    core_units: int = 512
    width: int = 64  # scales every CNN and MLP, see build_model
    local_margin: int = 4  # context pixels around the hole in the local crop
    # Loss (eq. 17).
    alpha: float = 1.0
    beta: float = 1e-3
    clue_weight: float = 0.1
    warmup_epochs: float = 5.0  # reconstruction-only epochs ...
    warmup_steps: int | None = None  # ... or steps (wins when set)
    # Optimisation.
    epochs: int = 50
    batch_size: int = 64
    learning_rate: float = 1e-4  # encoder + generator
    d_learning_rate: float = 1e-4  # each discriminator
    adam_beta_1: float = 0.5
    # Batches over which the encoder's and generator's batch-norm statistics
    # are averaged after training (CRAMInpainter.recalibrate_batch_norm); 0: off.
    bn_recalibration_batches: int = 50
    # XLA measured on this CPU: 5.0 s/step with, 0.46 s/step without (CRAM,
    # batch 64); try it on a GPU.
    jit_compile: bool = False
    seed: int = 0
    # Outputs.
    figure_examples: int = 8
    monitor_examples: int = 512
    eval_batch_size: int = 256
    export: bool = False

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
        if self.encoder not in ENCODERS:
            raise ValueError(
                f"`encoder` must be one of {ENCODERS}. Received: encoder={self.encoder!r}"
            )
        if self.mask not in MASK_KINDS:
            raise ValueError(
                f"`mask` must be one of {MASK_KINDS}. Received: mask={self.mask!r}"
            )
        positive = (
            "hole_size", "min_hole", "max_hole", "glimpses", "glimpse_size",
            "core_units", "width", "epochs", "batch_size", "figure_examples",
            "monitor_examples", "eval_batch_size",
        )  # fmt: skip
        for name in positive:
            _check_int(name, getattr(self, name), low=1)
        for name in ("n_train", "n_test"):
            if getattr(self, name) is not None:
                _check_int(name, getattr(self, name), low=1)
        _check_int("local_margin", self.local_margin, low=0)
        _check_int("bn_recalibration_batches", self.bn_recalibration_batches, low=0)
        if self.warmup_steps is not None:
            _check_int("warmup_steps", self.warmup_steps, low=0)
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
        for name in ("alpha", "beta", "clue_weight", "warmup_epochs"):
            value = getattr(self, name)
            if (
                isinstance(value, bool)
                or not isinstance(value, (int, float))
                or value < 0
            ):
                raise ValueError(
                    f"`{name}` must be a number >= 0. Received: {name}={value!r}"
                )
        for name in ("learning_rate", "d_learning_rate"):
            value = getattr(self, name)
            if (
                isinstance(value, bool)
                or not isinstance(value, (int, float))
                or value <= 0
            ):
                raise ValueError(
                    f"`{name}` must be a number > 0. Received: {name}={value!r}"
                )

    @property
    def method(self):
        """This run's name in metrics.json: "cram" or "cnn_encoder"."""
        return METHOD_NAMES[self.encoder]


def dataset_label(name):
    """Short name of a dataset for titles and directories: `npz:a/b.npz` -> `b`."""
    if name.startswith("npz:"):
        return os.path.splitext(os.path.basename(name[len("npz:") :]))[0]
    return name


def smoke_config(**overrides):
    """Seconds-long end-to-end run on tiny data and networks (used by the tests)."""
    base = dict(
        epochs=2,
        batch_size=16,
        n_train=64,
        n_test=32,
        glimpses=2,
        core_units=32,
        width=8,
        warmup_steps=2,
        figure_examples=2,
        monitor_examples=16,
        eval_batch_size=32,
        jit_compile=False,
        bn_recalibration_batches=2,
    )
    base.update({k: v for k, v in overrides.items() if v is not None})
    return Config(**base)


def _check_int(name, value, low):
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(
            f"`{name}` must be an integer >= {low}. Received: {name}={value!r}"
        )


# === Data ===


def load_images(config):
    """Train and test images (float32 [0, 1], (N, 32, 32, C)), subsampled."""
    x_train, x_test = load_inpainting_dataset(config.dataset, config.data_dir)
    if config.n_train is not None:
        x_train = x_train[: config.n_train]
    if config.n_test is not None:
        x_test = x_test[: config.n_test]
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


def train_dataset(config, x_train):
    """Shuffled, batched (image, mask) pairs; full batches only (batch norm)."""
    import tensorflow as tf

    dataset = inpainting_dataset(
        x_train,
        mask=config.mask,
        batch_size=None,
        shuffle=True,
        seed=config.seed,
        hole_size=config.hole_size,
        min_size=config.min_hole,
        max_size=config.max_hole,
    )
    if config.augment:
        dataset = dataset.map(
            _augment_fn(config.seed), num_parallel_calls=tf.data.AUTOTUNE
        )
    dataset = dataset.batch(config.batch_size, drop_remainder=True)
    return dataset.prefetch(tf.data.AUTOTUNE)


def _augment_fn(seed):
    """One of the 8 flips / right-angle rotations of the image, and with
    probability 1/2 its negative (SVHN digits come in both polarities). The
    mask is independent of the image, so it is left as drawn."""
    import tensorflow as tf

    generator = tf.random.Generator.from_seed(seed)

    def augment(image, mask):
        draws = generator.uniform((4,))
        image = tf.cond(
            draws[0] < 0.5, lambda: tf.image.flip_left_right(image), lambda: image
        )
        image = tf.cond(
            draws[1] < 0.5, lambda: tf.image.flip_up_down(image), lambda: image
        )
        image = tf.cond(
            draws[2] < 0.5, lambda: tf.image.transpose(image), lambda: image
        )
        image = tf.cond(draws[3] < 0.5, lambda: 1.0 - image, lambda: image)
        return image, mask

    return augment


def eval_dataset(images, masks, batch_size):
    return inpainting_dataset(images, mask=masks, batch_size=batch_size, shuffle=False)


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
    from cram_keras.models.cram import CRAMEncoder  # Imported only when used.

    return CRAMEncoder(
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
        name="encoder",
    )


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
        jit_compile=config.jit_compile,
    )
    return model


def load_checkpoint(path):
    """A trained inpainter from `model.keras` (or a run directory holding it)."""
    if os.path.isdir(path):
        path = os.path.join(path, "model.keras")
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"No inpainting checkpoint at {path!r}. Pass the model.keras file of "
            "a finished run (or its run directory)."
        )
    import cram_keras.models.cram  # noqa: F401  Registers CRAMEncoder for loading.

    return keras.models.load_model(path, compile=False)


# === Completion, figures, export ===


def complete(model, images, masks, batch_size=256):
    """Completed images (NumPy) for `images` and `masks`, in batches."""
    out = model.predict(eval_dataset(images, masks, batch_size), verbose=0)
    return np.asarray(out, np.float32)


def inpainting_figure(model, images, masks, path, extra=None, title=None):
    """Fig. 7 of the paper: ground truth | input | generated | completed.

    The input column shows the hole in grey (the encoder sees zeros there)
    and, for CRAM, the glimpse windows (one colour per glimpse). `extra`
    maps column titles to more completed images (other methods).
    """
    from cram_keras.visualization import plt, transform_outline

    images = np.asarray(images, np.float32)
    masks = np.asarray(masks, np.float32)
    generated, tau = model.generate(images, masks, training=False)
    generated = keras.ops.convert_to_numpy(generated)
    tau = None if tau is None else keras.ops.convert_to_numpy(tau)
    completed = images * (1.0 - masks) + generated * masks
    columns = [
        ("ground truth", images),
        ("input", images * (1.0 - masks) + 0.5 * masks),
        ("generated", generated),
        ("completed", completed),
    ]
    columns += list((extra or {}).items())
    n, cols = len(images), len(columns)
    fig, axes = plt.subplots(
        n, cols, figsize=(1.5 * cols, 1.5 * n + 0.3), squeeze=False
    )
    colors = (
        "tab:red",
        "tab:green",
        "tab:blue",
        "tab:orange",
        "tab:purple",
        "tab:cyan",
    )
    for j, (name, column) in enumerate(columns):
        axes[0, j].set_title(name, fontsize=8)
        for i in range(n):
            image = np.clip(column[i], 0.0, 1.0)
            axes[i, j].imshow(
                image[..., 0] if image.shape[-1] == 1 else image,
                cmap="gray",
                vmin=0,
                vmax=1,
            )
            axes[i, j].set_xticks([])
            axes[i, j].set_yticks([])
    if tau is not None:
        height, width = images.shape[1:3]
        for i in range(n):
            for t, (s, tx, ty) in enumerate(tau[i]):
                theta = np.array([[s, 0.0, tx], [0.0, s, ty]])
                outline = transform_outline(theta, height, width)
                axes[i, 1].plot(
                    outline[:, 0], outline[:, 1], lw=0.8, color=colors[t % len(colors)]
                )
            axes[i, 1].set_xlim(-0.5, width - 0.5)
            axes[i, 1].set_ylim(height - 0.5, -0.5)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path, np.concatenate([images, columns[1][1], generated, completed], axis=2)


class InpaintingFigures(keras.callbacks.Callback):
    """After every epoch: `figures/epoch_NNN.png` (Fig. 7 style) for fixed
    test images, and the same strips as TensorBoard images."""

    def __init__(self, images, masks, directory, tensorboard_dir=None):
        super().__init__()
        self.images = np.asarray(images, np.float32)
        self.masks = np.asarray(masks, np.float32)
        self.directory = directory
        self.tensorboard_dir = tensorboard_dir
        self._writer = None

    def on_epoch_end(self, epoch, logs=None):
        os.makedirs(self.directory, exist_ok=True)
        path = os.path.join(self.directory, f"epoch_{epoch + 1:03d}.png")
        _, strips = inpainting_figure(
            self.model, self.images, self.masks, path, title=f"epoch {epoch + 1}"
        )
        if self.tensorboard_dir is not None:
            import tensorflow as tf

            if self._writer is None:
                self._writer = tf.summary.create_file_writer(
                    os.path.join(self.tensorboard_dir, "images")
                )
            with self._writer.as_default():
                tf.summary.image(
                    "truth|input|generated|completed",
                    np.clip(strips, 0.0, 1.0),
                    step=epoch,
                    max_outputs=len(strips),
                )
            self._writer.flush()

    def on_train_end(self, logs=None):
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def export_model(model, path, image_shape):
    """SavedModel: ``serve(image, mask)`` -> completed image (B, H, W, C)."""
    from cram_keras.training.export import export_saved_model

    def serve(image, mask):
        return model([image, mask], training=False)

    height, width, channels = image_shape
    return export_saved_model(
        path,
        serve,
        [
            ("image", (None, height, width, channels), "float32"),
            ("mask", (None, height, width, 1), "float32"),
        ],
        model,
    )


# === Scoring ===


def score_methods(model, x_test, masks, config, method):
    """`{method: scores}` for the model and every classical baseline."""
    methods = {}
    if model is not None:
        completed = complete(model, x_test, masks, config.eval_batch_size)
        methods[method] = _as_floats(evaluate_inpainting(x_test, completed, masks))
    for name, baseline in BASELINES.items():
        methods[name] = _as_floats(
            evaluate_inpainting(x_test, baseline(x_test, masks), masks)
        )
    return methods


def _as_floats(scores):
    return {k: float(v) for k, v in scores.items()}


# === Entry points ===


def _has_tensorboard():
    """TensorFlow 2.21 no longer installs TensorBoard; without it, tf.summary
    cannot write, so the run skips its TensorBoard logs and says so."""
    import importlib.util

    if importlib.util.find_spec("tensorboard") is not None:
        return True
    print(
        "note: the tensorboard package is not installed, so no TensorBoard logs "
        "are written (pip install tensorboard); log.csv and figures/ are."
    )
    return False


def _elapsed_before(output_dir):
    path = os.path.join(output_dir, "wall_clock.json")
    if os.path.exists(path):
        with open(path) as f:
            return float(json.load(f)["seconds"])
    return 0.0


def _read_log(path):
    if not os.path.exists(path):
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def train_and_evaluate(config, output_dir):
    """Trains the inpainter of ``config``, scores it and the classical
    baselines on the same test images and masks, and writes into
    ``output_dir``:

    config.json, log.csv, tensorboard/ (scalars and images; needs the
    tensorboard package), figures/
    (one Fig. 7 figure per epoch), inpaint.png (the final one), model.keras,
    metrics.json, wall_clock.json, and saved_model/ with ``export``.

    Rerunning with the same config resumes an interrupted run (model and all
    three optimizers' state, from ``backup/``); a finished run is not trained
    again. Returns the metrics dict.
    """
    prepare_run_dir(output_dir, config)
    metrics_path = os.path.join(output_dir, "metrics.json")
    if os.path.exists(metrics_path):
        with open(metrics_path) as f:
            metrics = json.load(f)
        print(f"{output_dir} is complete; metrics: {metrics_path}")
        return metrics

    start = time.perf_counter()
    before = _elapsed_before(output_dir)
    keras.utils.set_random_seed(config.seed)
    x_train, x_test = load_images(config)
    if len(x_train) < config.batch_size:
        raise ValueError(
            f"{len(x_train)} training images are fewer than one batch of "
            f"batch_size={config.batch_size}; lower --batch-size."
        )
    masks = evaluation_masks(config, len(x_test), x_test.shape[1])
    steps_per_epoch = len(x_train) // config.batch_size
    model = compile_model(
        build_model(config, x_test.shape[1:], steps_per_epoch), config
    )

    n_monitor = min(config.monitor_examples, len(x_test))
    n_fig = min(config.figure_examples, len(x_test))
    tensorboard_dir = (
        os.path.join(output_dir, "tensorboard") if _has_tensorboard() else None
    )
    callbacks = [
        EpochTimer(steps_per_epoch * config.batch_size),
        WallClock(os.path.join(output_dir, "wall_clock.json"), before),
        InpaintingFigures(
            x_test[:n_fig],
            masks[:n_fig],
            os.path.join(output_dir, "figures"),
            tensorboard_dir,
        ),
        keras.callbacks.CSVLogger(os.path.join(output_dir, "log.csv"), append=True),
    ]
    if tensorboard_dir is not None:
        callbacks.append(
            keras.callbacks.TensorBoard(tensorboard_dir, write_graph=False)
        )
    # Last, so that it saves only after the others have written their state.
    callbacks.append(
        keras.callbacks.BackupAndRestore(os.path.join(output_dir, "backup"))
    )
    model.fit(
        train_dataset(config, x_train),
        validation_data=eval_dataset(
            x_test[:n_monitor], masks[:n_monitor], config.eval_batch_size
        ),
        epochs=config.epochs,
        callbacks=callbacks,
        shuffle=False,  # train_dataset shuffles (and re-pairs random masks).
    )
    if config.bn_recalibration_batches:
        model.recalibrate_batch_norm(
            train_dataset(config, x_train), config.bn_recalibration_batches
        )
    train_wall = before + time.perf_counter() - start

    methods = score_methods(model, x_test, masks, config, config.method)
    model.save(os.path.join(output_dir, "model.keras"))
    inpainting_figure(
        model,
        x_test[:n_fig],
        masks[:n_fig],
        os.path.join(output_dir, "inpaint.png"),
        title=f"{config.method} on {dataset_label(config.dataset)}",
    )
    if config.export:
        export_model(model, os.path.join(output_dir, "saved_model"), x_test.shape[1:])

    log = _read_log(os.path.join(output_dir, "log.csv"))
    speeds = [float(r["train_samples_per_second"]) for r in log[1:]] or [
        float(r["train_samples_per_second"]) for r in log
    ]
    results = {
        "methods": methods,
        "method": config.method,
        "dataset": config.dataset,
        "mask": config.mask,
        "n_train": int(len(x_train)),
        "n_test": int(len(x_test)),
        "epochs": len(log),
        "steps": {
            "generator": int(model.g_optimizer.iterations),
            "local_discriminator": int(model.local_d_optimizer.iterations),
            "global_discriminator": int(model.global_d_optimizer.iterations),
        },
        "warmup_steps": model.warmup_steps,
        "parameters": {
            name: int(sum(np.prod(v.shape) for v in layer.weights))
            for name, layer in (
                ("encoder", model.encoder),
                ("generator", model.generator),
                ("local_discriminator", model.local_discriminator),
                ("global_discriminator", model.global_discriminator),
            )
        },
        "train_images_per_second": float(np.median(speeds)) if speeds else None,
        "train_wall_seconds": train_wall,
        "wall_seconds": before + time.perf_counter() - start,
    }
    from cram_keras.platform_info import describe

    results["hardware"] = describe()
    write_json(metrics_path, results)
    print(json.dumps(results, indent=2, sort_keys=True))
    return results


def evaluate_checkpoint(config, checkpoint, output_dir):
    """Scores a saved inpainter and the baselines on ``config``'s test set;
    writes ``eval_metrics.json`` and ``eval_inpaint.png`` into ``output_dir``."""
    model = load_checkpoint(checkpoint)
    _, x_test = load_images(config)
    masks = evaluation_masks(config, len(x_test), x_test.shape[1])
    method = "cnn_encoder" if isinstance(model.encoder, CNNEncoder) else "cram"
    start = time.perf_counter()
    results = {
        "methods": score_methods(model, x_test, masks, config, method),
        "checkpoint": os.path.abspath(checkpoint),
        "dataset": config.dataset,
        "mask": config.mask,
        "n_test": int(len(x_test)),
    }
    results["wall_seconds"] = time.perf_counter() - start
    os.makedirs(output_dir, exist_ok=True)
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
