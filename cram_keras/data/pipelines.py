"""`tf.data` input pipelines of the three experiments: NumPy arrays in,
batched float32 datasets out; on other backends `array_batches` gives the
same batches (`sequence_batches` and `clue_batches` choose by backend).

Every training-set builder takes an optional `epoch`. With `epoch=None` the
dataset reshuffles itself on every pass from one seed (the order of an
epoch then depends on how many passes this process has made). With an
`epoch`, the shuffle seed is derived from `(seed, epoch)` (`epoch_seed`)
and the dataset is meant for that one epoch: its order does not depend on
what ran before, so a resumed run sees the very batches of an
uninterrupted one.

TensorFlow is imported inside the builders only, so that importing this
module stays cheap.
"""

import numpy as np

from cram_keras.data.inpainting import inpainting_dataset
from cram_keras.utils import epoch_seed


def as_float(images):
    """uint8 images -> float32 in [0, 1]; other arrays are returned as they are."""
    images = np.asarray(images)
    return images.astype("float32") / 255.0 if images.dtype == np.uint8 else images


def clue_batch(clues, images, index):
    """float32 clues of `images[index]`: `clues[index]`, or zeros (N, H, W, 1)
    where there is no clue (`clues=None`)."""
    if clues is None:
        return np.zeros(images[index].shape[:-1] + (1,), "float32")
    return np.asarray(clues[index], "float32")


def _shuffled(ds, size, shuffle_seed, epoch):
    if shuffle_seed is None:
        return ds
    return ds.shuffle(
        size,
        seed=epoch_seed(shuffle_seed, epoch),
        reshuffle_each_iteration=epoch is None,
    )


def sequence_dataset(images, labels, batch_size, shuffle_seed=None, epoch=None):
    """RNN-SPN: uint8 (or float) images and (N, T) labels -> batched
    `(float32 [0, 1] images, int32 labels)`; shuffled when `shuffle_seed` is
    given."""
    import tensorflow as tf

    ds = tf.data.Dataset.from_tensor_slices((images, labels.astype("int32")))
    ds = _shuffled(ds, len(images), shuffle_seed, epoch)
    ds = ds.batch(batch_size)

    def to_float(x, y):
        x = tf.cast(x, tf.float32)
        if images.dtype == np.uint8:
            x = x / 255.0
        return x, y

    return ds.map(to_float, num_parallel_calls=tf.data.AUTOTUNE).prefetch(
        tf.data.AUTOTUNE
    )


def clue_dataset(images, clues, labels, batch_size, shuffle_seed=None, epoch=None):
    """CRAM classification: uint8 images and clues -> batched
    `((images, clue), labels)` float32.

    `clues=None` feeds an all-zero clue (the `none` ablation).
    """
    import tensorflow as tf

    labels = np.asarray(labels).astype("int32")
    if clues is None:
        ds = tf.data.Dataset.from_tensor_slices((images, labels))
    else:
        ds = tf.data.Dataset.from_tensor_slices((images, clues, labels))
    ds = _shuffled(ds, len(images), shuffle_seed, epoch)

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


def sequence_batches(images, labels, batch_size, shuffle_seed=None, epoch=None):
    """`sequence_dataset` on TensorFlow; on another backend the same batches
    from `array_batches`."""
    if _on_tensorflow():
        return sequence_dataset(images, labels, batch_size, shuffle_seed, epoch)
    arrays = (images, labels.astype("int32"))
    return array_batches(arrays, batch_size, shuffle_seed, epoch)


def clue_batches(images, clues, labels, batch_size, shuffle_seed=None, epoch=None):
    """`clue_dataset` on TensorFlow; on another backend the same batches
    from `array_batches`."""
    if _on_tensorflow():
        return clue_dataset(images, clues, labels, batch_size, shuffle_seed, epoch)
    if clues is None:
        clues = np.zeros(images.shape[:-1] + (1,), "uint8")
    return array_batches(
        (images, clues, labels), batch_size, shuffle_seed, epoch, convert=_clue_inputs
    )


def _on_tensorflow():
    import keras

    return keras.backend.backend() == "tensorflow"


