"""The compiled TensorFlow kernel for the general sampling path.

`pixel_sampler.sample_pixels` is built from `keras.ops` and runs on every
backend; on TensorFlow it is a graph of some 60 small kernels. This module
compiles `native/bilinear_sampler.cc`, one fused CPU kernel per direction
(as torch's `grid_sample`), with the same arithmetic: at given pixel
coordinates the forward pass gives the same values bit for bit, the
gradients agree up to float32 summation order. A second pair of ops
(`transform_sample`) takes the transform's parameters instead and computes
the coordinates itself, so that `SpatialTransformer` is one op each way;
its values agree with the keras.ops path to the rounding of the
coordinates.

It is used by default wherever it applies: the TensorFlow backend on a
machine where TensorFlow sees no GPU or TPU, float32 images and
coordinates, outside functions compiled with XLA (`jit_compile=True`, which
cannot run a custom op). Everywhere else the `keras.ops` path runs, which
stays the reference: other backends, other dtypes (e.g. the bfloat16 images
of `mixed_bfloat16`), XLA, and accelerators (the kernel is CPU-only).
SavedModel export (`cram_keras.training.export`) always traces the
`keras.ops` path, so an exported model loads without this library.

`CRAM_KERAS_NATIVE_SAMPLER` chooses:

- unset (or empty): auto, as above. If the kernel cannot be built or
  loaded (no C++ compiler, a compiler error, an unwritable cache folder),
  one line on stderr says why and how to fix it, and the `keras.ops` path
  runs (same values, slower); this is never an error.
- ``0``: off. The `keras.ops` path everywhere; nothing is built or printed.
- ``1``: forced. The kernel wherever the backend, dtype and XLA allow,
  also when TensorFlow sees a GPU (the kernel then runs on the CPU). A
  failure to build or load it raises `NativeSamplerError` with what to do
  (the training scripts refuse to start, exit code 2).

In code (overrides the environment variable)::

    from cram_keras.ops import native_sampler
    native_sampler.use_native_sampler(False)     # off for the rest of the process
    with native_sampler.native_sampler(True):    # forced for a block
        ...
    native_sampler.use_native_sampler(None)      # back to the environment

    python -m cram_keras.ops.native              # build (and check) it now

The first use compiles the kernel with the system C++ compiler (`$CXX`,
else `g++`) against the installed TensorFlow's headers (about 10 s, one
line on stderr while it builds) into the `kernels` folder of the project's
cache, `$CRAM_KERAS_CACHE` (default `~/.cache/cram_keras`): one file per
machine architecture, TensorFlow version and kernel source, built once and
reused by every later process. Processes that start at once (test workers,
two trainings) build it once: one builds under a file lock into a
temporary file and renames it into place, the others wait and load the
result. A cached library whose checksum does not match the one recorded at
build time (a damaged or half-copied file) is never loaded; it is rebuilt.

The kernel's own gradient is differentiable again through the `keras.ops`
path (second derivatives cost what they cost there).

The same library holds the fused one-channel convolution, ReLU and 2x2
max-pooling of `cram_keras.ops.conv_pool` (`conv_relu_pool` here), used
under the same setting and conditions.
"""

import contextlib
import hashlib
import os
import pathlib
import platform
import shutil
import subprocess
import sys
import tempfile
import threading

import keras

from cram_keras.utils import CACHE_VARIABLE, cache_folder

try:
    import fcntl
except ImportError:  # not POSIX: atomic renames still keep the cache whole
    fcntl = None

ENV_VAR = "CRAM_KERAS_NATIVE_SAMPLER"
# The widest vector loops the kernel may run (it picks the widest the CPU
# has, up to this): to check the narrower loops on a CPU with wider ones.
ISA_ENV_VAR = "CRAM_KERAS_SAMPLER_ISA"
ISAS = ("avx512", "avx2", "scalar")
SOURCE = pathlib.Path(__file__).with_name("native") / "bilinear_sampler.cc"
# Built into the same library: the fused one-channel convolution, ReLU and
# max-pooling of `cram_keras.ops.conv_pool`.
CONV_POOL_SOURCE = pathlib.Path(__file__).with_name("native") / "conv_relu_pool.cc"


def _sources():
    return (SOURCE, CONV_POOL_SOURCE)


