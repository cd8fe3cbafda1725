"""Small helpers shared by every layer of the package: crash-safe file writes,
Keras-style argument checks and per-epoch seeds.

Files: `write_json` / `atomic_write_bytes` / `atomic_path` never leave a
half-written file under the final name. They write to a temporary name in
the same folder (``.<name>.<token>.tmp<ext>``, so that libraries that insist
on an extension, such as Keras' ``.weights.h5`` or NumPy's ``.npz``, accept
it), flush and ``os.fsync`` it, and ``os.replace`` it onto the final name;
if the writer raises, the temporary file is removed and an existing file of
that name is left as it was. `file_sha256` is the checksum that checkpoint
records and shipped-weights manifests store.

Checks: `check_int`, `check_number`, `check_choice`, `check_int_list`,
`check_range`, `check_positive_int`, `check_int_tuple` and `check_bool`
raise ``ValueError("`name` must be ... Received: name=value")`` and return
the value (as a Python int, float, list or tuple). `check_int` and
`check_number` also name the command-line spelling of the setting
(``flag``) and say why the bounds are what they are (``reason``) where given.
The layers' arguments are checked with `check_positive_int`,
`check_int_tuple` and `check_bool` (Python ints and bools only: a layer's
config must serialise as JSON).
"""

import contextlib
import csv
import hashlib
import json
import math
import numbers
import operator
import os
import secrets

import numpy as np

# === Files ===


# The environment variable that names the package's cache folder.
CACHE_VARIABLE = "CRAM_KERAS_CACHE"


def cache_folder() -> str:
    """The package's cache folder: ``$CRAM_KERAS_CACHE`` if set, else
    ``~/.cache/cram_keras``. The generated data sets, the compiled kernel
    library (``kernels``) and JAX's compiled steps (``jax``) go there."""
    return os.environ.get(CACHE_VARIABLE) or os.path.join(
        os.path.expanduser("~"), ".cache", "cram_keras"
    )


def _temporary_name(path):
    folder, base = os.path.split(os.path.abspath(os.fspath(path)))
    dot = base.find(".", 1)
    ext = base[dot:] if dot > 0 else ""
    return os.path.join(folder, f".{base}.{secrets.token_hex(4)}.tmp{ext}")


