"""The checks every public layer must pass, in the style of Keras' own
`TestCase.run_layer_test` (our own code; no `keras.src` imports).

Test modules import it as `from layer_testing import run_layer_test` (pytest
puts `tests/` on `sys.path` because `tests/conftest.py` lives there).

`run_layer_test(layer_cls, init_kwargs, input_shape, expected_output_shape,
...)` checks, on the current backend:

1. Build: `build(input_shape)` builds the layer and creates every variable
   that a call uses (a later call adds none).
2. Shapes: called on `keras.KerasTensor` inputs (batch `None`) the layer
   returns the expected structure of shapes in float32, and
   `compute_output_shape` agrees; so does a trace of `call` itself
   (`keras.Operation.compute_output_spec`, which the layer's
   `compute_output_shape` otherwise bypasses). A call on arrays returns the
   same structure in float32 with the expected shapes.
3. Serialisation: `get_config` -> `from_config` and
   `keras.saving.serialize_keras_object` -> JSON ->
   `deserialize_keras_object` rebuild the layer with the same config and
   variables of the same shapes. A functional model wrapping the layer,
   saved to a `.keras` file and loaded, has the same weights and gives
   identical outputs.
4. One training step: one `fit` step of a model around the layer (mean
   squared error of the mean of its outputs against random targets, SGD)
   gives a finite loss, changes every trainable weight but the ones named
   in `unchanged_by_first_step`, and updates every non-trainable variable
   (batch-norm statistics: the `training` flag reaches every sub-layer).
   Eager on TensorFlow (step 2 traced `call` in a graph), compiled on JAX.
5. Mixed precision, for `mixed_float16` and `mixed_bfloat16`: every
   sub-layer has the layer's dtype policy, every float variable is float32,
   symbolic and computed float outputs have the compute dtype, and with the
   weights of the float32 layer the outputs match the float32 ones to the
   precision of the compute dtype. `run_mixed_precision_test` runs this
   check alone, for the models and networks built from the layers.

On TensorFlow the calls on arrays are eager. On JAX they run under `jax.jit`
(one compilation each instead of one per operation, shape and dtype; the
eager path runs in the layers' own tests), on a layer built beforehand.

Shapes are tuples of ints, the first one the batch size of the test data;
a structure of inputs or outputs is a (nested) list or tuple of shapes.
"""

import json
import os
import tempfile
import warnings

import keras
import numpy as np

MIXED_POLICIES = ("mixed_float16", "mixed_bfloat16")
# Tolerance of a mixed-precision output against float32, relative to the
# largest float32 output magnitude (at least 1): a few units in the last
# place of the 11-bit (float16) and 8-bit (bfloat16) significands,
# accumulated over a few layers.
MIXED_TOLERANCE = {"float16": 1e-2, "bfloat16": 6e-2}


# === Structures of shapes (a tuple of ints is a leaf, not a structure) ===


def is_shape(value):
    return isinstance(value, (list, tuple)) and all(
        v is None or (isinstance(v, int) and not isinstance(v, bool)) for v in value
    )


def map_shapes(fn, structure):
    """`fn` applied to every shape of `structure`, keeping lists and tuples."""
    if is_shape(structure):
        return fn(tuple(structure))
    return type(structure)(map_shapes(fn, s) for s in structure)


def flatten_shapes(structure):
    if is_shape(structure):
        return [tuple(structure)]
    return [shape for s in structure for shape in flatten_shapes(s)]


def pack_like(structure, flat):
    """The leaves `flat`, in order, nested as the shapes of `structure`."""
    flat = iter(flat)
    return map_shapes(lambda _: next(flat), structure)


def unbatched(shape):
    return (None, *shape[1:])


def output_shapes(outputs):
    """The shapes of `outputs` with their nesting (lists and tuples kept)."""
    if isinstance(outputs, (list, tuple)):
        return type(outputs)(output_shapes(o) for o in outputs)
    return tuple(None if d is None else int(d) for d in outputs.shape)


