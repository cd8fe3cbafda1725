"""Keras' stateless scopes as the inpainter's JAX steps use them: the value
each variable holds inside a scope, and the values a scope ends with."""

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
