"""The compiled TensorFlow kernel for the general sampling path (opt-in).

`pixel_sampler.sample_pixels` is built from `keras.ops` and runs on every
backend; on TensorFlow it is a graph of some 60 small kernels. This module
compiles `native/bilinear_sampler.cc`, one fused CPU kernel per direction
(as torch's `grid_sample`), with the same arithmetic: the forward pass gives
the same values bit for bit, the gradients agree up to float32 summation
order. It is off unless asked for:

    CRAM_KERAS_NATIVE_SAMPLER=1 python train_rnn_spn.py ...   # any script

    from cram_keras.ops import native_sampler
    native_sampler.use_native_sampler()          # for the rest of the process
    with native_sampler.native_sampler(False):   # or for a block
        ...

    python -m cram_keras.ops.native              # build (and check) it now

The first use compiles the kernel with the system C++ compiler (`$CXX`,
else `g++`) against the installed TensorFlow's headers (about 10 s) into
`$CRAM_KERAS_CACHE_DIR` (default `~/.cache/cram_keras`), one file per
TensorFlow version and kernel source. When the kernel is on, the sampler
still uses the `keras.ops` path (the reference) wherever the kernel does
not apply: other backends, dtypes other than float32 (e.g. the bfloat16
images of `mixed_bfloat16`), and functions compiled with XLA
(`jit_compile=True`), which cannot run a custom op. SavedModel export
(`cram_keras.training.export`) always traces the `keras.ops` path, so an
exported model loads without this library. The kernel's own gradient is
not differentiable again (no second derivatives through it).
"""

import contextlib
import hashlib
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import threading

import keras

ENV_VAR = "CRAM_KERAS_NATIVE_SAMPLER"
CACHE_ENV_VAR = "CRAM_KERAS_CACHE_DIR"
SOURCE = pathlib.Path(__file__).with_name("native") / "bilinear_sampler.cc"

_lock = threading.Lock()
_state = {"enabled": None, "library": None}


class NativeSamplerError(RuntimeError):
    """The compiled kernel was asked for but cannot be built or loaded."""


def _env_enabled():
    value = os.environ.get(ENV_VAR, "").strip()
    if value in ("", "0"):
        return False
    if value == "1":
        return True
    raise NativeSamplerError(
        f"{ENV_VAR} must be 1 (use the compiled TensorFlow sampler) or 0 / unset "
        f"(the keras.ops sampler). Received: {ENV_VAR}={value!r}"
    )


def is_enabled():
    """Whether the compiled kernel is asked for (by `use_native_sampler` or
    by ``CRAM_KERAS_NATIVE_SAMPLER=1``)."""
    if _state["enabled"] is None:
        return _env_enabled()
    return _state["enabled"]


def use_native_sampler(enabled=True):
    """Turns the compiled kernel on (building it now if needed) or off.

    Raises `NativeSamplerError` when turning it on fails (not the TensorFlow
    backend, no C++ compiler, a compiler error), with what to do.
    """
    if not isinstance(enabled, bool):
        raise TypeError(
            f"`enabled` must be True or False. Received: enabled={enabled!r}"
        )
    if enabled:
        load()
    _state["enabled"] = enabled


@contextlib.contextmanager
def native_sampler(enabled=True):
    """Context manager: the compiled kernel on (or off) inside the block.
    Functions traced inside the block keep the path they were traced with."""
    previous = _state["enabled"]
    use_native_sampler(enabled)
    try:
        yield
    finally:
        _state["enabled"] = previous


def cache_dir():
    if os.environ.get(CACHE_ENV_VAR):
        return pathlib.Path(os.environ[CACHE_ENV_VAR])
    base = os.environ.get("XDG_CACHE_HOME") or pathlib.Path.home() / ".cache"
    return pathlib.Path(base) / "cram_keras"


def _compiler():
    compiler = os.environ.get("CXX") or "g++"
    path = shutil.which(compiler)
    if path is None:
        raise NativeSamplerError(
            f"The compiled sampler needs a C++17 compiler, and {compiler!r} was not "
            "found. Install g++ (or set CXX to a compiler), or leave the compiled "
            f"sampler off ({ENV_VAR}=0): the keras.ops sampler gives the same "
            "results, slower."
        )
    return path


