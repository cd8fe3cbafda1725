"""E2: CRAM classification with a clue (Chung & Cho 2018, Sections III-B1,
IV-A and V-A) on cluttered translated MNIST, with the clue ablation and a
keras-tuner search over glimpse counts.

The paper's own classification experiment (Section VI-A) is "work in
progress": it reports no number. We run CRAM on the benchmark of its parent
model RAM and print the published anchors beside ours (DESIGN.md, E2):

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
  (`contrast_pseudo_masks`: pixels far from the median border colour, the
  "background prior" of classical saliency detection). A network trained
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
a few epochs per clue; see ``benchmarks/cram_cls_budget.py`` for the
committed command, its wall time and ``benchmarks/results/cram_cls_budget.json``.
"""

import csv
import dataclasses
import json
import os
import time

import keras
import numpy as np

from cram_keras.experiments.config import config_to_dict, prepare_run_dir, write_json
from cram_keras.losses import clue_loss
from cram_keras.models.cram import CRAMClassifier, CRAMEncoder
from cram_keras.models.saliency import SaliencyNetwork
from cram_keras.training.callbacks import EpochTimer, ResumableEarlyStopping, WallClock

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
    dataset: str = "cluttered60"
    clue: str | None = None
    data_dir: str | None = None
    cache_dir: str | None = None  # None: $CRAM_KERAS_CACHE or ~/.cache/cram_keras
    n_train: int | None = None
    n_valid: int = 5000
    n_test: int | None = None
    data_seed: int = 1234
    # Model (CRAMEncoder, CRAMClassifier).
    glimpses: int = 4
    glimpse_size: int = 12
    core_units: int = 512
    context_filters: list = dataclasses.field(default_factory=lambda: [16, 32, 64])
    context_units: int = 256
    localization_filters: list = dataclasses.field(default_factory=lambda: [8, 16, 32])
    localization_units: int = 256
    glimpse_filters: list = dataclasses.field(default_factory=lambda: [16, 32, 64])
    glimpse_units: int = 256
    decoder_units: list = dataclasses.field(default_factory=lambda: [256, 256])
    beta: float | None = None  # weight of the clue loss
    # Optimisation (paper V-A: Adam, 1e-4).
    epochs: int = 50
    batch_size: int = 64
    learning_rate: float = 1e-4
    patience: int = 20
    seed: int = 0
    jit_compile: bool = False  # XLA was slower on CPU for this model
    run_eagerly: bool = False
    # Saliency network (clue="saliency").
    saliency_filters: list = dataclasses.field(default_factory=lambda: [16, 32, 64])
    saliency_epochs: int = 10
    saliency_batch_size: int = 64
    saliency_learning_rate: float = 1e-3  # Adam's default (paper V-A)
    saliency_threshold: float = 0.5
    saliency_model: str | None = None  # a trained SaliencyNetwork (.keras)
    # keras-tuner search (tune=True): glimpses x learning rate.
    tune: bool = False
    max_trials: int = 16
    glimpse_range: list = dataclasses.field(default_factory=lambda: [1, 8])
    learning_rate_range: list = dataclasses.field(default_factory=lambda: [1e-5, 1e-3])
    # Outputs.
    figure_examples: int = 4
    export: bool = False

    def __post_init__(self):
        def resolve(name, value):
            object.__setattr__(self, name, value)

        _choice("dataset", self.dataset, DATASETS)
        svhn = self.dataset == "svhn"
        if self.clue is None:
            resolve("clue", "saliency" if svhn else "oracle")
        _choice("clue", self.clue, CLUES)
        if svhn and self.clue == "oracle":
            raise ValueError(
                "SVHN has no ground-truth saliency, so there is no oracle clue. "
                "Use clue='saliency' (the default for svhn) or 'none'. "
                f"Received: dataset={self.dataset!r}, clue={self.clue!r}"
            )
        if self.beta is None:
            resolve("beta", 0.0 if self.clue == "none" else DEFAULT_BETA)
        if (
            isinstance(self.beta, bool)
            or not isinstance(self.beta, (int, float))
            or not self.beta >= 0
        ):
            raise ValueError(
                f"`beta` (the clue-loss weight) must be a number >= 0. "
                f"Received: beta={self.beta!r}"
            )
        resolve("beta", float(self.beta))
        if self.clue == "none" and self.beta != 0:
            raise ValueError(
                "clue='none' is the ablation without a clue: its clue is all "
                "zeros and it has no clue loss, so `beta` must be 0 (or left "
                f"unset). Received: beta={self.beta!r}"
            )
        _positive_int("n_valid", self.n_valid)
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
            _positive_int(name, getattr(self, name))
        for name in ("seed", "data_seed", "figure_examples"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(
                    f"`{name}` must be an integer >= 0. Received: {name}={value!r}"
                )
        for name in _LIST_FIELDS:
            resolve(name, _int_list(name, getattr(self, name)))
        for name in ("learning_rate", "saliency_learning_rate"):
            value = getattr(self, name)
            if (
                isinstance(value, bool)
                or not isinstance(value, (int, float))
                or not value > 0
            ):
                raise ValueError(f"`{name}` must be > 0. Received: {name}={value!r}")
            resolve(name, float(value))
        if not (
            isinstance(self.saliency_threshold, (int, float))
            and 0 < self.saliency_threshold < 1
        ):
            raise ValueError(
                "`saliency_threshold` must be in (0, 1). "
                f"Received: saliency_threshold={self.saliency_threshold!r}"
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
        glimpses = _int_list("glimpse_range", self.glimpse_range)
        if len(glimpses) != 2 or glimpses[0] > glimpses[1]:
            raise ValueError(
                "`glimpse_range` must be [low, high] with 1 <= low <= high. "
                f"Received: glimpse_range={self.glimpse_range!r}"
            )
        resolve("glimpse_range", glimpses)
        rates = self.learning_rate_range
        if (
            not isinstance(rates, (list, tuple))
            or len(rates) != 2
            or not all(isinstance(r, (int, float)) and r > 0 for r in rates)
            or rates[0] > rates[1]
        ):
            raise ValueError(
                "`learning_rate_range` must be [low, high] with 0 < low <= high. "
                f"Received: learning_rate_range={rates!r}"
            )
        resolve("learning_rate_range", [float(r) for r in rates])
        if self.run_eagerly and self.jit_compile:
            raise ValueError(
                "`run_eagerly` and `jit_compile` exclude each other. "
                f"Received: run_eagerly={self.run_eagerly}, jit_compile={self.jit_compile}"
            )


def _choice(name, value, choices):
    if value not in choices:
        raise ValueError(
            f"`{name}` must be one of {choices}. Received: {name}={value!r}"
        )


def _positive_int(name, value):
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(
            f"`{name}` must be a positive integer. Received: {name}={value!r}"
        )


def _int_list(name, value):
    if not isinstance(value, (list, tuple)) or not value:
        raise ValueError(
            f"`{name}` must be a non-empty list of positive integers. "
            f"Received: {name}={value!r}"
        )
    for item in value:
        _positive_int(name, item)
    return list(value)


def smoke_config(**overrides):
    """Seconds-long end-to-end run on a tiny generated set (used by the tests):
    a tiny CRAM (2 glimpses, 16-unit core, one-layer CNNs), run eagerly (no
    tracing: faster than a compiled step for a few batches)."""
    base = dict(
        n_train=32,
        n_valid=16,
        n_test=16,
        glimpses=2,
        glimpse_size=8,
        core_units=16,
        context_filters=[4],
        context_units=8,
        localization_filters=[4],
        localization_units=8,
        glimpse_filters=[4],
        glimpse_units=8,
        decoder_units=[16, 16],
        epochs=2,
        batch_size=16,
        learning_rate=1e-3,
        patience=5,
        run_eagerly=True,
        saliency_filters=[4, 8],
        saliency_epochs=2,
        saliency_batch_size=16,
        max_trials=2,
        figure_examples=2,
    )
    base.update({k: v for k, v in overrides.items() if v is not None})
    return Config(**base)


# === Data and clues ===


def load_splits(config):
    """`{split: {"images", "labels", "saliency", "boxes"}}`, uint8 NHWC images.

    `saliency` (ground-truth masks, uint8 {0, 1}) and `boxes` are `None` for
    SVHN.
    """
    if config.dataset == "svhn":
        from cram_keras.data.svhn import load_svhn

        data = load_svhn(config.data_dir)
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
        }
    from cram_keras.data.translated import load_cluttered_translated

    data = load_cluttered_translated(
        config.data_dir,
        preset=config.dataset,
        cache_dir=config.cache_dir,
        seed=config.data_seed,
        n_train=config.n_train,
        n_valid=config.n_valid,
        n_test=config.n_test,
        dtype="uint8",
    )
    return {
        split: {
            "images": data[split].images,
            "labels": data[split].labels,
            "saliency": data[split].saliency,
            "boxes": data[split].boxes,
        }
        for split in ("train", "valid", "test")
    }


def contrast_pseudo_masks(images, chunk=8192):
    """Rough saliency masks for SVHN crops, without labels (background prior).

    Grey level `g` (channel mean, [0, 1]); background `b` = the median of the
    image's 1-pixel border; contrast `d = |g - b|`; a pixel is salient where
    `d > 0.5 * percentile_99(d)` and the image has some contrast
    (`percentile_99(d) > 0.05`). SVHN crops are centred on a digit whose
    colour differs from its surroundings, so this marks the digit strokes
    (and parts of neighbouring digits): a rough clue, as the paper's.

    Args:
        images: uint8 (N, H, W, C).

    Returns:
        uint8 (N, H, W, 1) in {0, 1}.
    """
    out = np.empty(images.shape[:3] + (1,), np.uint8)
    for start in range(0, len(images), chunk):
        grey = images[start : start + chunk].astype(np.float32).mean(-1) / 255.0
        border = np.concatenate(
            [grey[:, 0, :], grey[:, -1, :], grey[:, 1:-1, 0], grey[:, 1:-1, -1]], axis=1
        )
        contrast = np.abs(grey - np.median(border, axis=1)[:, None, None])
        peak = np.percentile(contrast.reshape(len(grey), -1), 99, axis=1)[:, None, None]
        mask = (contrast > 0.5 * peak) & (peak > 0.05)
        out[start : start + chunk, ..., 0] = mask
    return out


def mask_iou(predicted, target):
    """Mean over images of |P & T| / |P | T| (1 where both masks are empty)."""
    p = np.asarray(predicted).reshape(len(predicted), -1) > 0
    t = np.asarray(target).reshape(len(target), -1) > 0
    inter = np.logical_and(p, t).sum(1)
    union = np.logical_or(p, t).sum(1)
    iou = np.where(union > 0, inter / np.maximum(union, 1), 1.0)
    return float(iou.mean()) if len(iou) else float("nan")


def _as_float(images):
    images = np.asarray(images)
    return images.astype("float32") / 255.0 if images.dtype == np.uint8 else images


def _image_dataset(images, targets, batch_size, shuffle_seed=None):
    """uint8 images (and optional uint8 targets) -> float32 `tf.data`."""
    import tensorflow as tf

    arrays = images if targets is None else (images, targets)
    ds = tf.data.Dataset.from_tensor_slices(arrays)
    if shuffle_seed is not None:
        ds = ds.shuffle(len(images), seed=shuffle_seed, reshuffle_each_iteration=True)

    def to_float(x, y=None):
        x = tf.cast(x, tf.float32) / 255.0
        return x if y is None else (x, tf.cast(y, tf.float32))

    return (
        ds.batch(batch_size)
        .map(to_float, num_parallel_calls=tf.data.AUTOTUNE)
        .prefetch(tf.data.AUTOTUNE)
    )


def saliency_targets(config, splits):
    """The masks the saliency network learns: ground truth, or SVHN pseudo-masks."""
    if config.dataset == "svhn":
        return {s: contrast_pseudo_masks(splits[s]["images"]) for s in splits}
    return {s: splits[s]["saliency"] for s in splits}


def train_saliency_network(config, images, masks, valid_images, valid_masks, directory):
    """Trains a `SaliencyNetwork` (Adam, binary cross-entropy), best epoch by
    validation loss; writes `directory/log.csv` and `best.weights.h5`."""
    os.makedirs(directory, exist_ok=True)
    net = SaliencyNetwork(filters=config.saliency_filters, name="saliency")
    net.compile(
        optimizer=keras.optimizers.Adam(config.saliency_learning_rate),
        loss=keras.losses.BinaryCrossentropy(),
        run_eagerly=config.run_eagerly,
    )
    net(_as_float(images[:2]))
    best = os.path.join(directory, "best.weights.h5")
    net.fit(
        _image_dataset(images, masks, config.saliency_batch_size, config.seed),
        validation_data=_image_dataset(
            valid_images, valid_masks, config.saliency_batch_size
        ),
        epochs=config.saliency_epochs,
        callbacks=[
            keras.callbacks.ModelCheckpoint(
                best, monitor="val_loss", save_best_only=True, save_weights_only=True
            ),
            keras.callbacks.CSVLogger(os.path.join(directory, "log.csv")),
        ],
        shuffle=False,  # the dataset shuffles itself
        verbose=2,
    )
    net.load_weights(best)
    return net


def saliency_clues(net, images, threshold=0.5, batch_size=256):
    """Binary clues `net(images) > threshold`, uint8 (N, H, W, 1)."""
    out = np.empty(images.shape[:3] + (1,), np.uint8)
    for start in range(0, len(images), batch_size):
        x = _as_float(images[start : start + batch_size])
        probs = keras.ops.convert_to_numpy(net(x, training=False))
        out[start : start + batch_size] = probs > threshold
    return out


def _save_clues(path, clues):
    tmp = path + ".tmp.npz"
    packed = {f"{s}_bits": np.packbits(c.reshape(-1)) for s, c in clues.items()}
    shapes = {f"{s}_shape": np.array(c.shape) for s, c in clues.items()}
    np.savez(tmp, **packed, **shapes)
    os.replace(tmp, path)


def _load_clues(path, splits):
    with np.load(path) as f:
        return {
            s: np.unpackbits(f[f"{s}_bits"], count=int(np.prod(f[f"{s}_shape"])))
            .reshape(tuple(f[f"{s}_shape"]))
            .astype(np.uint8)
            for s in splits
        }


def prepare_clues(config, splits, output_dir):
    """The clue of every split and, for `saliency`, the saliency metrics.

    Returns `(clues, info)`: `clues[split]` is uint8 (N, H, W, 1) in {0, 1},
    or `None` for `clue="none"` (the datasets then feed zeros); `info` has
    the saliency network's IoU against the masks it learned, per split.
    For `saliency`, the network and the clues are kept in
    `output_dir/saliency/`, so a resumed run does not train it again.
    """
    if config.clue == "none":
        return {s: None for s in splits}, {}
    if config.clue == "oracle":
        return {s: splits[s]["saliency"] for s in splits}, {}

    directory = os.path.join(output_dir, "saliency")
    clues_path = os.path.join(directory, "clues.npz")
    info_path = os.path.join(directory, "metrics.json")
    if os.path.exists(clues_path) and os.path.exists(info_path):
        with open(info_path) as f:
            return _load_clues(clues_path, splits), json.load(f)

    os.makedirs(directory, exist_ok=True)
    targets = saliency_targets(config, splits)
    model_path = os.path.join(directory, "saliency.keras")
    start = time.perf_counter()
    if config.saliency_model is not None:
        net = keras.models.load_model(config.saliency_model)
        source = config.saliency_model
    elif os.path.exists(model_path):
        net = keras.models.load_model(model_path)
        source = "trained in this run"
    else:
        keras.utils.set_random_seed(config.seed)
        net = train_saliency_network(
            config,
            splits["train"]["images"],
            targets["train"],
            splits["valid"]["images"],
            targets["valid"],
            directory,
        )
        net.save(model_path)
        source = "trained in this run"
    clues = {
        s: saliency_clues(net, splits[s]["images"], config.saliency_threshold)
        for s in splits
    }
    kind = "pseudo_masks" if config.dataset == "svhn" else "ground_truth"
    info = {
        "saliency_source": source,
        "saliency_targets": kind,
        "saliency_seconds": time.perf_counter() - start,
        "saliency_parameters": int(net.count_params()),
    }
    for s in splits:
        info[f"saliency_{s}_iou"] = mask_iou(clues[s], targets[s])
        info[f"saliency_{s}_fraction"] = float(clues[s].mean())
    _save_clues(clues_path, clues)
    write_json(info_path, info)
    return clues, info


def make_dataset(images, clues, labels, batch_size, shuffle_seed=None):
    """uint8 images and clues -> batched `((images, clue), labels)` float32.

    `clues=None` feeds an all-zero clue (the `none` ablation).
    """
    import tensorflow as tf

    labels = np.asarray(labels).astype("int32")
    if clues is None:
        ds = tf.data.Dataset.from_tensor_slices((images, labels))
    else:
        ds = tf.data.Dataset.from_tensor_slices((images, clues, labels))
    if shuffle_seed is not None:
        ds = ds.shuffle(len(images), seed=shuffle_seed, reshuffle_each_iteration=True)

    def to_float(*batch):
        x = tf.cast(batch[0], tf.float32) / 255.0
        if len(batch) == 2:
            clue = tf.zeros_like(x[..., :1])
        else:
            clue = tf.cast(batch[1], tf.float32)
        return (x, clue), batch[-1]

    return (
        ds.batch(batch_size)
        .map(to_float, num_parallel_calls=tf.data.AUTOTUNE)
        .prefetch(tf.data.AUTOTUNE)
    )


def _clue_batch(clues, images, index):
    if clues is None:
        return np.zeros(images[index].shape[:-1] + (1,), "float32")
    return np.asarray(clues[index], "float32")


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
        jit_compile=config.jit_compile,
        run_eagerly=config.run_eagerly,
    )
    return model


