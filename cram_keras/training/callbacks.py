"""The callbacks of a run's ``fit``: those every run has (`NaNGuard`,
`CrashPoints`, `tensorboard`), the RNN-SPN learning-rate rule and dropout
ramp, and the inpainting callbacks (figures, batch-norm recalibration
before validation). What a run shows while it trains is
`cram_keras.training.progress`; the epoch loop that adds them is
`cram_keras.experiments.epochs`."""

import importlib.util
import math
import os

import keras
import numpy as np

from cram_keras.training.checkpoint import crash_point
from cram_keras.training.workarounds import python_scalar
from cram_keras.utils import check_int


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite (exit code 1)."""


# === Every run ===


class NaNGuard(keras.callbacks.Callback):
    """Stops training at the first non-finite loss, naming epoch and step.

    Args:
        checkpoints: the run's checkpoint folder (named in the message).
        last_good: the last committed epoch, 1-based (0: none).
    """

    def __init__(self, checkpoints, last_good):
        super().__init__()
        self.checkpoints = checkpoints
        self.last_good = last_good
        self.epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        for key, value in (logs or {}).items():
            if "loss" not in key:
                continue
            try:
                value = float(python_scalar(value))
            except (TypeError, ValueError):
                continue
            if not math.isfinite(value):
                kept = (
                    f"the checkpoint of epoch {self.last_good} in "
                    f"{self.checkpoints} is intact and a rerun resumes from it"
                    if self.last_good
                    else "no epoch had completed, so no checkpoint was written"
                )
                raise TrainingDiverged(
                    f"training diverged: {key} became {value} at epoch "
                    f"{self.epoch + 1}, step {batch + 1}; {kept}. Lower the "
                    "learning rate (--set learning_rate=...) or change --seed."
                )


class CrashPoints(keras.callbacks.Callback):
    """``batch:<epoch>``: a kill after the first batch of an epoch, and
    ``validation:<epoch>`` before its validation (`crash_point`, tests)."""

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if batch == 0:
            crash_point(f"batch:{self.epoch}")

    def on_test_begin(self, logs=None):
        crash_point(f"validation:{self.epoch}")


def tensorboard_installed():
    """Whether TensorBoard logs can be written: TensorBoard is installed,
    and TensorFlow too where Keras runs on another backend."""
    if importlib.util.find_spec("tensorboard") is None:
        return False
    return (
        keras.backend.backend() == "tensorflow"
        or importlib.util.find_spec("tensorflow") is not None
    )


def tensorboard(directory):
    """Keras' TensorBoard callback logging into ``directory``, or None where
    it cannot (`tensorboard_installed`)."""
    if not tensorboard_installed():
        return None
    return keras.callbacks.TensorBoard(directory, write_graph=False)


# === RNN-SPN ===


def step_decay_after(epoch, base_lr, factor=1.5, interval=10, no_decay=30):
    """The released RNN-SPN code's learning-rate rule, epoch by epoch.

    At the end of 0-indexed epoch ``e`` the code divides the rate by
    ``factor`` when more than ``interval`` epochs passed since the last decay
    and ``e > no_decay``. With the defaults the rate drops from epoch 32 on,
    then at 44, 56, ... (every ``interval + 2`` epochs, an off-by-two of the
    paper's "every 10 epochs after epoch 30" that we reproduce).

    Returns:
        The learning rate to use during epoch ``epoch``.
    """
    lr, since_decay = base_lr, 0
    for e in range(epoch):
        if since_decay > interval and e > no_decay:
            lr, since_decay = lr / factor, 0
        else:
            since_decay += 1
    return lr


def ramped_dropout_rate(epoch, rate, ramp_epochs=5):
    """The released RNN-SPN code's dropout ramp, epoch by epoch.

    At the start of 0-indexed epoch ``e`` the code sets the rate to
    ``e * rate / ramp_epochs`` while ``e < ramp_epochs`` (5), then to
    ``rate``: with the defaults 0, 0.2, 0.4, 0.6 and 0.8 times ``rate`` in
    epochs 0 to 4 (the first epoch trains without dropout) and ``rate`` from
    epoch 5 on. ``ramp_epochs=0``: ``rate`` from the start.

    Returns:
        The dropout rate to use during epoch ``epoch``.
    """
    if ramp_epochs > 0 and epoch < ramp_epochs:
        return epoch * rate / ramp_epochs
    return rate


class DropoutRamp(keras.callbacks.Callback):
    """At the start of each epoch, sets every `RampedDropout` layer of the
    model to `ramped_dropout_rate` of its full rate.

    The rate follows from the epoch number that ``fit`` passes (with
    ``initial_epoch``, the run's epoch), not from how often the callback was
    called, so a resumed run gets the rate of its epoch. The layers read the
    rate from a variable inside the compiled step (see
    `cram_keras.models.rnn_spn.RampedDropout`), which works on TensorFlow,
    under ``tf.distribute`` and on JAX.

    Args:
        ramp_epochs: epochs of the ramp (5, the released code's).
    """

    def __init__(self, ramp_epochs=5):
        super().__init__()
        self.ramp_epochs = check_int("ramp_epochs", ramp_epochs, low=0)

    def on_epoch_begin(self, epoch, logs=None):
        for layer in ramped_dropout_layers(self.model):
            layer.set_current_rate(
                ramped_dropout_rate(epoch, layer.rate, self.ramp_epochs)
            )


def ramped_dropout_layers(model):
    """Every `RampedDropout` layer inside ``model``, nested ones included."""
    from cram_keras.models.rnn_spn import RampedDropout

    return [
        layer
        for layer in model._flatten_layers(include_self=True, recursive=True)
        if isinstance(layer, RampedDropout)
    ]


# === Inpainting ===


class InpaintingFigures(keras.callbacks.Callback):
    """After every epoch: `figures/epoch_NNN.png` (Fig. 7 style, see
    `cram_keras.visualization.inpainting_figure`) for fixed test images, and
    the same strips as TensorBoard images (with `tensorboard_dir`)."""

    def __init__(self, images, masks, directory, tensorboard_dir=None, note=""):
        super().__init__()
        self.note = note
        self.images = np.asarray(images, np.float32)
        self.masks = np.asarray(masks, np.float32)
        self.directory = directory
        self.tensorboard_dir = tensorboard_dir
        self._writer = None

    def on_epoch_end(self, epoch, logs=None):
        from cram_keras.visualization import inpainting_figure

        os.makedirs(self.directory, exist_ok=True)
        path = os.path.join(self.directory, f"epoch_{epoch + 1:03d}.png")
        _, strips = inpainting_figure(
            self.model,
            self.images,
            self.masks,
            path,
            title=f"epoch {epoch + 1}{self.note}",
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


class BeforeValidation(keras.callbacks.Callback):
    """Calls ``fn(model)`` when ``fit`` starts its validation pass
    (``on_test_begin``), i.e. after the epoch's training steps and before
    the validation metrics and the epoch-end callbacks (figures, TensorBoard,
    checkpoints). The inpainter uses it to recalibrate its batch-norm
    statistics as the final scoring does, so that the logged validation
    metrics are those the final scoring would give."""

    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def on_test_begin(self, logs=None):
        self.fn(self.model)
