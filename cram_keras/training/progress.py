"""What a run shows while it trains: a line per epoch with its time and
an ETA (`EpochProgress`), on a terminal a progress bar of the epoch's steps
(`ProgressBar`), and the epoch's training time for the throughput in the
log (`EpochTimer`)."""

import sys
import time

import keras

from cram_keras.training.workarounds import python_scalar


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
    once a later epoch has been timed. With early stopping, the line gives
    both ends, e.g. ``ETA 25m00s without a better epoch, at most 21h18m``:
    the run stops once ``stops_within`` more epochs bring no improvement.

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

    def eta(self, epoch, last=False, within=None):
        """Seconds left after 0-indexed ``epoch``: 0 when it was the last;
        at most ``within`` more epochs when given."""
        left = 0 if last else max(0, self.until - (epoch + 1))
        if within is not None:
            left = min(left, max(0, int(within)))
        return left * (self.mean_epoch_seconds() or 0.0)

    def epoch_end(self, epoch, logs=None, last=False, stops_within=None):
        """Times 0-indexed ``epoch``, prints its line and returns it.
        ``last``: training ends with this epoch (e.g. early stopping).
        ``stops_within``: early stopping ends the run after this many more
        epochs unless one of them improves (None: no early stopping)."""
        now = self.clock()
        if self._mark is None:
            self._mark = now
        self.seconds.append(now - self._mark)
        self._mark = now
        eta = format_seconds(self.eta(epoch, last))
        if not last and stops_within is not None:
            sooner = self.eta(epoch, within=stops_within)
            if sooner < self.eta(epoch):
                eta = f"{format_seconds(sooner)} without a better epoch, at most {eta}"
        line = (
            f"Epoch {epoch + 1}/{self.epochs} - {format_seconds(self.seconds[-1])}"
            f" - ETA {eta}"
        )
        values = format_logs(logs)
        if values:
            line += " - " + values
        print(line, file=self.stream or sys.stdout, flush=True)
        return line


class ProgressBar(keras.callbacks.Callback):
    """On a terminal, ``Epoch e/E`` of the whole run (Keras' own header would
    say ``e/e``, since a run calls ``fit`` once per epoch) and a progress bar
    of the epoch's steps; `EpochProgress` then prints the epoch's line."""

    def __init__(self, epochs):
        super().__init__()
        self.epochs = epochs
        self.bar = None

    def on_epoch_begin(self, epoch, logs=None):
        print(f"Epoch {epoch + 1}/{self.epochs}", flush=True)
        self.bar = keras.utils.Progbar(target=None, unit_name="step")

    def on_train_batch_end(self, batch, logs=None):
        values = [
            (k, float(python_scalar(v))) for k, v in (logs or {}).items() if "loss" in k
        ]
        self.bar.update(batch + 1, values=values)

    def on_epoch_end(self, epoch, logs=None):
        print(flush=True)


class EpochTimer(keras.callbacks.Callback):
    """Training seconds of the epoch (validation excluded)."""

    def __init__(self):
        super().__init__()
        self.start = self.train_end = None

    def on_epoch_begin(self, epoch, logs=None):
        self.start, self.train_end = time.perf_counter(), None

    def on_test_begin(self, logs=None):
        if self.start is not None and self.train_end is None:
            self.train_end = time.perf_counter()

    def seconds(self):
        end = self.train_end if self.train_end is not None else time.perf_counter()
        return end - self.start
