"""Shared helpers for the layer and op tests (our own; no `keras.src` imports).

Test modules import it as `from testing import ...` (pytest puts `tests/` on
`sys.path` because `tests/conftest.py` lives there).

- `run_serialization_test(layer, inputs)`: config and Keras-serialisation
  round trips rebuild an equal layer with equal outputs.
- `run_model_saving_test(model, inputs, path)`: a `.keras` save and load
  gives identical outputs.
- `run_script_in_process(path, *args)`: a training script's `main(argv)` in
  this process, returned as `python path *args` would return it, for the
  parsing and validation paths (no new Python and TensorFlow start-up).
- `vjp(fn, primals, cotangent)`: output and vector-Jacobian products on the
  current backend (TensorFlow, JAX or PyTorch).
- `native_sampler_unavailable()`: why the compiled TensorFlow sampler
  cannot be built here, or None.
- `held_by_another_process(directory)`: a context in which another (small,
  TensorFlow-free) process holds `directory` (`cram_keras.training.run_lock`).
- `run_workers(argv)`: `python *argv` as the two workers of one
  MultiWorkerMirroredStrategy cluster on 127.0.0.1 (TF_CONFIG).
- `supports_float64()`: whether keras.ops compute in float64 on this
  backend (only TensorFlow; elsewhere Keras promotes float64 to float32).
- `newest_best_lost(run_dir, into)`: a copy of a finished two-epoch run
  whose newest checkpoint record names a missing, then a damaged,
  best-weights file while the older record's stays intact (yields the
  copy, the newest record and the file's name, once for each).
- `reference_affine_grid`, `reference_bilinear_sample`, `pixel_coordinates`:
  a NumPy loop reference of PyTorch's `affine_grid` / `grid_sample`
  (bilinear, zeros or border padding, both `align_corners`), one output pixel
  at a time in float64, written from the definitions.
"""

import json
import os
import pathlib
import socket
import subprocess
import sys

import keras
import numpy as np

# The repository.
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def backend():
    return keras.backend.backend()


def supports_float64():
    """Whether keras.ops keep float64 (they promote it to float32 on JAX and
    PyTorch, e.g. in `matmul`)."""
    ones = np.ones((1, 1), np.float64)
    product = keras.ops.matmul(ones, ones)
    return keras.backend.standardize_dtype(product.dtype) == "float64"


def to_numpy(x):
    return keras.ops.convert_to_numpy(x)


def vjp(fn, primals, cotangent):
    """Returns `(fn(*primals), grads)`, grads of `sum(fn(*primals) * cotangent)`.

    `primals` is a sequence of arrays; `grads` a tuple of NumPy arrays, one
    per primal.
    """
    name = backend()
    if name == "tensorflow":
        import tensorflow as tf

        primals = [tf.convert_to_tensor(p) for p in primals]
        with tf.GradientTape() as tape:
            tape.watch(primals)
            output = fn(*primals)
        grads = tape.gradient(
            output, primals, output_gradients=tf.cast(cotangent, output.dtype)
        )
    elif name == "jax":
        import jax
        import jax.numpy as jnp

        primals = [jnp.asarray(p) for p in primals]
        output, pullback = jax.vjp(fn, *primals)
        grads = pullback(jnp.asarray(cotangent, output.dtype))
    elif name == "torch":
        import torch

        primals = [torch.tensor(np.asarray(p), requires_grad=True) for p in primals]
        output = fn(*primals)
        grads = torch.autograd.grad(
            output, primals, torch.tensor(np.asarray(cotangent), dtype=output.dtype)
        )
    else:
        raise NotImplementedError(f"vjp() does not support backend={name!r}")
    return to_numpy(output), tuple(to_numpy(g) for g in grads)


def run_serialization_test(layer, inputs):
    """Rebuilds `layer` from its config and from `keras.saving.serialize_keras_object`.

    Asserts that the configs survive both round trips unchanged and that the
    rebuilt layers give the same outputs on `inputs`.
    """
    expected = to_numpy(layer(inputs))
    config = layer.get_config()
    rebuilt = layer.__class__.from_config(config)
    assert rebuilt.get_config() == config
    np.testing.assert_array_equal(to_numpy(rebuilt(inputs)), expected)

    serialized = keras.saving.serialize_keras_object(layer)
    revived = keras.saving.deserialize_keras_object(serialized)
    assert type(revived) is type(layer)
    assert revived.get_config() == config
    np.testing.assert_array_equal(to_numpy(revived(inputs)), expected)
    return rebuilt