def predict_glimpses(model, images, clues, batch_size=256):
    """`(logits, tau, patches)` for uint8 images and clues (None: zeros)."""
    outputs = []
    for start in range(0, len(images), batch_size):
        index = slice(start, start + batch_size)
        x = _as_float(images[index])
        c = _clue_batch(clues, images, index)
        outputs.append(
            [
                keras.ops.convert_to_numpy(t)
                for t in model([x, c], training=False, return_glimpses=True)
            ]
        )
    return tuple(np.concatenate(parts) for parts in zip(*outputs, strict=True))


def box_masks(boxes, height, width):
    """(N, H, W, 1) float32 masks, 1 inside each (y0, x0, y1, x1) box."""
    ys = np.arange(height)[None, :, None]
    xs = np.arange(width)[None, None, :]
    b = np.asarray(boxes)[:, :, None, None]
    inside = (ys >= b[:, 0]) & (ys < b[:, 2]) & (xs >= b[:, 1]) & (xs < b[:, 3])
    return inside[..., None].astype("float32")


def glimpse_statistics(model, split, clues, limit=2000):
    """Where the glimpses went on the first `limit` images of a split.

    `glimpse_in_digit_box`: mean fraction of the glimpse area inside the
    digit's 28x28 frame (ground truth; cluttered MNIST only);
    `glimpse_scale`: mean half-size `s` of the glimpse window (1 = the image).
    """
    images = split["images"][:limit]
    clue = None if clues is None else clues[:limit]
    _, tau, _ = predict_glimpses(model, images, clue)
    stats = {"glimpse_scale": float(tau[..., 0].mean())}
    if split["boxes"] is not None:
        masks = box_masks(split["boxes"][:limit], *images.shape[1:3])
        outside = clue_loss(masks, tau, model.encoder.glimpse_size)
        stats["glimpse_in_digit_box"] = 1.0 - float(keras.ops.convert_to_numpy(outside))
    return stats