def dtype_of(x):
    return keras.backend.standardize_dtype(x.dtype)


def to_numpy(x):
    return np.array(keras.ops.convert_to_numpy(x))


def variable_numpy(v):
    return np.array(v.numpy())


def json_round_trip(value):
    return json.loads(json.dumps(value))


def symbolic_inputs(symbolic_shape):
    return map_shapes(lambda s: keras.KerasTensor(s, dtype="float32"), symbolic_shape)


def compiled_calls():
    return keras.backend.backend() == "jax"


def forward(layer, inputs, call_kwargs):
    """`layer(inputs)`: eager, or on JAX under `jax.jit` (`layer` built)."""
    if compiled_calls():
        import jax

        return jax.jit(lambda x: layer(x, **call_kwargs))(inputs)
    return layer(inputs, **call_kwargs)


# === The checks ===


def run_layer_test(
    layer_cls,
    init_kwargs,
    input_shape,
    expected_output_shape,
    *,
    call_kwargs=None,
    input_data=None,
    expected_num_trainable_weights=None,
    expected_num_non_trainable_weights=None,
    unchanged_by_first_step=(),
    run_training_check=True,
    mixed_precision_policies=MIXED_POLICIES,
    seed=0,
):
    """Runs the checks of this module's docstring on `layer_cls(**init_kwargs)`.

    Args:
        layer_cls: the layer class.
        init_kwargs: dict of constructor arguments.
        input_shape: the input shape, or a (nested) list of input shapes,
            with the batch size of the test data first.
        expected_output_shape: the output shape, or the structure of output
            shapes (lists and tuples as the layer returns them).
        call_kwargs: extra call arguments (not `training`).
        input_data: structure of float32 arrays of `input_shape`; default
            standard normal.
        expected_num_trainable_weights,
        expected_num_non_trainable_weights: counts after `build`, or None.
        unchanged_by_first_step: substrings of the paths of the trainable
            weights that the first training step leaves unchanged (zero
            gradient by construction); every other one must change.
        run_training_check: whether to run check 4.
        mixed_precision_policies: the dtype policies of check 5.
        seed: seed of the test data and of the training targets.
    """
    call_kwargs = dict(call_kwargs or {})
    input_shape = map_shapes(tuple, input_shape)
    expected_output_shape = map_shapes(tuple, expected_output_shape)
    rng = np.random.default_rng(seed)
    if input_data is None:
        input_data = map_shapes(
            lambda s: rng.standard_normal(s).astype("float32"), input_shape
        )
    flat_data = keras.tree.flatten(input_data)
    symbolic_shape = map_shapes(unbatched, input_shape)
    expected_symbolic = map_shapes(unbatched, expected_output_shape)

    # 1. Build.
    layer = layer_cls(**init_kwargs)
    layer.build(input_shape)
    assert layer.built
    counts = len(layer.trainable_weights), len(layer.non_trainable_weights)
    expected_counts = (
        expected_num_trainable_weights,
        expected_num_non_trainable_weights,
    )
    for got, want in zip(counts, expected_counts, strict=True):
        assert want is None or got == want, (counts, expected_counts)

    def assert_same_variables(other, when):
        other_counts = len(other.trainable_weights), len(other.non_trainable_weights)
        assert other_counts == counts, (when, other_counts, counts)

    # 2. Shapes: symbolic, traced, and of a call on arrays.
    layer = layer_cls(**init_kwargs)
    symbolic = layer(symbolic_inputs(symbolic_shape), **call_kwargs)
    assert_same_variables(layer, "symbolic call")
    assert output_shapes(symbolic) == expected_symbolic, output_shapes(symbolic)
    computed = map_shapes(tuple, layer.compute_output_shape(symbolic_shape))
    assert computed == expected_symbolic, computed
    traced = keras.Operation.compute_output_spec(
        layer, symbolic_inputs(symbolic_shape), **call_kwargs
    )
    assert output_shapes(traced) == expected_symbolic, output_shapes(traced)
    for x in keras.tree.flatten([symbolic, traced]):
        assert dtype_of(x) == "float32", dtype_of(x)

    layer = layer_cls(**init_kwargs)
    if compiled_calls():  # `jax.jit` cannot create the variables.
        layer.build(input_shape)
    outputs = forward(layer, input_data, call_kwargs)
    assert_same_variables(layer, "call")
    assert output_shapes(outputs) == expected_output_shape, output_shapes(outputs)
    for x in keras.tree.flatten(outputs):
        assert dtype_of(x) == "float32", dtype_of(x)
    expected = [to_numpy(x) for x in keras.tree.flatten(outputs)]
    weights = layer.get_weights()

    # 3. Serialisation.
    config = json_round_trip(layer.get_config())
    rebuilt = layer_cls.from_config(config)
    serialized = json_round_trip(keras.saving.serialize_keras_object(layer))
    revived = keras.saving.deserialize_keras_object(serialized)
    assert type(revived) is layer_cls, type(revived)
    for copy in (rebuilt, revived):
        assert json_round_trip(copy.get_config()) == config
        if not copy.built:  # `deserialize_keras_object` builds it.
            copy.build(input_shape)
        assert [w.shape for w in copy.get_weights()] == [w.shape for w in weights]

    model = wrapping_model(layer, symbolic_shape, call_kwargs)
    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, "layer.keras")
        model.save(path)
        restored = keras.saving.load_model(path)
    [restored_layer] = [x for x in restored.layers if isinstance(x, layer_cls)]
    assert json_round_trip(restored_layer.get_config()) == config
    for a, b in zip(restored_layer.get_weights(), weights, strict=True):
        np.testing.assert_array_equal(a, b)
    got = keras.tree.flatten(forward(restored, flat_data, {}))
    for a, b in zip(got, expected, strict=True):
        np.testing.assert_array_equal(to_numpy(a), b)

    # 4. One training step.
    if run_training_check:
        run_training_step(
            layer_cls(**init_kwargs),
            symbolic_shape,
            flat_data,
            call_kwargs,
            unchanged_by_first_step,
            rng,
        )

    # 5. Mixed precision.
    for policy in mixed_precision_policies:
        run_mixed_precision_check(
            layer_cls(**init_kwargs, dtype=policy),
            policy,
            symbolic_shape,
            input_data,
            call_kwargs,
            weights,
            expected,
        )