def _clue_inputs(batch):
    images, clues, labels = batch
    return (as_float(images), clues.astype("float32")), labels


def image_dataset(images, targets, batch_size, shuffle_seed=None, epoch=None):
    """uint8 images (and optional uint8 targets, e.g. saliency masks) ->
    batched float32 `images` or `(images, targets)`."""
    import tensorflow as tf

    arrays = images if targets is None else (images, targets)
    ds = tf.data.Dataset.from_tensor_slices(arrays)
    ds = _shuffled(ds, len(images), shuffle_seed, epoch)

    def to_float(x, y=None):
        x = tf.cast(x, tf.float32) / 255.0
        return x if y is None else (x, tf.cast(y, tf.float32))

    return (
        ds.batch(batch_size)
        .map(to_float, num_parallel_calls=tf.data.AUTOTUNE)
        .prefetch(tf.data.AUTOTUNE)
    )


def inpainting_train_dataset(
    images,
    batch_size,
    mask="center",
    seed=0,
    hole_size=8,
    min_size=4,
    max_size=16,
    augment=False,
    epoch=None,
):
    """Inpainting: shuffled, batched `(image, mask)` pairs, full batches only
    (batch norm); with `augment`, each image is randomly flipped, rotated by
    a right angle or negated (`augment_fn`).

    With an `epoch`, the seed of the shuffles, of the augmentation and (for
    `mask="random"`) of that epoch's pool of random holes is
    `epoch_seed(seed, epoch)`: each epoch draws fresh holes from the same
    distribution, and is the same whatever ran before it.
    """
    import tensorflow as tf

    seed = epoch_seed(seed, epoch)
    dataset = inpainting_dataset(
        images,
        mask=mask,
        batch_size=None,
        shuffle=True,
        seed=seed,
        hole_size=hole_size,
        min_size=min_size,
        max_size=max_size,
    )
    if augment:
        dataset = dataset.map(augment_fn(seed), num_parallel_calls=tf.data.AUTOTUNE)
    dataset = dataset.batch(batch_size, drop_remainder=True)
    return dataset.prefetch(tf.data.AUTOTUNE)


def augment_fn(seed):
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


def inpainting_eval_dataset(images, masks, batch_size):
    """Inpainting: `(image, mask)` pairs in order, for scoring."""
    return inpainting_dataset(images, mask=masks, batch_size=batch_size, shuffle=False)


__all__ = [
    "array_batches",
    "as_float",
    "augment_fn",
    "clue_batch",
    "clue_batches",
    "clue_dataset",
    "image_dataset",
    "inpainting_eval_dataset",
    "inpainting_train_dataset",
    "sequence_batches",
    "sequence_dataset",
]


def _images_and_targets(batch):
    images, targets = batch
    return as_float(images), targets


def array_batches(arrays, batch_size, shuffle_seed=None, epoch=None, convert=None):
    """A backend-agnostic input pipeline (``keras.utils.PyDataset``) for
    backends without tf.data (e.g. JAX on a machine without TensorFlow).

    ``arrays``: a tuple of arrays with one row per example, batched alike;
    ``convert(batch)`` turns the tuple of batch arrays into what the model
    takes (default: ``(images, targets)`` with uint8 images as float32 in
    [0, 1]). With ``shuffle_seed`` the order of epoch ``epoch`` is the
    permutation drawn from ``(shuffle_seed, epoch)``.
    """
    import keras

    convert = convert or _images_and_targets

    class ArrayBatches(keras.utils.PyDataset):
        def __init__(self):
            super().__init__()
            n = len(arrays[0])
            if shuffle_seed is None:
                self.order = np.arange(n)
            else:
                rng = np.random.default_rng(epoch_seed(shuffle_seed, epoch or 0))
                self.order = rng.permutation(n)

        def __len__(self):
            return -(-len(self.order) // batch_size)

        def __getitem__(self, index):
            rows = self.order[index * batch_size : (index + 1) * batch_size]
            return convert(tuple(a[rows] for a in arrays))

    return ArrayBatches()
