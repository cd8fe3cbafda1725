"""E1: RNN-SPN vs FFN-SPN vs CNN on cluttered MNIST sequences (Sønderby et
al. 2015, Table 1 and Fig. 3).

Paper setting (a GPU; the released code's protocol)::

    python train_rnn_spn.py --model rnn_spn --downsample 2   # Table 1: 1.5 %
    python train_rnn_spn.py --model ffn_spn --downsample 2   # Table 1: 2.0 %
    python train_rnn_spn.py --model conv                     # Table 1: 2.9 %

RMSprop(5e-4, rho 0.9, eps 1e-6), gradients clipped elementwise to +-1 and
then to global norm 5, learning rate / 1.5 on the code's schedule after epoch
30, batch 100, up to 300 epochs, early stopping after 50 epochs without a
better validation per-digit error, test errors at the best validation epoch.

CPU-budget setting: the same architecture and data with ``--epochs`` small
(see ``benchmarks/rnn_spn_budget.py`` for the committed command and its wall
time).
"""

import dataclasses
import json
import os
import time

import keras
import numpy as np

from cram_keras.experiments.config import prepare_run_dir, write_json
from cram_keras.models.rnn_spn import MODELS
from cram_keras.training.callbacks import (
    EpochTimer,
    ResumableEarlyStopping,
    WallClock,
    step_decay_after,
)
from cram_keras.training.metrics import sequence_metrics

MODEL_NAMES = tuple(MODELS)


@dataclasses.dataclass(frozen=True)
class Config:
    """Every setting of an RNN-SPN run; the defaults are the paper setting."""

    # Model.
    model: str = "rnn_spn"
    downsample: float = 2.0
    dropout: float = 0.0
    # Optimisation (released code).
    epochs: int = 300
    batch_size: int = 100
    learning_rate: float = 5e-4
    rho: float = 0.9
    epsilon: float = 1e-6
    clip_value: float = 1.0
    clip_norm: float = 5.0
    lr_decay_factor: float = 1.5
    lr_decay_interval: int = 10
    lr_no_decay_epochs: int = 30
    patience: int = 50
    # XLA measured slower on CPU for all three models (benchmarks/rnn_spn_speed.py).
    jit_compile: bool = False
    seed: int = 0
    # Data.
    data_dir: str | None = None
    cache_dir: str | None = None  # None: $CRAM_KERAS_CACHE or ~/.cache/cram_keras
    n_train: int = 60000
    n_valid: int = 10000
    n_test: int = 10000
    data_seed: int = 1234
    # Outputs.
    figure_examples: int = 4
    export: bool = False

    def __post_init__(self):
        if self.model not in MODEL_NAMES:
            raise ValueError(
                f"`model` must be one of {MODEL_NAMES}. Received: model={self.model!r}"
            )
        if not self.downsample >= 1.0:
            raise ValueError(
                f"`downsample` must be >= 1. Received: downsample={self.downsample!r}"
            )
        for name in (
            "epochs",
            "batch_size",
            "patience",
            "n_train",
            "n_valid",
            "n_test",
        ):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(
                    f"`{name}` must be a positive integer. Received: {name}={value!r}"
                )


def smoke_config(**overrides):
    """Seconds-long end-to-end run on a tiny generated set (used by the tests)."""
    base = dict(
        epochs=2,
        batch_size=16,
        n_train=64,
        n_valid=32,
        n_test=32,
        patience=5,
        figure_examples=2,
    )
    base.update({k: v for k, v in overrides.items() if v is not None})
    return Config(**base)


def load_splits(config):
    """Cluttered MNIST sequences as uint8 images (N, 100, 100, 1) and labels (N, 3)."""
    from cram_keras.data.cluttered import load_cluttered_sequences

    data = load_cluttered_sequences(
        data_dir=config.data_dir,
        cache_dir=config.cache_dir,
        seed=config.data_seed,
        n_train=config.n_train,
        n_valid=config.n_valid,
        n_test=config.n_test,
        dtype="uint8",
    )
    return {
        split: (data[split].images, data[split].labels)
        for split in ("train", "valid", "test")
    }


def make_dataset(images, labels, batch_size, shuffle_seed=None):
    """uint8 NumPy arrays -> batched float32 [0, 1] ``tf.data.Dataset``."""
    import tensorflow as tf

    ds = tf.data.Dataset.from_tensor_slices((images, labels.astype("int32")))
    if shuffle_seed is not None:
        ds = ds.shuffle(len(images), seed=shuffle_seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size)

    def to_float(x, y):
        x = tf.cast(x, tf.float32)
        if images.dtype == np.uint8:
            x = x / 255.0
        return x, y

    return ds.map(to_float, num_parallel_calls=tf.data.AUTOTUNE).prefetch(
        tf.data.AUTOTUNE
    )


def build_model(config):
    cls = MODELS[config.model]
    kwargs = dict(dropout=config.dropout)
    if config.model != "conv":
        kwargs["downsample_factor"] = config.downsample
    return cls(name=config.model, **kwargs)


def compile_model(model, config):
    model.compile(
        optimizer=keras.optimizers.RMSprop(
            learning_rate=config.learning_rate, rho=config.rho, epsilon=config.epsilon
        ),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=sequence_metrics(),
        gradient_clip_value=config.clip_value,
        gradient_clip_norm=config.clip_norm,
        jit_compile=config.jit_compile,
    )
    return model