# === Figures ===


def _theta(tau):
    s, tx, ty = tau
    return np.array([[s, 0.0, tx], [0.0, s, ty]])


def _draw_glimpses(images, clues, labels, predictions, taus, patches, upto, title=None):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from cram_keras.visualization import transform_outline

    n, steps = taus.shape[0], taus.shape[1]
    colors = plt.get_cmap("tab10")
    cols = 2 + steps
    fig, axes = plt.subplots(
        n, cols, figsize=(1.6 * cols, 1.7 * n + 0.3), squeeze=False
    )
    height, width = images.shape[1:3]
    for i in range(n):
        image = images[i, ..., 0] if images.shape[-1] == 1 else images[i]
        panels = (
            (axes[i, 0], image, f"label {labels[i]} pred {predictions[i]}"),
            (axes[i, 1], clues[i, ..., 0], "clue"),
        )
        for ax, picture, text in panels:
            ax.imshow(picture, cmap="gray", vmin=0, vmax=1)
            ax.set_title(text, fontsize=7)
            for t in range(upto + 1):
                outline = transform_outline(_theta(taus[i, t]), height, width)
                ax.plot(
                    outline[:, 0],
                    outline[:, 1],
                    color=colors(t % 10),
                    lw=2.0 if t == upto else 1.0,
                )
            ax.set_xlim(-0.5, width - 0.5)
            ax.set_ylim(height - 0.5, -0.5)
        for t in range(steps):
            ax = axes[i, 2 + t]
            if t <= upto:
                crop = (
                    patches[i, t, ..., 0] if patches.shape[-1] == 1 else patches[i, t]
                )
                ax.imshow(np.clip(crop, 0, 1), cmap="gray", vmin=0, vmax=1)
            else:
                ax.set_facecolor("0.92")
            ax.set_title(f"glimpse {t + 1}", fontsize=7, color=colors(t % 10))
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    if title:
        fig.suptitle(title, fontsize=8)
    fig.tight_layout()
    return fig


