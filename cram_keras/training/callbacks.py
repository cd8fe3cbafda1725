"""Callbacks that make long runs resumable and follow the papers' schedules."""

import json
import os
import time

import keras
import numpy as np


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


class ResumableEarlyStopping(keras.callbacks.Callback):
    """Early stopping whose state and best weights survive an interruption.

    Keras' ``EarlyStopping`` keeps the best weights in memory, so a run that is
    killed and resumed with ``BackupAndRestore`` forgets them. This callback
    writes its state (``best``, ``best_epoch``, ``wait``) to
    ``<directory>/early_stopping.json`` and the best weights to
    ``<directory>/best.weights.h5`` after every improving epoch, reloads both
    when training (re)starts, and restores the best weights when training ends.

    Args:
        directory: where the state and weights live.
        monitor: the logged quantity, e.g. ``"val_digit_accuracy"``.
        mode: ``"max"`` or ``"min"``.
        patience: epochs without improvement before stopping.
    """

    def __init__(self, directory, monitor, mode="max", patience=50):
        super().__init__()
        if mode not in ("max", "min"):
            raise ValueError(f"`mode` must be 'max' or 'min'. Received: mode={mode!r}")
        if patience < 1:
            raise ValueError(f"`patience` must be >= 1. Received: patience={patience}")
        self.directory = directory
        self.monitor = monitor
        self.mode = mode
        self.patience = patience
        self.state_path = os.path.join(directory, "early_stopping.json")
        self.weights_path = os.path.join(directory, "best.weights.h5")
        self.state = {
            "best": None,
            "best_epoch": None,
            "wait": 0,
            "stopped_epoch": None,
        }

    def _improved(self, value):
        best = self.state["best"]
        if best is None:
            return True
        return value > best if self.mode == "max" else value < best

    def on_train_begin(self, logs=None):
        os.makedirs(self.directory, exist_ok=True)
        if os.path.exists(self.state_path):
            with open(self.state_path) as f:
                self.state = json.load(f)

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if self.monitor not in logs:
            raise KeyError(
                f"ResumableEarlyStopping monitors {self.monitor!r}, which is not "
                f"among the logged values {sorted(logs)}."
            )
        value = float(logs[self.monitor])
        if np.isfinite(value) and self._improved(value):
            self.state.update(best=value, best_epoch=epoch, wait=0)
            self.model.save_weights(self.weights_path)
        else:
            self.state["wait"] += 1
            if self.state["wait"] >= self.patience:
                self.state["stopped_epoch"] = epoch
                self.model.stop_training = True
        tmp = self.state_path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(self.state, f)
        os.replace(tmp, self.state_path)

    def on_train_end(self, logs=None):
        self.restore_best()

    def restore_best(self):
        """Loads the best weights seen so far, if any were saved."""
        if os.path.exists(self.weights_path):
            self.model.load_weights(self.weights_path)


class EpochTimer(keras.callbacks.Callback):
    """Adds ``train_seconds`` (training part of the epoch, validation excluded)
    and ``train_samples_per_second`` to each epoch's logs."""

    def __init__(self, samples_per_epoch):
        super().__init__()
        self.samples_per_epoch = samples_per_epoch
        self._start = None
        self._train_end = None

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()
        self._train_end = None

    def on_test_begin(self, logs=None):
        if self._start is not None and self._train_end is None:
            self._train_end = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        end = self._train_end if self._train_end is not None else time.perf_counter()
        seconds = end - self._start
        if logs is not None:
            logs["train_seconds"] = seconds
            logs["train_samples_per_second"] = self.samples_per_epoch / seconds


class WallClock(keras.callbacks.Callback):
    """Keeps ``<path>`` = total training wall time across interrupted sessions."""

    def __init__(self, path, seconds_before=0.0):
        super().__init__()
        self.path = path
        self.seconds_before = seconds_before
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        seconds = self.seconds_before + time.perf_counter() - self._start
        tmp = self.path + ".tmp"
        with open(tmp, "w") as f:
            json.dump({"seconds": seconds}, f)
        os.replace(tmp, self.path)
