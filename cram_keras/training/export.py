"""SavedModel export with explicit, input-checking serving signatures.

TensorFlow backend only. Every input of a ``serve`` endpoint is described by
an :class:`InputSpec` (name, shape without the batch, and the values it may
hold). The exported function accepts any float32 tensor and checks it
inside the graph before the model sees it, so a wrong input is refused
with one short line naming what was expected and what was received, e.g.
(the text of the ``tf.errors.InvalidArgumentError``)::

    assertion failed: [serve(image): image must have shape (batch, 32, 32, 3); received shape] [2 32 32 1]
    assertion failed: [serve(image): image must hold finite float32 values in [0, 1] (divide uint8 images by 255); received min] [0] [max] [255] [NaN or inf] [0]
    assertion failed: [serve(mask): mask must hold only 0 and 1; received min] [0] [max] [0.5] [NaN or inf] [0]

instead of TensorFlow's signature-binding error, which prints the whole
received array, or a silent result on 0..255 images (a uint8 array is
converted to float32 by TensorFlow without complaint).
"""

import dataclasses
import functools

import keras

from cram_keras.ops import native_sampler


@dataclasses.dataclass(frozen=True)
class InputSpec:
    """One input of a serving function.

    Attributes:
        name: the argument name (also the signature's input name).
        shape: the shape without the batch dimension, e.g. ``(32, 32, 3)``.
        values: ``"unit"`` for values in [0, 1], ``"binary"`` for values in
            {0, 1}; NaN and inf are refused by both.
    """

    name: str
    shape: tuple
    values: str = "unit"

    def __post_init__(self):
        if self.values not in ("unit", "binary"):
            raise ValueError(
                f"`values` must be 'unit' or 'binary'. Received: values={self.values!r}"
            )

    def describe(self):
        dims = ", ".join(str(d) for d in self.shape)
        kind = "in [0, 1]" if self.values == "unit" else "in {0, 1}"
        return f"{self.name}: float32 (batch, {dims}), values {kind}"


def checked_input(x, spec):
    """`x` after the graph checks of `spec`, with its static shape set.

    Raises (when the graph runs) ``tf.errors.InvalidArgumentError`` whose
    message is one line naming the expected and the received shape or range.
    """
    import tensorflow as tf

    expected = (None,) + tuple(spec.shape)
    dims = ", ".join(str(d) for d in spec.shape)
    prefix = f"serve({spec.name}): {spec.name}"
    shape = tf.shape(x)
    # Padded to a fixed length, so that a wrong rank compares without a
    # broadcasting error (and without tf.cond).
    padded = tf.pad(shape, [[0, len(expected)]], constant_values=-1)
    shape_ok = tf.logical_and(
        tf.equal(tf.rank(x), len(expected)),
        tf.reduce_all(
            tf.equal(padded[1 : len(expected)], tf.constant(spec.shape, tf.int32))
        ),
    )
    shape_check = tf.debugging.Assert(
        shape_ok,
        [f"{prefix} must have shape (batch, {dims}); received shape", shape],
        summarize=len(expected) + 4,
    )
    with tf.control_dependencies([shape_check]):
        x = tf.identity(x)
    is_finite = tf.math.is_finite(x)
    finite = tf.reduce_all(is_finite)
    # The range of the finite values, and how many are NaN or inf.
    low = tf.reduce_min(tf.where(is_finite, x, float("inf")))
    high = tf.reduce_max(tf.where(is_finite, x, float("-inf")))
    non_finite = tf.reduce_sum(tf.cast(tf.logical_not(is_finite), tf.int32))
    if spec.values == "unit":
        ok = tf.logical_and(finite, tf.reduce_all((x >= 0.0) & (x <= 1.0)))
        what = (
            f"{prefix} must hold finite float32 values in [0, 1] "
            "(divide uint8 images by 255); received min"
        )
    else:
        ok = tf.logical_and(finite, tf.reduce_all((x == 0.0) | (x == 1.0)))
        what = f"{prefix} must hold only 0 and 1; received min"
    value_check = tf.debugging.Assert(
        ok, [what, low, "max", high, "NaN or inf", non_finite], summarize=1
    )
    with tf.control_dependencies([value_check]):
        x = tf.identity(x)
    return tf.ensure_shape(x, expected)


def export_saved_model(path, fn, input_specs, trackable):
    """Writes a SavedModel whose ``serve`` endpoint is ``fn(*inputs)``.

    Args:
        path: output directory.
        fn: a function of the inputs, tracing only ``keras.ops`` / TF ops.
        input_specs: list of :class:`InputSpec`, in the order of ``fn``'s
            arguments.
        trackable: the Keras model (or layer) whose variables ``fn`` uses.

    The endpoint takes float32 tensors of any shape and checks each against
    its spec (see :func:`checked_input`). The result loads with
    ``tf.saved_model.load(path).serve(*inputs)`` (also as the
    ``serving_default`` signature) in a process without cram_keras.
    """
    if keras.backend.backend() != "tensorflow":
        raise NotImplementedError(
            "SavedModel export needs the TensorFlow backend. Received: "
            f"KERAS_BACKEND={keras.backend.backend()!r}."
        )
    import tensorflow as tf

    specs = list(input_specs)
    for spec in specs:
        if not isinstance(spec, InputSpec):
            raise TypeError(
                f"`input_specs` must hold InputSpec objects. Received: {spec!r}"
            )

    @functools.wraps(fn)  # the signature shows fn's argument names
    def serve(*inputs):
        return fn(*(checked_input(x, s) for x, s in zip(inputs, specs, strict=True)))

    # Traced with the keras.ops sampler even when the compiled kernel is on:
    # the SavedModel must load where that library is not built.
    with native_sampler.native_sampler(False):
        archive = keras.export.ExportArchive()
        archive.track(trackable)
        signature = [tf.TensorSpec(None, tf.float32, name=s.name) for s in specs]
        archive.add_endpoint(name="serve", fn=serve, input_signature=signature)
        archive.write_out(path, verbose=False)
    return path


# === The experiments' models ===


def export_classifier(model, path, image_shape):
    """SavedModel of a `CRAMClassifier`: `serve(images, clue)` -> class
    probabilities (B, classes).

    `images` float32 (B, H, W, C) in [0, 1]; `clue` float32 (B, H, W, 1) in
    {0, 1} (all zeros for a model trained with `clue="none"`; for
    `clue="saliency"`, the thresholded output of the run's saliency network,
    `saliency/network/model.keras`).
    """

    def serve(images, clue):
        return keras.ops.softmax(model([images, clue], training=False), axis=-1)

    height, width = image_shape[:2]
    return export_saved_model(
        path,
        serve,
        [
            InputSpec("images", tuple(image_shape), "unit"),
            InputSpec("clue", (height, width, 1), "binary"),
        ],
        model,
    )


def export_inpainter(model, path, image_shape):
    """SavedModel of a `CRAMInpainter`: `serve(image, mask)` -> completed
    image (B, H, W, C)."""

    def serve(image, mask):
        return model([image, mask], training=False)

    height, width, channels = image_shape
    return export_saved_model(
        path,
        serve,
        [
            InputSpec("image", (height, width, channels), "unit"),
            InputSpec("mask", (height, width, 1), "binary"),
        ],
        model,
    )