def plot_glimpses(
    model, images, clues, labels, png_path=None, gif_path=None, title=None
):
    """Where CRAM looked: boxes over the input and the clue, one crop per step.

    Writes a PNG (every glimpse; box colour = step) and an animated GIF (one
    frame per glimpse, the current box bold). `images` uint8 or float,
    `clues` uint8/float or `None` (zeros).
    """
    logits, taus, patches = predict_glimpses(model, images, clues)
    x = _as_float(images)
    c = (
        np.zeros(x.shape[:3] + (1,), "float32")
        if clues is None
        else np.asarray(clues, "float32")
    )
    predictions = np.argmax(logits, axis=-1)
    labels = np.asarray(labels)
    steps = taus.shape[1]
    import matplotlib.pyplot as plt

    if png_path:
        fig = _draw_glimpses(x, c, labels, predictions, taus, patches, steps - 1, title)
        fig.savefig(png_path, dpi=110)
        plt.close(fig)
    if gif_path:
        from PIL import Image

        frames = []
        for t in range(steps):
            fig = _draw_glimpses(x, c, labels, predictions, taus, patches, t, title)
            fig.set_dpi(80)
            fig.canvas.draw()
            frames.append(
                Image.fromarray(np.asarray(fig.canvas.buffer_rgba())[..., :3])
            )
            plt.close(fig)
        durations = [700] * (steps - 1) + [1800]
        frames[0].save(
            gif_path,
            save_all=True,
            append_images=frames[1:],
            duration=durations,
            loop=0,
        )
    return png_path, gif_path


