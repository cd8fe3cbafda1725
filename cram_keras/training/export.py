"""SavedModel export with explicit serving signatures (TensorFlow backend)."""

import keras


def export_saved_model(path, fn, input_specs, trackable):
    """Writes a SavedModel whose ``serve`` endpoint is ``fn(*inputs)``.

    Args:
        path: output directory.
        fn: a function of the inputs, tracing only ``keras.ops`` / TF ops.
        input_specs: list of ``(name, shape, dtype)``, shape with ``None`` for
            the batch.
        trackable: the Keras model (or layer) whose variables ``fn`` uses.

    The result loads with ``tf.saved_model.load(path).serve(*inputs)`` (also
    as the ``serving_default`` signature) in a process without cram_keras.
    """
    if keras.backend.backend() != "tensorflow":
        raise NotImplementedError(
            "SavedModel export needs the TensorFlow backend. Received: "
            f"KERAS_BACKEND={keras.backend.backend()!r}."
        )
    import tensorflow as tf

    archive = keras.export.ExportArchive()
    archive.track(trackable)
    signature = [
        tf.TensorSpec(shape, dtype, name=name) for name, shape, dtype in input_specs
    ]
    archive.add_endpoint(name="serve", fn=fn, input_signature=signature)
    archive.write_out(path, verbose=False)
    return path
