"""JAX's persistent compilation cache for the scripts' runs.

On JAX every process compiles its training, evaluation and prediction steps
with XLA before its first batch, which on a CPU can take longer than a
short run's training, and again every time a killed run is resumed, a run
is rescored with --eval-only or a study moves on to its next run of the same
shapes (a search's next dropout rate, say: the rate is a variable of the
step, not part of the program). The
scripts (and run_study.py) therefore point JAX's persistent compilation
cache at ``jax`` in the cache folder (``$CRAM_KERAS_CACHE``, default
``~/.cache/cram_keras``), so that a later process loads each program JAX
wrote there instead of compiling it again. What JAX writes is JAX's choice
(its defaults: programs that took at least a second to compile, keyed by
the program, the compile options, the device and the JAX version), so a
changed model, shape, backend version or device compiles anew.

``CRAM_KERAS_JAX_CACHE=0`` leaves the cache off; a caller who set
``JAX_COMPILATION_CACHE_DIR`` keeps JAX's own settings. Nothing changes on
TensorFlow.
"""

import os

from cram_keras import utils

ENV_VAR = "CRAM_KERAS_JAX_CACHE"
_VALUES = ("", "0", "1")


class CompileCacheError(ValueError):
    """A bad CRAM_KERAS_JAX_CACHE value."""


def cache_folder():
    """``jax`` in the cache folder (``$CRAM_KERAS_CACHE`` or
    ``~/.cache/cram_keras``)."""
    return os.path.join(utils.cache_folder(), "jax")


def enable_jax_compilation_cache(backend):
    """On the JAX backend, points JAX's persistent compilation cache at
    `cache_folder()` unless ``CRAM_KERAS_JAX_CACHE=0`` or the caller set
    ``JAX_COMPILATION_CACHE_DIR``. Call it before the process compiles
    anything: JAX decides once per process whether it uses a cache.

    Returns:
        The folder now used, or None where this left JAX as it was.

    Raises:
        CompileCacheError: CRAM_KERAS_JAX_CACHE is not unset, ``0`` or ``1``.
    """
    value = os.environ.get(ENV_VAR, "")
    setting = value.strip()
    if setting not in _VALUES:
        raise CompileCacheError(
            f"{ENV_VAR} must be unset or 1 (JAX's compiled steps cached in "
            f"{cache_folder()}) or 0 (no cache). Received: {ENV_VAR}={value!r}"
        )
    if (
        backend != "jax"
        or setting == "0"
        or os.environ.get("JAX_COMPILATION_CACHE_DIR")
    ):
        return None
    import jax

    folder = cache_folder()
    jax.config.update("jax_compilation_cache_dir", folder)
    return folder