def run_model_saving_test(model, inputs, path):
    """Saves `model` to `path` (a `.keras` file), reloads it, compares outputs."""
    expected = to_numpy(model(inputs))
    model.save(path)
    restored = keras.saving.load_model(path)
    np.testing.assert_array_equal(to_numpy(restored(inputs)), expected)
    return restored


# === NumPy reference of torch's affine_grid / grid_sample ===


def reference_positions(size, align_corners):
    """Normalised coordinates of the pixel centres along one axis."""
    if size == 1:
        return np.zeros(1)
    k = np.arange(size, dtype=np.float64)
    if align_corners:
        return -1.0 + 2.0 * k / (size - 1)
    return (2.0 * k + 1.0) / size - 1.0


def reference_affine_grid(theta, out_h, out_w, align_corners):
    xs = reference_positions(out_w, align_corners)
    ys = reference_positions(out_h, align_corners)
    grid = np.zeros((len(theta), out_h, out_w, 2))
    for b, t in enumerate(np.asarray(theta, np.float64)):
        for i in range(out_h):
            for j in range(out_w):
                grid[b, i, j] = t @ np.array([xs[j], ys[i], 1.0])
    return grid


def reference_bilinear_sample(images, grid, padding, align_corners):
    images = np.asarray(images, np.float64)
    batch, height, width, channels = images.shape
    out = np.zeros((*grid.shape[:3], channels))
    for b, i, j in np.ndindex(*grid.shape[:3]):
        gx, gy = grid[b, i, j]
        if align_corners:
            x, y = (gx + 1) / 2 * (width - 1), (gy + 1) / 2 * (height - 1)
        else:
            x, y = ((gx + 1) * width - 1) / 2, ((gy + 1) * height - 1) / 2
        if padding == "border":
            x, y = np.clip(x, 0, width - 1), np.clip(y, 0, height - 1)
        x0, y0 = int(np.floor(x)), int(np.floor(y))
        for yy, wy in ((y0, 1 - (y - y0)), (y0 + 1, y - y0)):
            for xx, wx in ((x0, 1 - (x - x0)), (x0 + 1, x - x0)):
                if 0 <= yy < height and 0 <= xx < width:
                    out[b, i, j] += wy * wx * images[b, yy, xx]
    return out


def pixel_coordinates(theta, in_h, in_w, out_h, out_w, align_corners):
    """Reference pixel coordinates (x, y) of every output pixel, float64."""
    grid = reference_affine_grid(theta, out_h, out_w, align_corners)
    if align_corners:
        return (grid[..., 0] + 1) / 2 * (in_w - 1), (grid[..., 1] + 1) / 2 * (in_h - 1)
    return ((grid[..., 0] + 1) * in_w - 1) / 2, ((grid[..., 1] + 1) * in_h - 1) / 2


# === SavedModel serving, in a fresh process ===

_SERVE_SCRIPT = """
import json, sys
import numpy as np, tensorflow as tf

saved_model, inputs_path, out_path, cases_path = sys.argv[1:5]
served = tf.saved_model.load(saved_model)
data = np.load(inputs_path)
names = json.loads(str(data["__names__"]))
good = [data[n] for n in names]
np.save(out_path, served.serve(*[tf.constant(x) for x in good]).numpy())


def variants(i, x):
    n = names[i]
    h, w, c = x.shape[1:]
    yield n + ": height + 1", np.zeros((len(x), h + 1, w, c), np.float32)
    yield n + ": channels + 1", np.zeros((len(x), h, w, c + 1), np.float32)
    yield n + ": no batch axis", x[0]
    yield n + ": NaN", np.where(np.arange(x.size).reshape(x.shape) == 0, np.nan, x).astype(np.float32)
    if n in binary:
        yield n + ": value 0.5", np.full_like(x, 0.5)
    else:
        yield n + ": uint8 0..255", np.full(x.shape, 255, np.uint8)
        yield n + ": float 0..255", np.full_like(x, 255.0)


binary = set(json.loads(str(data["__binary__"])))
report = {}
for i, x in enumerate(good):
    for case, bad in variants(i, x):
        args = list(good)
        args[i] = bad
        try:
            served.serve(*args)
            report[case] = ["accepted", ""]
        except Exception as e:
            report[case] = [type(e).__name__, str(e)]
try:
    served.serve(*good[:-1])
    report["missing " + names[-1]] = ["accepted", ""]
except Exception as e:
    report["missing " + names[-1]] = [type(e).__name__, str(e)]
with open(cases_path, "w") as f:
    json.dump(report, f)
"""