def library_path():
    """Where the kernel for this TensorFlow version and source is cached."""
    import tensorflow as tf

    digest = hashlib.sha256(SOURCE.read_bytes())
    digest.update(" ".join(tf.sysconfig.get_compile_flags()).encode())
    return cache_dir() / f"cram_sampler-tf{tf.__version__}-{digest.hexdigest()[:12]}.so"


def build(force=False, verbose=False):
    """Compiles the kernel into the cache (unless already there); returns
    the library's path."""
    _require_tensorflow()
    import tensorflow as tf

    target = library_path()
    if target.exists() and not force:
        return target
    compiler = _compiler()
    target.parent.mkdir(parents=True, exist_ok=True)
    # Build next to the target and rename: concurrent builds (e.g. test
    # workers) never load a half-written file.
    handle, partial = tempfile.mkstemp(suffix=".so", dir=target.parent)
    os.close(handle)
    command = [
        compiler,
        "-std=c++17",
        "-shared",
        "-fPIC",
        "-O3",
        *tf.sysconfig.get_compile_flags(),
        str(SOURCE),
        "-o",
        partial,
        *tf.sysconfig.get_link_flags(),
    ]
    if verbose:
        print(" ".join(command), file=sys.stderr)
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        os.unlink(partial)
        errors = [line for line in result.stderr.splitlines() if "error" in line]
        raise NativeSamplerError(
            f"Compiling the sampler kernel failed ({compiler}, exit code "
            f"{result.returncode}):\n"
            + "\n".join(errors[:10] or [result.stderr[-2000:]])
            + f"\nLeave the compiled sampler off ({ENV_VAR}=0) to use the keras.ops "
            "sampler."
        )
    os.replace(partial, target)
    return target


def load():
    """The loaded kernel library (built first if needed)."""
    with _lock:
        if _state["library"] is None:
            import tensorflow as tf

            path = build()
            try:
                _state["library"] = tf.load_op_library(str(path))
            except tf.errors.NotFoundError as error:
                raise NativeSamplerError(
                    f"Loading the compiled sampler {path} failed: {error}. Delete "
                    f"the file to rebuild it, or set {ENV_VAR}=0."
                ) from error
        return _state["library"]


def _require_tensorflow():
    if keras.backend.backend() != "tensorflow":
        raise NativeSamplerError(
            "The compiled sampler is a TensorFlow kernel; the Keras backend is "
            f"{keras.backend.backend()!r}. Unset {ENV_VAR} (the keras.ops sampler "
            "runs on every backend)."
        )


def _in_xla_function():
    import tensorflow as tf

    try:
        from tensorflow.python.ops import control_flow_util
    except ImportError:  # the internal module moved: assume XLA, stay exact
        return True
    return control_flow_util.GraphOrParentsInXlaContext(
        tf.compat.v1.get_default_graph()
    )


def applicable(images, x):
    """Whether `sample_pixels(images, x, y, ...)` runs the compiled kernel."""
    if not is_enabled() or keras.backend.backend() != "tensorflow":
        return False
    if keras.backend.standardize_dtype(images.dtype) != "float32":
        return False
    if keras.backend.standardize_dtype(x.dtype) != "float32":
        return False
    return not _in_xla_function()


def sample(images, x, y, padding):
    """Bilinear sampling at pixel coordinates with the compiled kernel;
    the contract of `pixel_sampler.sample_pixels`, except that x and y may
    also be broadcast along the output rows or columns ((B, 1, w) and
    (B, h, 1) for an axis-aligned map)."""
    import tensorflow as tf

    library = load()

    @tf.custom_gradient
    def fused(images, x, y):
        output = library.cram_sample_at_pixels(images, x, y, padding=padding)

        def grad(upstream):
            return library.cram_sample_at_pixels_grad(
                images, x, y, upstream, padding=padding
            )

        return output, grad

    return fused(images, x, y)
