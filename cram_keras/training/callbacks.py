"""The RNN-SPN learning-rate rule and the inpainting callbacks (figures,
batch-norm recalibration before validation); the resumable run machinery is
`cram_keras.experiments.runner`."""

import os

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