def _fsync_file(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def existing_part(path):
    """``path`` made absolute, or the nearest folder above it that exists."""
    probe = os.path.abspath(path)
    while probe and not os.path.exists(probe):
        parent = os.path.dirname(probe)
        if parent == probe:
            break
        probe = parent
    return probe


def unwritable_reason(folder):
    """Why files cannot be written in ``folder`` (created as needed), as a
    phrase for a message: the nearest part of it that exists is a regular
    file, or a folder without write permission; None where they can."""
    probe = existing_part(folder)
    if not os.path.isdir(probe):
        return f"{probe!r} is a regular file, not a folder"
    if not os.access(probe, os.W_OK):
        return f"the folder {probe!r} is not writable"
    return None


@contextlib.contextmanager
def atomic_path(path):
    """Yields a temporary path beside `path` to write a file to (by any
    library); on success the file is fsynced and renamed onto `path`, on an
    exception it is removed and `path` is left untouched.

    >>> with atomic_path("run/model.keras") as tmp:
    ...     model.save(tmp)
    """
    path = os.fspath(path)
    tmp = _temporary_name(path)
    try:
        yield tmp
        _fsync_file(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        raise


def atomic_write_bytes(path, data):
    """Writes `data` (bytes) to `path` atomically; see `atomic_path`."""
    with atomic_path(path) as tmp, open(tmp, "xb") as f:
        f.write(data)
    return path


def write_json(path, payload):
    """Writes `payload` as indented, key-sorted JSON to `path` atomically."""
    with atomic_path(path) as tmp, open(tmp, "x") as f:
        json.dump(payload, f, indent=2, sort_keys=True)
        f.write("\n")
    return path


def file_sha256(path, chunk=1 << 20):
    """The SHA-256 of the file `path` (hex), read `chunk` bytes at a time."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def read_json(path):
    """The JSON value stored in `path`."""
    with open(path) as f:
        return json.load(f)


def read_csv_log(path):
    """The rows of a CSV log (e.g. `keras.callbacks.CSVLogger`'s) as dicts of
    strings; `[]` when the file does not exist yet."""
    if not os.path.exists(path):
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


# === Argument checks ===


def _bounds(low, high, low_inclusive=True, high_inclusive=True):
    if low is not None and high is not None:
        left = "[" if low_inclusive else "("
        right = "]" if high_inclusive else ")"
        return f" in {left}{low}, {high}{right}"
    if low is not None:
        return f" {'>=' if low_inclusive else '>'} {low}"
    if high is not None:
        return f" {'<=' if high_inclusive else '<'} {high}"
    return ""


def _subject(name, flag):
    return f"`{name}` ({flag})" if flag else f"`{name}`"


def _why(reason):
    return f": {reason}" if reason else ""


def check_int(name, value, low=None, high=None, *, flag=None, reason=None):
    """Returns `value` as an int; raises `ValueError` unless it is an integer
    (a bool is not; NumPy integers are) in `[low, high]` (`None`: unbounded).

    `flag`: how the setting is given on the command line (e.g.
    ``"--set hole_size=N"``), named beside `name`; `reason`: why the bounds
    are what they are, said after them.
    """
    try:
        if isinstance(value, bool):
            raise TypeError
        number = operator.index(value)
    except TypeError:
        number = None
    if (
        number is None
        or (low is not None and number < low)
        or (high is not None and number > high)
    ):
        if low is not None and high is not None:
            bounds = f" in {low}..{high}"
        else:
            bounds = _bounds(low, high)
        raise ValueError(
            f"{_subject(name, flag)} must be an integer{bounds}{_why(reason)}. "
            f"Received: {name}={value!r}"
        )
    return number


def check_number(
    name,
    value,
    low=None,
    high=None,
    low_inclusive=True,
    finite=True,
    high_inclusive=True,
    *,
    flag=None,
    reason=None,
):
    """Returns `value` as a float; raises `ValueError` unless it is a real
    number (a bool is not) within the bounds, and, with `finite`, neither NaN
    nor infinite. `low_inclusive` / `high_inclusive`: whether the bound itself
    is allowed; `flag` and `reason` as in `check_int`."""
    valid = isinstance(value, numbers.Real) and not isinstance(value, bool)
    if valid:
        number = float(value)
        if math.isnan(number):
            valid = False
        elif finite and math.isinf(number):
            valid = False
        elif low is not None and not (number >= low if low_inclusive else number > low):
            valid = False
        elif high is not None and not (
            number <= high if high_inclusive else number < high
        ):
            valid = False
    if not valid:
        kind = "a finite number" if finite else "a number"
        bounds = _bounds(low, high, low_inclusive, high_inclusive)
        raise ValueError(
            f"{_subject(name, flag)} must be {kind}{bounds}{_why(reason)}. "
            f"Received: {name}={value!r}"
        )
    return number


def check_choice(name, value, choices):
    """Returns `value`; raises `ValueError` unless it is one of `choices`."""
    if value not in tuple(choices):
        raise ValueError(
            f"`{name}` must be one of {tuple(choices)}. Received: {name}={value!r}"
        )
    return value


def check_int_list(name, value, low=1):
    """Returns `value` as a list; raises `ValueError` unless it is a non-empty
    list or tuple of integers >= `low` (positive by default)."""
    kind = "positive integers" if low == 1 else f"integers >= {low}"
    if not isinstance(value, (list, tuple)) or not value:
        raise ValueError(
            f"`{name}` must be a non-empty list of {kind}. Received: {name}={value!r}"
        )
    items = []
    for item in value:
        try:
            items.append(check_int(name, item, low=low))
        except ValueError:
            raise ValueError(
                f"`{name}` must be a non-empty list of {kind}. "
                f"Received: {name}={value!r}"
            ) from None
    return items


def check_range(
    name,
    value,
    low=None,
    high=None,
    low_inclusive=True,
    high_inclusive=True,
    *,
    integer=False,
    high_name=None,
):
    """Returns the pair `value` as a list `[low, high]` (ints with `integer`,
    else floats); raises `ValueError` unless it is a list or tuple of two
    numbers (integers with `integer`; a bool is neither) in order, within the
    bounds `low` and `high` (`None`: unbounded; `low_inclusive` /
    `high_inclusive`: whether the bound itself is allowed). `high_name`
    names the upper bound in the message, e.g. ``"initial_scale (0.5)"``.
    """
    kinds = (int,) if integer else (int, float)
    valid = (
        isinstance(value, (list, tuple))
        and len(value) == 2
        and not any(isinstance(v, bool) or not isinstance(v, kinds) for v in value)
        and value[0] <= value[1]
    )
    if valid and low is not None:
        valid = value[0] >= low if low_inclusive else value[0] > low
    if valid and high is not None:
        valid = value[1] <= high if high_inclusive else value[1] < high
    if not valid:
        rule = "low <= high"
        if low is not None:
            rule = f"{low} {'<=' if low_inclusive else '<'} {rule}"
        if high is not None:
            rule += f" {'<=' if high_inclusive else '<'} {high_name or high}"
        kind = ", integers" if integer else ""
        raise ValueError(
            f"`{name}` must be [low, high]{kind} with {rule}. "
            f"Received: {name}={value!r}"
        )
    return [int(v) for v in value] if integer else [float(v) for v in value]


def check_positive_int(name, value):
    """Returns `value`; raises `ValueError` unless it is a Python int >= 1
    (a bool is not)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(
            f"`{name}` must be a positive integer. Received: {name}={value!r}"
        )
    return value


def check_int_tuple(name, value, allow_empty=False):
    """Returns `value` (an int, or a list or tuple of them) as a tuple of
    positive ints; raises `ValueError` otherwise, or for an empty one unless
    `allow_empty`."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = (value,)
    if not isinstance(value, (list, tuple)) or (not value and not allow_empty):
        raise ValueError(
            f"`{name}` must be a non-empty tuple of positive integers. "
            f"Received: {name}={value!r}"
        )
    for item in value:
        if isinstance(item, bool) or not isinstance(item, int) or item < 1:
            raise ValueError(
                f"`{name}` must contain positive integers only. "
                f"Received: {name}={value!r}"
            )
    return tuple(value)


def check_bool(name, value):
    """Returns `value`; raises `ValueError` unless it is a bool."""
    if not isinstance(value, bool):
        raise ValueError(f"`{name}` must be a bool. Received: {name}={value!r}")
    return value


# === Seeds ===


def epoch_seed(seed, epoch=None):
    """The seed of epoch `epoch` of a run or a shuffle seeded `seed`: `seed`
    itself for `epoch=None`, else a 32-bit seed derived deterministically
    from `(seed, epoch)`, the same in every process."""
    if seed is None or epoch is None:
        return seed
    return int(np.random.SeedSequence([int(seed), int(epoch)]).generate_state(1)[0])


__all__ = [
    "atomic_path",
    "atomic_write_bytes",
    "check_bool",
    "check_choice",
    "check_int",
    "check_int_list",
    "check_int_tuple",
    "check_number",
    "check_positive_int",
    "check_range",
    "epoch_seed",
    "file_sha256",
    "read_csv_log",
    "read_json",
    "write_json",
]
