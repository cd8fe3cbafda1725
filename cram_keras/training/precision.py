"""The dtype policy a model is built and trained under (``--dtype-policy``)."""

import contextlib

import keras


@contextlib.contextmanager
def dtype_policy_scope(config):
    """Builds and trains under ``config.dtype_policy`` where the experiment
    has that setting (e.g. ``"mixed_bfloat16"``); restores the global policy
    afterwards."""
    policy = getattr(config, "dtype_policy", None)
    if policy is None:
        yield
        return
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(policy)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)