def _as_float(images):
    images = np.asarray(images)
    return images.astype("float32") / 255.0 if images.dtype == np.uint8 else images


def attention_figure(model, images, labels, path, align_corners=False):
    """Fig. 3 of the paper for ``model`` on a few images."""
    from cram_keras.visualization import plot_attention

    x = _as_float(images)
    if hasattr(model, "transforms"):
        logits, thetas = model(x, training=False, return_transforms=True)
        crops = keras.ops.convert_to_numpy(model.crops(x))
        thetas = keras.ops.convert_to_numpy(thetas)
    else:
        logits, thetas, crops = model(x, training=False), None, None
    predictions = np.argmax(keras.ops.convert_to_numpy(logits), axis=-1)
    return plot_attention(
        x, thetas, crops, labels, predictions, path, align_corners=align_corners
    )


def export_model(model, path, image_shape):
    """SavedModel: ``serve(images)`` -> per-step class probabilities (B, T, 10)."""
    from cram_keras.training.export import export_saved_model

    def serve(images):
        return keras.ops.softmax(model(images, training=False), axis=-1)

    return export_saved_model(
        path, serve, [("images", (None,) + tuple(image_shape), "float32")], model
    )


def _elapsed_before(output_dir):
    path = os.path.join(output_dir, "wall_clock.json")
    if os.path.exists(path):
        with open(path) as f:
            return float(json.load(f)["seconds"])
    return 0.0


def train_and_evaluate(config, output_dir):
    """Trains ``config.model``, evaluates it at the best validation epoch, and
    writes every artifact into ``output_dir``:

    config.json, log.csv, tensorboard/, early_stopping.json, best.weights.h5,
    model.keras, metrics.json, attention.png, and saved_model/ with --export.

    Rerunning with the same config resumes an interrupted run; a finished run
    is not trained again. Returns the metrics dict.
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
    splits = load_splits(config)
    x_train, y_train = splits["train"]
    model = compile_model(build_model(config), config)
    model(_as_float(x_train[:2]))  # build, so that BackupAndRestore can load

    train = make_dataset(x_train, y_train, config.batch_size, shuffle_seed=config.seed)
    valid = make_dataset(*splits["valid"], config.batch_size)
    test = make_dataset(*splits["test"], config.batch_size)

    early_stopping = ResumableEarlyStopping(
        output_dir, monitor="val_digit_accuracy", mode="max", patience=config.patience
    )
    callbacks = [
        EpochTimer(len(x_train)),
        keras.callbacks.LearningRateScheduler(
            lambda epoch: step_decay_after(
                epoch,
                config.learning_rate,
                config.lr_decay_factor,
                config.lr_decay_interval,
                config.lr_no_decay_epochs,
            )
        ),
        early_stopping,
        WallClock(os.path.join(output_dir, "wall_clock.json"), before),
        keras.callbacks.CSVLogger(os.path.join(output_dir, "log.csv"), append=True),
        keras.callbacks.TensorBoard(os.path.join(output_dir, "tensorboard")),
        # Last, so that it saves only after the others have written their state.
        # Kept after training too, so that a run killed between the end of fit
        # and metrics.json resumes at evaluation instead of from scratch.
        keras.callbacks.BackupAndRestore(
            os.path.join(output_dir, "backup"), delete_checkpoint=False
        ),
    ]
    model.fit(
        train,
        validation_data=valid,
        epochs=config.epochs,
        callbacks=callbacks,
        shuffle=False,  # the dataset shuffles itself
    )
    early_stopping.restore_best()

    results = {}
    for name, ds in (("valid", valid), ("test", test)):
        scores = model.evaluate(ds, return_dict=True, verbose=0)
        results[f"{name}_per_digit_error"] = 1.0 - float(scores["digit_accuracy"])
        results[f"{name}_sequence_error"] = 1.0 - float(scores["sequence_accuracy"])
        results[f"{name}_loss"] = float(scores["loss"])
    log = _read_log(os.path.join(output_dir, "log.csv"))
    speeds = [float(r["train_samples_per_second"]) for r in log[1:]] or [
        float(r["train_samples_per_second"]) for r in log
    ]
    results.update(
        model=config.model,
        downsample=config.downsample if config.model != "conv" else None,
        epochs=len(log),
        best_epoch=early_stopping.state["best_epoch"],
        train_sequences_per_second=float(np.median(speeds)) if speeds else None,
        parameters=int(model.count_params()),
        wall_seconds=before + time.perf_counter() - start,
    )

    model.save(os.path.join(output_dir, "model.keras"))
    n_fig = min(config.figure_examples, len(splits["test"][0]))
    attention_figure(
        model,
        splits["test"][0][:n_fig],
        splits["test"][1][:n_fig],
        os.path.join(output_dir, "attention.png"),
    )
    if config.export:
        export_model(model, os.path.join(output_dir, "saved_model"), x_train.shape[1:])
    results["wall_seconds"] = before + time.perf_counter() - start
    write_json(metrics_path, results)
    print(json.dumps(results, indent=2, sort_keys=True))
    return results


def _read_log(path):
    import csv

    if not os.path.exists(path):
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))