def wrapping_model(layer, symbolic_shape, call_kwargs):
    """A functional model: flat inputs -> `layer` -> flat outputs."""
    inputs = [keras.Input(batch_shape=s) for s in flatten_shapes(symbolic_shape)]
    outputs = layer(pack_like(symbolic_shape, inputs), **call_kwargs)
    return keras.Model(inputs, keras.tree.flatten(outputs))


def run_training_step(
    layer, symbolic_shape, flat_data, call_kwargs, unchanged_by_first_step, rng
):
    inputs = [keras.Input(batch_shape=s) for s in flatten_shapes(symbolic_shape)]
    outputs = layer(pack_like(symbolic_shape, inputs), **call_kwargs)
    # One number per example: the sum over the outputs of their means.
    score = sum(
        keras.ops.mean(keras.ops.cast(x, "float32"), axis=tuple(range(1, len(x.shape))))
        for x in keras.tree.flatten(outputs)
    )
    model = keras.Model(inputs, score)
    jax = keras.backend.backend() == "jax"
    model.compile(
        optimizer=keras.optimizers.SGD(learning_rate=0.1),
        loss="mean_squared_error",
        run_eagerly=not jax,
        jit_compile=jax,
    )
    batch = len(flat_data[0])
    targets = rng.standard_normal((batch,)).astype("float32")
    before = {w.path: variable_numpy(w) for w in layer.weights}
    with warnings.catch_warnings():
        if not layer.trainable_weights:  # e.g. the spatial transformer
            warnings.filterwarnings("ignore", "The model does not have any trainable")
        history = model.fit(
            flat_data, targets, batch_size=batch, epochs=1, shuffle=False, verbose=0
        )
    [loss] = history.history["loss"]
    assert np.isfinite(loss), loss

    def changed(weights):
        return {
            w.path
            for w in weights
            if not np.array_equal(variable_numpy(w), before[w.path])
        }

    trainable = {w.path for w in layer.trainable_weights}
    frozen = {p for p in trainable if any(s in p for s in unchanged_by_first_step)}
    assert changed(layer.trainable_weights) == trainable - frozen, (
        f"changed: {sorted(changed(layer.trainable_weights))}; "
        f"expected unchanged: {sorted(frozen)}"
    )
    non_trainable = {w.path for w in layer.non_trainable_weights}
    assert changed(layer.non_trainable_weights) == non_trainable, sorted(
        non_trainable - changed(layer.non_trainable_weights)
    )