def run_script_in_process(path, *args):
    """Runs the training script at `path` as `python path *args` would, but
    in this process: its `main(argv)` with stdout and stderr captured.

    Returns a `subprocess.CompletedProcess`: `returncode` is main's return
    value or the `SystemExit` code (argparse's 2 for a bad flag, 0 after
    `--help`); an uncaught exception gives 1 and its traceback in `stderr`,
    as the interpreter prints it. For flag and validation errors and
    `--help`: a new process would add only the Python and TensorFlow
    start-up (about 9 s on 2 cores). Runs that train stay in subprocesses.
    """
    import contextlib
    import importlib.util
    import io
    import pathlib
    import subprocess
    import traceback

    spec = importlib.util.spec_from_file_location(
        f"_script_{pathlib.Path(path).stem}", path
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = module.main(list(args))
        except SystemExit as exit_:
            code = exit_.code
            if code is not None and not isinstance(code, int):
                print(code, file=sys.stderr)
                code = 1
        except Exception:
            traceback.print_exc()
            code = 1
    return subprocess.CompletedProcess(
        [path, *args], code or 0, out.getvalue(), err.getvalue()
    )


def serve_in_fresh_process(saved_model, inputs, tmp_path, binary=(), env=None):
    """Loads `saved_model` with plain TensorFlow in a new Python process and
    calls its `serve` endpoint on `inputs` (a dict name -> float32 array, in
    argument order) and on bad variants of each input: wrong height, wrong
    channels, no batch axis, a NaN, and values outside the input's range
    (0..255 as uint8 and as float for images; 0.5 for the inputs named in
    `binary`), and with the last argument missing.

    Returns `(output, report)`: the served output for the good inputs and
    `{case: (exception type or "accepted", message)}`.
    """
    import json
    import os
    import subprocess
    import sys

    inputs_path = os.path.join(tmp_path, "serve_inputs.npz")
    np.savez(
        inputs_path,
        __names__=json.dumps(list(inputs)),
        __binary__=json.dumps(list(binary)),
        **inputs,
    )
    out_path = os.path.join(tmp_path, "served.npy")
    cases_path = os.path.join(tmp_path, "serve_cases.json")
    env = dict(os.environ if env is None else env, TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            _SERVE_SCRIPT,
            str(saved_model),
            inputs_path,
            out_path,
            cases_path,
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(cases_path) as f:
        report = json.load(f)
    return np.load(out_path), report


def assert_clear_serving_errors(report, specs):
    """Every bad case in `report` (from `serve_in_fresh_process`) was refused
    with a short message naming the input and what it expects; `specs` maps
    each input name to its expected shape without the batch axis."""
    for case, (kind, message) in report.items():
        assert kind != "accepted", f"{case}: accepted"
        name = case.split(":")[0].removeprefix("missing ")
        if case.startswith("missing "):
            # TensorFlow's own binding error, raised before the graph runs.
            assert f"missing a required argument: '{name}'" in message, message
            continue
        assert kind == "InvalidArgumentError", (case, kind, message[:500])
        assert len(message) < 600, (case, len(message), message[:600])
        assert f"serve({name}): {name} must" in message, (case, message)
        if "height" in case or "channels" in case or "batch" in case:
            dims = ", ".join(str(d) for d in specs[name])
            assert f"must have shape (batch, {dims}); received shape" in message
        elif "0.5" in case:
            assert "must hold only 0 and 1; received min] [0.5] [max] [0.5]" in message
        elif "255" in case:
            assert "in [0, 1]" in message and "[max] [255]" in message, message
        else:  # one NaN
            assert "[NaN or inf] [1]" in message, message


def native_sampler_unavailable():
    """Why the compiled TensorFlow sampler cannot be built here (None: it can)."""
    import os
    import shutil

    if keras.backend.backend() != "tensorflow":
        return "the compiled sampler is a TensorFlow kernel"
    compiler = os.environ.get("CXX") or "g++"
    if shutil.which(compiler) is None:
        return f"no C++ compiler ({compiler}) to build the compiled sampler"
    return None


# Runs `python SCRIPT ARGS...` with the CPU split into two logical devices
# as TensorFlow finishes loading (before it starts), so that the script
# itself still loads TensorFlow, with its own log level.
SPLIT_CPU_AND_RUN = """
import importlib.abc, importlib.util, runpy, sys

class SplitCpuOnLoad(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name != "tensorflow":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        load = spec.loader.exec_module

        def load_and_split(tf):
            load(tf)
            cpu = tf.config.list_physical_devices("CPU")[0]
            tf.config.set_logical_device_configuration(
                cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

        spec.loader.exec_module = load_and_split
        return spec

sys.meta_path.insert(0, SplitCpuOnLoad())
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


# A process that holds a directory (cram_keras.training.run_lock, loaded by
# its path: no TensorFlow start-up) until its stdin closes.
_HOLD_DIRECTORY = """
import importlib.util, sys
spec = importlib.util.spec_from_file_location("run_lock", sys.argv[1])
run_lock = importlib.util.module_from_spec(spec)
spec.loader.exec_module(run_lock)
lock = run_lock.acquire(sys.argv[2], name=sys.argv[3])
print("held", flush=True)
sys.stdin.read()
lock.release()
"""


def held_by_another_process(directory, name=".lock"):
    """A context manager: another process holds ``directory`` (its lock file
    ``name``) while the body runs; yields that process (a ``Popen``)."""
    import contextlib
    import subprocess

    from cram_keras.training import run_lock

    @contextlib.contextmanager
    def held():
        child = subprocess.Popen(
            [sys.executable, "-c", _HOLD_DIRECTORY, run_lock.__file__,
             str(directory), name],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        try:
            assert child.stdout.readline().strip() == "held"
            yield child
        finally:
            child.communicate("", timeout=60)

    return held()


def free_ports(n):
    """``n`` free TCP ports on 127.0.0.1."""
    sockets, ports = [], []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        sockets.append(s)
        ports.append(s.getsockname()[1])
    for s in sockets:
        s.close()
    return ports


def run_workers(argv, timeout=900):
    """Runs ``python *argv`` as worker 0 and worker 1 of one cluster;
    returns ``[(process, stdout, stderr)]``."""
    cluster = {"worker": [f"127.0.0.1:{p}" for p in free_ports(2)]}
    procs = []
    for index in range(2):
        env = dict(
            os.environ,
            KERAS_BACKEND="tensorflow",
            TF_CPP_MIN_LOG_LEVEL="2",
            TF_CONFIG=json.dumps(
                {"cluster": cluster, "task": {"type": "worker", "index": index}}
            ),
        )
        procs.append(
            subprocess.Popen(
                [sys.executable, *argv],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env=env,
                cwd=ROOT,
            )
        )
    results = []
    try:
        for proc in procs:
            stdout, stderr = proc.communicate(timeout=timeout)
            results.append((proc, stdout, stderr))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return results


# A CRAM encoder with one-layer CNNs and a few units: the settings the model,
# mixed-precision, distribution and JAX tests build it with.
TINY_ENCODER = dict(
    num_glimpses=2,
    glimpse_size=6,
    core_units=8,
    context_filters=(2,),
    context_units=4,
    localization_filters=(2,),
    localization_units=4,
    glimpse_filters=(2,),
    glimpse_units=4,
)


def newest_best_lost(run_dir, into):
    """Copies the finished two-epoch run ``run_dir`` to ``into`` and yields
    ``(copy, newest_record, name)`` twice: with the newest record naming a
    missing best-weights file ``name``, then one of other bytes. The older
    record's best weights stay intact (checked), so a reader that falls back
    to an older record would find usable, but older, weights."""
    import shutil

    shutil.copytree(run_dir, into)
    folder = pathlib.Path(into) / "checkpoints"
    older = json.loads((folder / "epoch-0000.json").read_text())
    assert (folder / older["best_weights"]).is_file()
    newest_path = folder / "epoch-0001.json"
    newest = json.loads(newest_path.read_text())
    for name, damage in (("best-0001.weights.h5", None), ("cut.weights.h5", b"x")):
        (folder / name).unlink(missing_ok=True)
        if damage:  # not the bytes the record names
            (folder / name).write_bytes(damage)
        newest_path.write_text(json.dumps(dict(newest, best_weights=name)))
        yield pathlib.Path(into), newest, name
