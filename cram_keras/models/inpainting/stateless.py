"""Keras' stateless scopes as the inpainter's JAX steps use them: the value
each variable holds inside a scope, the values a scope ends with, and the
inference pass compiled as one program."""

import keras


def stateless_scope(*groups):
    """A `keras.StatelessScope` in which, for each `(variables, values)` pair
    of `groups`, every variable holds its value."""
    return keras.StatelessScope(
        state_mapping=[
            pair
            for variables, values in groups
            for pair in zip(variables, values, strict=True)
        ]
    )


def current_values(scope, variables, values):
    """The values of `variables` at the end of a `keras.StatelessScope` that
    started from `values` (those it did not assign keep theirs)."""
    current = []
    for variable, value in zip(variables, values, strict=True):
        new = scope.get_current_value(variable)
        current.append(value if new is None else new)
    return current


def jax_inference(model):
    """`model.generate(images, mask, ablate=ablate)` in inference mode as
    one `jax.jit` program of the stateless pass: called as
    `fn(trainable_values, non_trainable_values, images, mask, ablate=...)`,
    traced once per input shape and `ablate` (a static argument)."""
    import jax

    def generate(trainable, non_trainable, images, mask, ablate=None):
        with stateless_scope(
            (model.trainable_variables, trainable),
            (model.non_trainable_variables, non_trainable),
        ):
            return model.generate(images, mask, ablate=ablate)

    return jax.jit(generate, static_argnames="ablate")