def run_mixed_precision_test(
    make_layer,
    input_shape,
    *,
    call_kwargs=None,
    input_data=None,
    policies=MIXED_POLICIES,
    seed=0,
):
    """Check 5 alone, for models and networks that the other checks would
    make slow: `make_layer(dtype=None)` is the float32 reference (weights and
    outputs), and each `make_layer(dtype=policy)` must build every sub-layer
    under `policy`, keep float32 variables, compute in the policy's compute
    dtype and, with the reference's weights, give its outputs to that
    precision.

    Args:
        make_layer: callable taking `dtype` and returning a new layer or model.
        input_shape: the input shape or (nested) list of shapes, batch first.
        call_kwargs: extra call arguments.
        input_data: structure of float32 arrays; default standard normal.
        policies: the mixed dtype policies to check.
        seed: seed of the test data.
    """
    call_kwargs = dict(call_kwargs or {})
    input_shape = map_shapes(tuple, input_shape)
    if input_data is None:
        rng = np.random.default_rng(seed)
        input_data = map_shapes(
            lambda s: rng.standard_normal(s).astype("float32"), input_shape
        )
    symbolic_shape = map_shapes(unbatched, input_shape)
    reference = make_layer(dtype=None)
    reference.build(input_shape)
    outputs = forward(reference, input_data, call_kwargs)
    for x in keras.tree.flatten(outputs):
        assert dtype_of(x) == "float32", dtype_of(x)
    expected = [to_numpy(x) for x in keras.tree.flatten(outputs)]
    for policy in policies:
        run_mixed_precision_check(
            make_layer(dtype=policy),
            policy,
            symbolic_shape,
            input_data,
            call_kwargs,
            reference.get_weights(),
            expected,
        )


def run_mixed_precision_check(
    layer, policy, symbolic_shape, input_data, call_kwargs, weights, expected
):
    compute_dtype = keras.DTypePolicy(policy).compute_dtype
    symbolic = layer(symbolic_inputs(symbolic_shape), **call_kwargs)
    # `_flatten_layers` is the walk over sub-layers that Keras' own tests use.
    for sub_layer in layer._flatten_layers(include_self=False):
        if isinstance(sub_layer, keras.layers.InputLayer):
            continue  # A `keras.Sequential`'s input: the float32 inputs' dtype.
        assert sub_layer.dtype_policy.name == policy, (
            f"{sub_layer.name}: {sub_layer.dtype_policy.name} under {policy}"
        )
    for w in layer.weights:
        assert dtype_of(w) == "float32", (policy, w.path, dtype_of(w))
    layer.set_weights(weights)
    outputs = forward(layer, input_data, call_kwargs)
    for x in keras.tree.flatten([symbolic, outputs]):
        assert dtype_of(x) == compute_dtype, (policy, dtype_of(x))
    for got, want in zip(keras.tree.flatten(outputs), expected, strict=True):
        scale = max(float(np.max(np.abs(want))), 1.0)
        np.testing.assert_allclose(
            to_numpy(keras.ops.cast(got, "float32")),
            want,
            rtol=0,
            atol=MIXED_TOLERANCE[compute_dtype] * scale,
            err_msg=f"{policy} against float32",
        )