# === Export ===


def export_model(model, path, image_shape):
    """SavedModel: `serve(images, clue)` -> class probabilities (B, 10).

    `images` float32 (B, H, W, C) in [0, 1]; `clue` float32 (B, H, W, 1) in
    {0, 1} (all zeros for a model trained with `clue="none"`; for
    `clue="saliency"`, the thresholded `saliency/saliency.keras` output).
    """
    from cram_keras.training.export import export_saved_model

    def serve(images, clue):
        return keras.ops.softmax(model([images, clue], training=False), axis=-1)

    height, width = image_shape[:2]
    return export_saved_model(
        path,
        serve,
        [
            ("images", (None,) + tuple(image_shape), "float32"),
            ("clue", (None, height, width, 1), "float32"),
        ],
        model,
    )


# === Training ===


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


def _evaluate(model, datasets):
    results = {}
    for name, ds in datasets.items():
        scores = model.evaluate(ds, return_dict=True, verbose=0)
        results[f"{name}_error"] = 1.0 - float(scores["accuracy"])
        results[f"{name}_loss"] = float(scores["loss"])
        if "clue_loss" in scores:
            results[f"{name}_clue_loss"] = float(scores["clue_loss"])
    return results


def _fit(config, model, train, valid, n_train, output_dir, before):
    early_stopping = ResumableEarlyStopping(
        output_dir, monitor="val_accuracy", mode="max", patience=config.patience
    )
    callbacks = [
        EpochTimer(n_train),
        early_stopping,
        WallClock(os.path.join(output_dir, "wall_clock.json"), before),
        keras.callbacks.CSVLogger(os.path.join(output_dir, "log.csv"), append=True),
        keras.callbacks.TensorBoard(os.path.join(output_dir, "tensorboard")),
        # Last, so that it saves only after the others have written their state.
        keras.callbacks.BackupAndRestore(os.path.join(output_dir, "backup")),
    ]
    model.fit(
        train,
        validation_data=valid,
        epochs=config.epochs,
        callbacks=callbacks,
        shuffle=False,  # the dataset shuffles itself
        verbose=2,
    )
    early_stopping.restore_best()
    log = _read_log(os.path.join(output_dir, "log.csv"))
    speeds = [float(r["train_samples_per_second"]) for r in log[1:]] or [
        float(r["train_samples_per_second"]) for r in log
    ]
    return {
        "epochs": len(log),
        "best_epoch": early_stopping.state["best_epoch"],
        "valid_error_per_epoch": [1.0 - float(r["val_accuracy"]) for r in log],
        "train_error_per_epoch": [1.0 - float(r["accuracy"]) for r in log],
        "train_samples_per_second": float(np.median(speeds)) if speeds else None,
    }