# Compiling takes about 10 s; this only guards against a hung compiler.
BUILD_TIMEOUT_S = 900
# A portable build: the AVX-512 or AVX2 loops are chosen at run time. No fused
# multiply-adds, so that the values are those of the keras.ops path.
COMPILE_FLAGS = ("-std=c++17", "-shared", "-fPIC", "-O3", "-ffp-contract=off")

_lock = threading.RLock()
# enabled: True (forced), False (off), None (the environment variable).
# library: the loaded op library. failure: why auto mode fell back (once
# per process). accelerator: whether TensorFlow sees a GPU or TPU.
# second_derivative: whether the gradient op's gradient is registered.
_state = {
    "enabled": None,
    "library": None,
    "failure": None,
    "accelerator": None,
    "second_derivative": False,
    "path": None,
}
# Set while the second derivative re-derives the gradient with keras.ops.
_local = threading.local()
# The keras.ops functions that the kernel's second derivatives differentiate,
# registered by the modules that define them and import this one
# (`set_reference`): "pixels", `pixel_sampler.sample_pixels`; "transform", the
# keras.ops path of `transform_sample` (in `sampling`); "conv_pool",
# `conv_pool.reference`.
_references = {}


class NativeSamplerError(RuntimeError):
    """The compiled kernel cannot be built or loaded (or is misconfigured).

    `brief` is a one-line form of the message: what went wrong and what to
    do, for the line printed when auto mode falls back to `keras.ops`."""

    def __init__(self, message, brief=None):
        super().__init__(message)
        self.brief = brief or message.splitlines()[0]


def _env_mode():
    value = os.environ.get(ENV_VAR, "").strip()
    if value == "":
        return "auto"
    if value == "0":
        return "off"
    if value == "1":
        return "on"
    raise NativeSamplerError(
        f"{ENV_VAR} must be 1 (always use the compiled TensorFlow sampler), 0 "
        "(the keras.ops sampler) or unset (the compiled sampler wherever it "
        f"applies and builds). Received: {ENV_VAR}={value!r}"
    )


def mode():
    """The setting: `"auto"`, `"on"` (forced) or `"off"`; from
    `use_native_sampler`, else from ``CRAM_KERAS_NATIVE_SAMPLER``."""
    enabled = _state["enabled"]
    if enabled is None:
        return _env_mode()
    return "on" if enabled else "off"


def is_enabled():
    """Whether the compiled kernel is forced on (``CRAM_KERAS_NATIVE_SAMPLER=1``
    or `use_native_sampler(True)`), so that a failure to build it is an
    error. False in auto mode, where it is used if it builds; see `mode`."""
    return mode() == "on"


def use_native_sampler(enabled=True):
    """Forces the compiled kernel on (building it now if needed), turns it
    off, or (`None`) goes back to ``CRAM_KERAS_NATIVE_SAMPLER`` (auto when
    unset).

    Raises `NativeSamplerError` when forcing it on fails (not the TensorFlow
    backend, no C++ compiler, a compiler error), with what to do; the
    setting is then left as it was.
    """
    if enabled is not None and not isinstance(enabled, bool):
        raise TypeError(
            f"`enabled` must be True, False or None. Received: enabled={enabled!r}"
        )
    if enabled:
        load()
    _state["enabled"] = enabled


@contextlib.contextmanager
def native_sampler(enabled=True):
    """Context manager: `use_native_sampler(enabled)` inside the block.
    Functions traced inside the block keep the path they were traced with."""
    previous = _state["enabled"]
    use_native_sampler(enabled)
    try:
        yield
    finally:
        _state["enabled"] = previous


def cache_dir():
    """The folder of the compiled kernels: `kernels` in `$CRAM_KERAS_CACHE`
    (default `~/.cache/cram_keras`, the datasets' cache folder)."""
    return pathlib.Path(cache_folder()) / "kernels"


def _compiler():
    compiler = os.environ.get("CXX") or "g++"
    path = shutil.which(compiler)
    if path is None:
        raise NativeSamplerError(
            f"The compiled sampler needs a C++17 compiler, and {compiler!r} was not "
            "found. Install g++ (or set CXX to a compiler), or leave the compiled "
            f"sampler off ({ENV_VAR}=0): the keras.ops sampler gives the same "
            "results, slower.",
            brief=f"no C++ compiler: {compiler!r} was not found. Install g++ "
            "(or set CXX to a C++17 compiler) to use it",
        )
    return path


