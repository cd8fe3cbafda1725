"""The RNN-SPN learning-rate rule and dropout ramp, the inpainting
callbacks (figures, batch-norm recalibration before validation), and the
one line per epoch of a run with its time and ETA (`EpochProgress`); the
resumable run machinery is `cram_keras.experiments.runner`."""

import os
import sys
import time

import keras
import numpy as np

from cram_keras.training.distribute import python_scalar


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
        if (
            isinstance(ramp_epochs, bool)
            or not isinstance(ramp_epochs, int)
            or ramp_epochs < 0
        ):
            raise ValueError(
                "`ramp_epochs` must be a non-negative integer. "
                f"Received: ramp_epochs={ramp_epochs!r}"
            )
        self.ramp_epochs = ramp_epochs

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


# === Progress ===


def format_seconds(seconds):
    """A duration for a log line: ``"4.2s"``, ``"41s"``, ``"3m05s"``, ``"2h07m"``."""
    seconds = max(0.0, float(seconds))
    if seconds < 10:
        return f"{seconds:.1f}s"
    if seconds < 59.5:
        return f"{seconds:.0f}s"
    minutes, secs = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(int(round(seconds / 60)), 60)
    return f"{hours}h{minutes:02d}m"


def format_logs(logs):
    """``"loss: 2.302 - val_loss: 2.32"``: every value, sorted by name, to 4
    significant digits."""
    parts = []
    for key, value in sorted((logs or {}).items()):
        try:
            parts.append(f"{key}: {float(python_scalar(value)):.4g}")
        except (TypeError, ValueError):
            parts.append(f"{key}: {value}")
    return " - ".join(parts)


class EpochProgress:
    """One line per epoch of a run: its number, its wall time, an ETA and
    the logged values, e.g.

        Epoch 3/50 - 41s - ETA 32m10s - loss: 2.302 - val_loss: 2.32

    The epoch's time runs from the end of the previous epoch (from `start`
    for the first one), so it counts everything the loop does per epoch:
    training, validation, callbacks and checkpoints. The ETA is the epochs
    left times the mean time of the last ``recent`` epochs; the first epoch
    after `start` also compiles the steps, so it is left out of the mean
    once a later epoch has been timed. Early stopping can end a run before
    the ETA.

    Args:
        epochs: the run's epochs in all (the ``E`` of ``Epoch e/E``).
        until: the epoch count this process trains to (default ``epochs``,
            e.g. less when training in stretches).
        recent: epochs in the mean (5).
        stream: where the lines go (default: ``sys.stdout`` at print time).
        clock: seconds, monotonic (``time.perf_counter``).

    Usage: call `start` before the first epoch, then `epoch_end(epoch, logs)`
    once each epoch has finished (with a custom loop as with ``fit``).
    """

    def __init__(self, epochs, until=None, recent=5, stream=None, clock=None):
        self.epochs = int(epochs)
        self.until = self.epochs if until is None else int(until)
        self.recent = int(recent)
        self.stream = stream
        self.clock = clock or time.perf_counter
        self.seconds = []
        self._mark = None

    def start(self):
        self._mark = self.clock()

    def mean_epoch_seconds(self):
        """Mean of the recent epoch times (None before the first epoch)."""
        times = self.seconds[1:] if len(self.seconds) > 1 else self.seconds
        times = times[-self.recent :]
        return sum(times) / len(times) if times else None

    def eta(self, epoch, last=False):
        """Seconds left after 0-indexed ``epoch``: 0 when it was the last."""
        left = 0 if last else max(0, self.until - (epoch + 1))
        return left * (self.mean_epoch_seconds() or 0.0)

    def epoch_end(self, epoch, logs=None, last=False):
        """Times 0-indexed ``epoch``, prints its line and returns it.
        ``last``: training ends with this epoch (e.g. early stopping)."""
        now = self.clock()
        if self._mark is None:
            self._mark = now
        self.seconds.append(now - self._mark)
        self._mark = now
        line = (
            f"Epoch {epoch + 1}/{self.epochs} - {format_seconds(self.seconds[-1])}"
            f" - ETA {format_seconds(self.eta(epoch, last))}"
        )
        values = format_logs(logs)
        if values:
            line += " - " + values
        print(line, file=self.stream or sys.stdout, flush=True)
        return line