def _search(config, train, valid, example_inputs, output_dir):
    from cram_keras.training import tuner as tuning

    hypermodel = tuning.GlimpseHyperModel(
        lambda glimpses, rate: compile_model(
            build_model(config, glimpses), config, rate
        ),
        example_inputs=example_inputs,
        glimpse_range=tuple(config.glimpse_range),
        learning_rate_range=tuple(config.learning_rate_range),
    )
    tuner = tuning.glimpse_search(
        hypermodel, output_dir, "tuner", max_trials=config.max_trials, seed=config.seed
    )
    tuner.search(
        train,
        validation_data=valid,
        epochs=config.epochs,
        callbacks=[
            keras.callbacks.TensorBoard(os.path.join(output_dir, "tensorboard"))
        ],
        shuffle=False,  # the dataset shuffles itself
        verbose=2,
    )
    rows = tuning.trials_table(tuner)
    tuning.write_trials_table(
        rows,
        os.path.join(output_dir, "trials.csv"),
        os.path.join(output_dir, "trials.json"),
    )
    best = tuning.best_configuration(tuner)
    resolved = dataclasses.replace(
        config,
        glimpses=best["num_glimpses"],
        learning_rate=best["learning_rate"],
        tune=False,
    )
    write_json(
        os.path.join(output_dir, "best_config.json"),
        dict(best, config=config_to_dict(resolved)),
    )
    model = tuning.load_trial_model(tuner, best["trial_id"])
    row = next(r for r in rows if r["trial_id"] == best["trial_id"])
    summary = {
        "epochs": row["epochs"],
        "best_epoch": row["best_epoch"],
        "valid_error_per_epoch": row["val_error_per_epoch"],
        "trials": len(rows),
        "best_trial": best["trial_id"],
    }
    return model, best, summary