def library_path():
    """Where the kernel for this machine, TensorFlow version and source is
    cached."""
    import tensorflow as tf

    digest = hashlib.sha256()
    for path in _sources():
        try:
            digest.update(path.read_bytes())
        except OSError as error:
            raise NativeSamplerError(
                f"The compiled sampler's source is missing ({error}); reinstall "
                f"cram_keras, or leave the compiled sampler off ({ENV_VAR}=0).",
                brief=f"its source is missing ({path}); reinstall cram_keras",
            ) from error
    digest.update(b"one translation unit")  # how the sources are compiled
    digest.update(" ".join(COMPILE_FLAGS).encode())
    digest.update(" ".join(tf.sysconfig.get_compile_flags()).encode())
    digest.update(" ".join(tf.sysconfig.get_link_flags()).encode())
    machine = platform.machine() or "unknown"
    return (
        cache_dir()
        / f"cram_sampler-tf{tf.__version__}-{machine}-{digest.hexdigest()[:12]}.so"
    )


def _stamp_path(path):
    return path.with_name(path.name + ".sha256")


def _checksum(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _is_whole(path):
    """Whether `path` is a library this module built and finished writing:
    its checksum matches the one recorded after the build."""
    try:
        return _stamp_path(path).read_text().strip() == _checksum(path)
    except OSError:
        return False


def _write_atomically(path, data):
    handle, partial = tempfile.mkstemp(
        prefix=path.name + ".", suffix=".tmp", dir=path.parent
    )
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.chmod(partial, 0o644)
        os.replace(partial, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(partial)
        raise


@contextlib.contextmanager
def _build_lock(target):
    """An exclusive file lock next to `target`, held while it is built: one
    process builds, the others wait (and then find it built). The kernel
    releases it if the process dies."""
    if fcntl is None:
        yield
        return
    with open(target.with_name(target.name + ".lock"), "a") as file:
        try:
            fcntl.flock(file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            _say(
                "waiting for another process to finish building the compiled "
                f"sampler kernel ({target})"
            )
            fcntl.flock(file.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(file.fileno(), fcntl.LOCK_UN)


def _say(line):
    print(f"cram_keras: {line}", file=sys.stderr, flush=True)


def build(force=False, verbose=False):
    """Compiles the kernel into the cache (unless a whole one is there);
    returns the library's path. Safe to call from several processes at once.
    """
    _require_tensorflow()
    target = library_path()
    if not force and _is_whole(target):
        return target
    compiler = _compiler()
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with _build_lock(target):
            # Another process may have built it while this one waited.
            if not force and _is_whole(target):
                return target
            # Temporary files of this library left by a build that was killed
            # (no build runs now: this process holds the lock).
            for stale in target.parent.glob(target.name + ".*.tmp"):
                with contextlib.suppress(OSError):
                    stale.unlink()
            _compile(compiler, target, verbose)
    except OSError as error:
        raise NativeSamplerError(
            f"Cannot write the compiled sampler to {target.parent}: {error}. Set "
            f"{CACHE_VARIABLE} to a writable folder, or leave the compiled sampler "
            f"off ({ENV_VAR}=0).",
            brief=f"cannot write to {target.parent} ({error.strerror or error}). "
            f"Set {CACHE_VARIABLE} to a writable folder to use it",
        ) from error
    return target


def _compile(compiler, target, verbose):
    """Compiles into a temporary file next to `target`, then renames it into
    place and records its checksum: `target` is never half-written."""
    import tensorflow as tf

    _say(
        f"building the compiled sampler kernel for TensorFlow {tf.__version__} "
        f"(once per machine and TensorFlow version, about 10 s) into {target}"
    )
    handle, partial = tempfile.mkstemp(
        prefix=target.name + ".", suffix=".tmp", dir=target.parent
    )
    os.close(handle)
    # One translation unit that includes every source: TensorFlow's headers,
    # most of the compile time, are parsed once instead of once per source.
    work = tempfile.TemporaryDirectory(prefix="cram_keras_build_")
    try:
        unit = _translation_unit(pathlib.Path(work.name))
        command = [
            compiler,
            *COMPILE_FLAGS,
            *tf.sysconfig.get_compile_flags(),
            *unit,
            "-o",
            partial,
            *tf.sysconfig.get_link_flags(),
        ]
        if verbose:
            print(" ".join(command), file=sys.stderr)
            if unit[0].startswith(work.name):
                print(
                    f"{unit[0]}:\n{pathlib.Path(unit[0]).read_text()}", file=sys.stderr
                )
        try:
            result = subprocess.run(
                command, capture_output=True, text=True, timeout=BUILD_TIMEOUT_S
            )
        except OSError as error:
            raise NativeSamplerError(
                f"Running the C++ compiler {compiler} failed: {error}. Install g++ "
                f"(or set CXX to a compiler), or leave the compiled sampler off "
                f"({ENV_VAR}=0).",
                brief=f"running the compiler {compiler} failed ({error})",
            ) from None
        except subprocess.TimeoutExpired:
            raise NativeSamplerError(
                f"Compiling the sampler kernel ({compiler}) did not finish in "
                f"{BUILD_TIMEOUT_S} s. Leave the compiled sampler off ({ENV_VAR}=0) "
                "to use the keras.ops sampler.",
                brief=f"compiling it ({compiler}) did not finish in {BUILD_TIMEOUT_S} s",
            ) from None
        if result.returncode != 0:
            errors = [line for line in result.stderr.splitlines() if "error" in line]
            raise NativeSamplerError(
                f"Compiling the sampler kernel failed ({compiler}, exit code "
                f"{result.returncode}):\n"
                + "\n".join(errors[:10] or [result.stderr[-2000:]])
                + f"\nLeave the compiled sampler off ({ENV_VAR}=0) to use the "
                "keras.ops sampler.",
                brief=f"compiling it failed ({compiler}, exit code "
                f"{result.returncode}). Run `python -m cram_keras.ops.native` to "
                "see the compiler's errors",
            )
        checksum = _checksum(pathlib.Path(partial))
        os.chmod(partial, 0o755)  # mkstemp's 0600 would hide it from other users
        os.replace(partial, target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(partial)
        work.cleanup()
    _write_atomically(_stamp_path(target), (checksum + "\n").encode())


def _translation_unit(folder):
    """What the compiler is given: a file in ``folder`` that includes every
    source, or the sources themselves where a path cannot be written in an
    #include line."""
    sources = [str(path) for path in _sources()]
    if any('"' in path or "\n" in path for path in sources):
        return sources
    unit = folder / "cram_kernels.cc"
    unit.write_text("".join(f'#include "{path}"\n' for path in sources))
    return [str(unit)]


def _check_isa_setting():
    value = os.environ.get(ISA_ENV_VAR)
    if value is not None and value not in ISAS:
        raise NativeSamplerError(
            f"{ISA_ENV_VAR} must be one of {', '.join(ISAS)} (the widest vector "
            "loops the compiled sampler may run; unset: the widest this CPU "
            f"has). Received: {ISA_ENV_VAR}={value!r}",
            brief=f"{ISA_ENV_VAR}={value!r} is not one of {', '.join(ISAS)}. Unset it",
        )


def load():
    """The loaded kernel library (built first if needed). Raises
    `NativeSamplerError` when it cannot be built or loaded, or when
    ``CRAM_KERAS_SAMPLER_ISA`` is not one of `ISAS`."""
    with _lock:
        if _state["library"] is None:
            import tensorflow as tf

            _check_isa_setting()

            path = build()
            try:
                library = tf.load_op_library(str(path))
            except (tf.errors.OpError, OSError) as error:
                raise NativeSamplerError(
                    f"Loading the compiled sampler {path} failed: {error}. Delete "
                    f"the file to rebuild it, or set {ENV_VAR}=0.",
                    brief=f"loading {path} failed ({str(error).splitlines()[0]}). "
                    "Delete the file to rebuild it",
                ) from error
            _register_second_derivative(tf)
            _state["library"] = library
            _state["path"] = path
        return _state["library"]


def vector_isa():
    """Which loops the loaded kernel runs in this process: ``"avx512"``,
    ``"avx2"`` or ``"scalar"`` (the widest the CPU has, capped by
    ``CRAM_KERAS_SAMPLER_ISA``). Loads the kernel first if needed."""
    import ctypes

    load()
    function = ctypes.CDLL(str(_state["path"])).CramSamplerIsa
    function.restype = ctypes.c_int
    return ISAS[len(ISAS) - 1 - function()]  # the library counts from "scalar"


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


def _accelerator_visible():
    """Whether TensorFlow sees a device other than the CPU (where auto mode
    leaves the sampling to the keras.ops path, which runs there)."""
    if _state["accelerator"] is None:
        import tensorflow as tf

        _state["accelerator"] = any(
            device.device_type != "CPU" for device in tf.config.list_logical_devices()
        )
    return _state["accelerator"]


def _auto_load():
    """Auto mode: the library, or None (once per process, one line on
    stderr says why and how to fix it) when it cannot be built or loaded."""
    with _lock:
        if _state["library"] is not None:
            return _state["library"]
        if _state["failure"] is not None:
            return None
        try:
            return load()
        except Exception as error:  # noqa: BLE001 - auto mode never raises
            first_line = (str(error).splitlines() or [""])[0]
            brief = getattr(error, "brief", None) or (
                f"{type(error).__name__}: {first_line}"
            )
            _state["failure"] = brief
            _say(
                f"the compiled sampler kernel is unavailable: {brief}. Sampling "
                f"with the keras.ops path instead (same values, slower); set "
                f"{ENV_VAR}=0 to silence this."
            )
            return None


def applicable(images, x):
    """Whether `sample_pixels(images, x, y, ...)` runs the compiled kernel.

    In auto mode the first call that would use it builds and loads it;
    when that fails, False (with one line on stderr). When forced, a failure
    to build or load raises `NativeSamplerError`."""
    current = mode()
    if current == "off" or getattr(_local, "keras_ops", False):
        return False
    if keras.backend.backend() != "tensorflow":
        return False
    if keras.backend.standardize_dtype(images.dtype) != "float32":
        return False
    if keras.backend.standardize_dtype(x.dtype) != "float32":
        return False
    if _in_xla_function():
        return False
    if current == "on":
        load()
        return True
    if _accelerator_visible():
        return False
    return _auto_load() is not None


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


def transform_sample(images, params, transform, output_size, padding, align_corners):
    """Sampling by an affine map's parameters with the compiled kernel, one
    op each way: the contract of `sampling.affine_sample` (`params` its
    theta as (B, 6)) and `sampling.scale_translate_sample` (`"attention"`
    (B, 3), `"anisotropic"` (B, 4)). The op computes the pixel coordinates
    from the parameters itself, in float32 as the keras.ops path does (the
    two agree to the rounding of the coordinates), and its gradient sums
    the coordinates' gradient into the parameters'. Inputs already checked."""
    library = load()
    return library.cram_transform_sample(
        images,
        params,
        transform=transform,
        output_height=output_size[0],
        output_width=output_size[1],
        padding=padding,
        align_corners=align_corners,
    )


def conv_relu_pool(images, kernel, bias):
    """A one-channel "valid" convolution, its ReLU and a 2x2 max-pooling as
    one op each way with the compiled kernel: the contract of
    `cram_keras.ops.conv_pool.conv_relu_max_pool`. Inputs already checked."""
    pooled, _ = load().cram_conv_relu_pool(images, kernel, bias)
    return pooled


def _conv_relu_pool_gradient(op, upstream, _which):
    images, kernel, bias = op.inputs
    pooled, which = op.outputs
    return _state["library"].cram_conv_relu_pool_grad(
        images, kernel, bias, pooled, which, upstream
    )


_TRANSFORM_ATTRS = ("transform", "output_height", "output_width", "padding")


def _transform_attrs(op):
    attrs = {}
    for name in _TRANSFORM_ATTRS:
        value = op.get_attr(name)
        attrs[name] = value.decode() if isinstance(value, bytes) else value
    attrs["align_corners"] = op.get_attr("align_corners")
    return attrs


def _transform_sample_gradient(op, upstream):
    images, params = op.inputs
    return _state["library"].cram_transform_sample_grad(
        images, params, upstream, **_transform_attrs(op)
    )


def set_reference(name, function):
    """Registers the keras.ops path that a kernel's second derivative
    differentiates: `name` "pixels", a function with the signature of
    `sample`, "transform", one with that of `transform_sample`, or
    "conv_pool", one with that of `conv_relu_pool`.

    Called by `pixel_sampler` and `sampling` when they are imported (this
    module comes below them and imports neither); importing anything from
    `cram_keras.ops` imports both."""
    _references[name] = function


@contextlib.contextmanager
def _keras_ops_only():
    previous, _local.keras_ops = getattr(_local, "keras_ops", False), True
    try:
        yield
    finally:
        _local.keras_ops = previous


def _register_second_derivative(tf):
    """The gradient of the kernel's gradient op: the vector-Jacobian product
    of the keras.ops path's gradient (same function, differentiable)."""
    if _state["second_derivative"]:
        return

    def second_derivative(op, *cotangents):
        sample_pixels = _references["pixels"]
        images, x, y, upstream = op.inputs
        padding = op.get_attr("padding")
        if isinstance(padding, bytes):
            padding = padding.decode()
        # (B, h, w): x and y may be broadcast along the rows or columns.
        shape = tf.shape(upstream)[:3]
        with _keras_ops_only():
            with tf.GradientTape() as outer:
                outer.watch([images, x, y, upstream])
                with tf.GradientTape() as inner:
                    inner.watch([images, x, y])
                    output = sample_pixels(
                        images,
                        tf.broadcast_to(x, shape),
                        tf.broadcast_to(y, shape),
                        padding,
                    )
                grads = inner.gradient(
                    output, [images, x, y], output_gradients=upstream
                )
            cotangents = [
                tf.zeros_like(g) if c is None else c
                for g, c in zip(grads, cotangents, strict=True)
            ]
            return outer.gradient(
                grads,
                [images, x, y, upstream],
                output_gradients=cotangents,
                unconnected_gradients=tf.UnconnectedGradients.ZERO,
            )

    def transform_second_derivative(op, *cotangents):
        images, params, upstream = op.inputs
        attrs = _transform_attrs(op)
        output_size = (attrs.pop("output_height"), attrs.pop("output_width"))
        with _keras_ops_only():
            with tf.GradientTape() as outer:
                outer.watch([images, params, upstream])
                with tf.GradientTape() as inner:
                    inner.watch([images, params])
                    output = _references["transform"](
                        images, params, output_size=output_size, **attrs
                    )
                grads = inner.gradient(
                    output, [images, params], output_gradients=upstream
                )
            cotangents = [
                tf.zeros_like(g) if c is None else c
                for g, c in zip(grads, cotangents, strict=True)
            ]
            return outer.gradient(
                grads,
                [images, params, upstream],
                output_gradients=cotangents,
                unconnected_gradients=tf.UnconnectedGradients.ZERO,
            )

    def conv_pool_second_derivative(op, *cotangents):
        images, kernel, bias, pooled, _which, upstream = op.inputs
        with _keras_ops_only():
            with tf.GradientTape() as outer:
                outer.watch([images, kernel, bias, upstream])
                with tf.GradientTape() as inner:
                    inner.watch([images, kernel, bias])
                    output = _references["conv_pool"](images, kernel, bias)
                grads = inner.gradient(
                    output, [images, kernel, bias], output_gradients=upstream
                )
            cotangents = [
                tf.zeros_like(g) if c is None else c
                for g, c in zip(grads, cotangents, strict=True)
            ]
            d_images, d_kernel, d_bias, d_upstream = outer.gradient(
                grads,
                [images, kernel, bias, upstream],
                output_gradients=cotangents,
                unconnected_gradients=tf.UnconnectedGradients.ZERO,
            )
        # The pooled values and which position they came from set only the
        # ReLU's and the maximum's piecewise-constant choices: no gradient.
        return d_images, d_kernel, d_bias, tf.zeros_like(pooled), None, d_upstream

    for op_type, gradient in (
        ("CramConvReluPool", _conv_relu_pool_gradient),
        ("CramConvReluPoolGrad", conv_pool_second_derivative),
        ("CramSampleAtPixelsGrad", second_derivative),
        ("CramTransformSample", _transform_sample_gradient),
        ("CramTransformSampleGrad", transform_second_derivative),
    ):
        try:
            tf.RegisterGradient(op_type)(gradient)
        except KeyError:  # registered already (by an earlier copy of this module)
            pass
    _state["second_derivative"] = True