def train_and_evaluate(config, output_dir):
    """Trains CRAM with `config.clue` (or runs the glimpse search), evaluates
    the best validation epoch on the test set, and writes into `output_dir`:

    config.json, log.csv, tensorboard/, early_stopping.json,
    best.weights.h5, model.keras, metrics.json, glimpses.png, glimpses.gif,
    saliency/ (clue="saliency": the network, its log, clues.npz, metrics),
    saved_model/ with `export`; with `tune`: tuner/ (keras-tuner project),
    trials.csv, trials.json and best_config.json instead of the single
    run's log and checkpoints.

    Rerunning with the same config resumes an interrupted run (or search); a
    finished run is not trained again. Returns the metrics dict.
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
    splits = load_splits(config)
    clues, saliency_info = prepare_clues(config, splits, output_dir)

    x_train = splits["train"]["images"]
    train = make_dataset(
        x_train,
        clues["train"],
        splits["train"]["labels"],
        config.batch_size,
        config.seed,
    )
    valid, test = (
        make_dataset(
            splits[s]["images"], clues[s], splits[s]["labels"], config.batch_size
        )
        for s in ("valid", "test")
    )
    example = [
        _as_float(x_train[:2]),
        _clue_batch(clues["train"], x_train, slice(0, 2)),
    ]

    keras.utils.set_random_seed(config.seed)
    if config.tune:
        model, best, summary = _search(config, train, valid, example, output_dir)
        glimpses, learning_rate = best["num_glimpses"], best["learning_rate"]
    else:
        model = compile_model(build_model(config), config)
        model(example)  # build, so that BackupAndRestore can load
        summary = _fit(config, model, train, valid, len(x_train), output_dir, before)
        glimpses, learning_rate = config.glimpses, config.learning_rate

    results = _evaluate(model, {"valid": valid, "test": test})
    results.update(summary)
    results.update(saliency_info)
    results.update(
        glimpse_statistics(model, splits["test"], clues["test"]),
        dataset=config.dataset,
        clue=config.clue,
        beta=config.beta,
        num_glimpses=glimpses,
        learning_rate=learning_rate,
        n_train=len(x_train),
        parameters=int(model.count_params()),
    )

    model.save(os.path.join(output_dir, "model.keras"))
    n_fig = min(config.figure_examples, len(splits["test"]["images"]))
    if n_fig:
        test_clues = clues["test"]
        plot_glimpses(
            model,
            splits["test"]["images"][:n_fig],
            None if test_clues is None else test_clues[:n_fig],
            splits["test"]["labels"][:n_fig],
            os.path.join(output_dir, "glimpses.png"),
            os.path.join(output_dir, "glimpses.gif"),
            title=f"CRAM, clue: {config.clue}",
        )
    if config.export:
        export_model(model, os.path.join(output_dir, "saved_model"), x_train.shape[1:])
    results["wall_seconds"] = before + time.perf_counter() - start
    write_json(metrics_path, results)
    print(json.dumps(results, indent=2, sort_keys=True))
    return results
