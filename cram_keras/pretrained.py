"""Trained RNN-SPN models shipped with the package: load, evaluate, draw.

Each shipped model is three files in `cram_keras/weights/` (package data,
so a pip-installed copy has them too):

- ``NAME.weights.h5``: the model's weights only (no optimizer), the Keras
  ``.weights.h5`` format, stored as float32 or float16 (``storage_dtype``
  in the manifest; float16 values load into the float32 variables);
- ``NAME.json``: the manifest: how to rebuild the model, how it was
  trained (epochs, best validation epoch, backend, hardware, commit,
  command), its test errors as measured when it was shipped, the data
  generator's seed and counts, the SHA-256 of the files, and whether its
  training had ``"finished"`` or was still ``"in progress"``;
- ``NAME.batch.npz``: a fixed batch for checking an installation: the
  first 8 test sequences generated from the bundled MNIST sample with the
  model's data seed (``images``, ``labels``), the shipped weights' logits
  on them (``logits``) and the logits of the trained float32 weights
  before storage (``logits_float32``).

`tools/ship_weights.py` writes them from a run directory of
``train_rnn_spn.py`` (or of the study ``rnn_spn/table1``).

Command line::

    python -m cram_keras.pretrained list
    python -m cram_keras.pretrained evaluate rnn_spn_d3 --data-dir MNIST_DIR
    python -m cram_keras.pretrained evaluate rnn_spn_d3      # offline, see below
    python -m cram_keras.pretrained figure rnn_spn_d3 --output attention.png

``evaluate`` regenerates the model's test set (the cluttered MNIST
sequences of `cram_keras.data.cluttered.load_cluttered_sequences`, a
function of the MNIST test digits, the data seed and the number of test
sequences alone) and prints the per-digit and sequence test errors. With
``--data-dir`` (the folder of the four official MNIST IDX files) that is
the test set the manifest's numbers were measured on; the command checks
this through the SHA-256 of the generated sequences. Without it, the
sequences are generated from the bundled MNIST sample (1,000 test
digits): that is not the paper's test set, and the number is not
comparable with Table 1 or with the manifest.

Python::

    from cram_keras import pretrained

    model = pretrained.load_model("rnn_spn_d3")   # a built RNNSPN
    result = pretrained.evaluate("rnn_spn_d3", data_dir="MNIST_DIR")
    result["per_digit_error"]
"""

import argparse
import hashlib
import importlib.resources
import json
import os
import pathlib
import sys

import numpy as np

from cram_keras.utils import file_sha256, unwritable_reason

# The shipped files: folder, names and limits.
WEIGHTS_PACKAGE = "cram_keras.weights"
WEIGHTS_SUFFIX = ".weights.h5"
MANIFEST_SUFFIX = ".json"
BATCH_SUFFIX = ".batch.npz"
MANIFEST_FORMAT = 1
# One weights file at most (bytes), and every shipped file together.
MAX_WEIGHTS_BYTES = 6_000_000
MAX_TOTAL_BYTES = 20_000_000
# Float16 storage is accepted only if the per-digit test error changes by at
# most this much against the float32 weights (0.02 percentage points).
FLOAT16_MAX_ERROR_CHANGE = 0.0002
STORAGE_DTYPES = ("float32", "float16")
# The fixed batch: the first BATCH_SEQUENCES test sequences generated (alone,
# n_test = BATCH_SEQUENCES) from the bundled MNIST sample.
BATCH_SEQUENCES = 8
# Cluttered MNIST sequences: side of the images.
IMAGE_SIZE = 100
# What a recorded command writes instead of a local MNIST folder.
MNIST_PLACEHOLDER = "MNIST_DIR"


class PretrainedError(ValueError):
    """An unknown name, a damaged file or an unusable manifest."""


# === The shipped files ===


def weights_dir():
    """The folder of the shipped files (inside the installed package)."""
    return pathlib.Path(str(importlib.resources.files(WEIGHTS_PACKAGE)))


def _folder(directory):
    return weights_dir() if directory is None else pathlib.Path(directory)


def available(directory=None):
    """Names of the models shipped in ``directory`` (default: the package's)."""
    folder = _folder(directory)
    if not folder.is_dir():
        return []
    return sorted(
        path.name[: -len(MANIFEST_SUFFIX)]
        for path in folder.glob(f"*{MANIFEST_SUFFIX}")
    )


def file_paths(name, directory=None):
    """``{"manifest", "weights", "batch"}`` paths of model ``name``."""
    folder = _folder(directory)
    return {
        "manifest": folder / f"{name}{MANIFEST_SUFFIX}",
        "weights": folder / f"{name}{WEIGHTS_SUFFIX}",
        "batch": folder / f"{name}{BATCH_SUFFIX}",
    }


def read_manifest(name, directory=None):
    """The manifest of model ``name`` (a dict)."""
    path = file_paths(name, directory)["manifest"]
    if not path.is_file():
        names = available(directory)
        shipped = ", ".join(names) if names else "none"
        raise PretrainedError(
            f"No shipped model named {name!r} in {_folder(directory)} (shipped: "
            f"{shipped})."
        )
    with open(path, encoding="utf-8") as f:
        manifest = json.load(f)
    if manifest.get("format") != MANIFEST_FORMAT:
        raise PretrainedError(
            f"{path.name} has manifest format {manifest.get('format')!r}; this "
            f"version of cram-keras reads format {MANIFEST_FORMAT}."
        )
    return manifest


def verify_files(name, directory=None, manifest=None):
    """Raises `PretrainedError` unless the weights and batch files have the
    size and SHA-256 their manifest records."""
    manifest = manifest or read_manifest(name, directory)
    paths = file_paths(name, directory)
    for key in ("weights", "batch"):
        record = manifest["files"][key]
        path = paths[key]
        if not path.is_file():
            raise PretrainedError(f"{path.name} is missing (reinstall cram-keras).")
        size = path.stat().st_size
        if size != record["bytes"]:
            raise PretrainedError(
                f"{path.name} has {size} bytes; its manifest records {record['bytes']}."
            )
        if file_sha256(path) != record["sha256"]:
            raise PretrainedError(
                f"{path.name} does not match the SHA-256 in {name}{MANIFEST_SUFFIX}."
            )


# === The model ===


def model_class(model):
    from cram_keras.models.rnn_spn import MODELS

    if model not in MODELS:
        raise PretrainedError(
            f"Unknown model {model!r}; shipped models are one of {tuple(MODELS)}."
        )
    return MODELS[model]


def model_kwargs(model):
    """The constructor arguments of a built RNN-SPN, FFN-SPN or CNN (those of
    its ``get_config`` that its class takes), for the manifest."""
    import inspect

    parameters = inspect.signature(type(model).__init__).parameters
    config = model.get_config()
    return {
        key: config[key]
        for key in parameters
        if key not in ("self", "kwargs", "name") and key in config
    }


def build_model(manifest):
    """The model the manifest describes, built, with fresh weights."""
    import keras

    from cram_keras.training.precision import dtype_policy_scope

    cls = model_class(manifest["model"])
    policy = manifest.get("training_config", {}).get("dtype_policy", "float32")
    with dtype_policy_scope(argparse.Namespace(dtype_policy=policy)):
        model = cls(name=manifest["model"], **manifest["model_config"])
        model(keras.ops.zeros((1, IMAGE_SIZE, IMAGE_SIZE, 1)))
    return model


def load_model(name, directory=None, verify=True):
    """Model ``name`` with its shipped weights (checked against the
    manifest's SHA-256 first unless ``verify=False``)."""
    manifest = read_manifest(name, directory)
    if verify:
        verify_files(name, directory, manifest)
    model = build_model(manifest)
    model.load_weights(str(file_paths(name, directory)["weights"]))
    return model


# === Data ===


def generated_test_set(data_seed, n_test, data_dir=None):
    """The test split of the cluttered MNIST sequences: ``(images uint8
    (N, 100, 100, 1), labels (N, 3), DataSource)``.

    Generated from the official MNIST files in ``data_dir``, or from the
    bundled MNIST sample when ``data_dir`` is None. The test split draws from
    its own random stream, so it depends on the MNIST test digits,
    ``data_seed`` and ``n_test`` only (not on the training and validation
    counts); nothing is read from or written to the dataset cache.
    """
    from cram_keras.data.cluttered import load_cluttered_sequences

    splits, source = load_cluttered_sequences(
        data_dir=data_dir,
        bundled=data_dir is None,
        use_cache=False,
        seed=data_seed,
        n_train=0,
        n_valid=0,
        n_test=n_test,
        dtype="uint8",
        return_source=True,
    )
    return splits["test"].images, splits["test"].labels, source


def test_set_sha256(images, labels):
    """SHA-256 over the uint8 images and the int64 labels of a test set."""
    digest = hashlib.sha256()
    digest.update(np.ascontiguousarray(images, dtype=np.uint8).tobytes())
    digest.update(np.ascontiguousarray(labels, dtype=np.int64).tobytes())
    return digest.hexdigest()


def fixed_batch(data_seed):
    """``(images, labels)`` of the fixed batch (see the module docstring)."""
    images, labels, _ = generated_test_set(data_seed, BATCH_SEQUENCES)
    return images, labels


# === Evaluation ===


def predict_logits(model, images, batch_size=100):
    """Logits (N, T, classes) as float32 NumPy, ``batch_size`` images at a
    time (uint8 images are divided by 255)."""
    from cram_keras.data.pipelines import as_float

    out = []
    for start in range(0, len(images), batch_size):
        batch = as_float(np.asarray(images[start : start + batch_size]))
        out.append(np.asarray(model.predict_on_batch(batch), dtype=np.float32))
    return np.concatenate(out) if out else np.zeros((0,), np.float32)


def sequence_errors(logits, labels):
    """``(per-digit error, sequence error)`` of (N, T, classes) logits
    against (N, T) labels: the fraction of wrong digits, and of sequences
    with at least one wrong digit."""
    wrong = np.argmax(logits, axis=-1) != np.asarray(labels)
    return float(wrong.mean()), float(wrong.any(axis=-1).mean())


def evaluate_model(model, images, labels, batch_size=100):
    """Per-digit and sequence errors of ``model`` on a test set (a dict)."""
    logits = predict_logits(model, images, batch_size)
    per_digit, sequence = sequence_errors(logits, labels)
    return {
        "per_digit_error": per_digit,
        "sequence_error": sequence,
        "sequences": int(len(labels)),
    }


def evaluate(name, data_dir=None, directory=None, batch_size=100, log=print):
    """Evaluates shipped model ``name`` on its regenerated test set.

    Returns a dict: ``per_digit_error``, ``sequence_error``, ``sequences``,
    ``origin`` of the MNIST digits, ``same_test_set`` (the generated
    sequences are those the manifest's numbers were measured on) and
    ``comparable`` (the number is the manifest's, i.e. the one the
    documentation reports)."""
    manifest = read_manifest(name, directory)
    model = load_model(name, directory)
    test = manifest["test_set"]
    images, labels, source = generated_test_set(
        manifest["data_seed"], test["sequences"], data_dir
    )
    log(
        f"{name}: evaluating on {len(labels):,} test sequences generated from "
        f"{source.description} (data seed {manifest['data_seed']})"
    )
    result = evaluate_model(model, images, labels, batch_size)
    same = test.get("sha256") is not None and test_set_sha256(
        images, labels
    ) == test.get("sha256")
    result.update(
        origin=source.origin,
        same_test_set=bool(same),
        comparable=bool(same),
        manifest_per_digit_error=manifest.get("test_per_digit_error"),
        manifest_sequence_error=manifest.get("test_sequence_error"),
    )
    return result


def report(name, result, manifest, log=print):
    """The evaluation's lines for a reader (what ``evaluate`` prints)."""
    status = manifest["status"]
    if status != "finished":
        status += f", {manifest['epochs_trained']} epochs"
    log(
        f"{name} ({manifest['model']}, d = {manifest['downsample']:g}, best "
        f"validation epoch {manifest['best_epoch']}, training {status})"
    )
    log(
        f"per-digit test error: {result['per_digit_error'] * 100:.2f} %   "
        f"sequence test error: {result['sequence_error'] * 100:.2f} %   "
        f"({result['sequences']:,} sequences)"
    )
    recorded = result["manifest_per_digit_error"]
    if result["comparable"]:
        log(
            "This is the shipped test set (its SHA-256 matches the manifest): "
            f"the manifest records {recorded * 100:.2f} % per-digit and "
            f"{result['manifest_sequence_error'] * 100:.2f} % sequence error."
        )
    elif result["origin"] == "bundled":
        log(
            "NOTE: no --data-dir, so these sequences were generated from the "
            "bundled MNIST sample (1,000 test digits). This is NOT the paper's "
            "test set and the number is NOT comparable with the paper's Table 1 "
            "or with the number the documentation reports; pass --data-dir "
            "MNIST_DIR (the folder of the four official MNIST IDX files) for that."
        )
    else:
        log(
            "WARNING: the generated test sequences differ from those the "
            "manifest's number was measured on (other MNIST files, or another "
            "NumPy random stream), so the number is not comparable with it"
            + (f" ({recorded * 100:.2f} %)." if recorded is not None else ".")
        )


def attention_figure(name, output, data_dir=None, examples=6, directory=None):
    """Fig. 3 of the RNN-SPN paper from shipped model ``name``: the first
    ``examples`` sequences of its generated test set (from ``data_dir``, or
    from the bundled MNIST sample), each step's sampling box and crop.
    Returns ``output``."""
    from cram_keras import visualization

    _check_figure_path(output)
    manifest = read_manifest(name, directory)
    model = load_model(name, directory)
    count = manifest["test_set"]["sequences"]
    images, labels, _ = generated_test_set(manifest["data_seed"], count, data_dir)
    if not 1 <= examples <= len(images):
        raise PretrainedError(
            f"`examples` must be in [1, {len(images)}]. Received: {examples!r}"
        )
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    visualization.attention_figure(
        model, images[:examples], labels[:examples], str(output)
    )
    return output


def _check_figure_path(output):
    """An image file that can be written at ``output``, checked before
    anything loads: `PretrainedError` for a folder, a name without an image
    format's extension, or a folder on the way that cannot be created."""
    from matplotlib.backend_bases import FigureCanvasBase

    output = os.fspath(output)
    if os.path.isdir(output):
        raise PretrainedError(
            f"--output names the image file to write, but {output!r} is a folder. "
            f"Give a file name, e.g. {os.path.join(output, 'fig3.png')!r}."
        )
    formats = sorted(FigureCanvasBase.get_supported_filetypes())
    extension = os.path.splitext(output)[1].lower().lstrip(".")
    if extension not in formats:
        raise PretrainedError(
            "--output must end with an image format's extension (.png, .pdf, "
            f".svg, ...: {', '.join(formats)}). Received: --output {output!r}."
        )
    reason = unwritable_reason(os.path.dirname(os.path.abspath(output)))
    if reason:
        raise PretrainedError(
            f"--output {output!r} cannot be written: {reason}. Choose another --output."
        )


# === Command line ===


def _list(args):
    names = available(args.weights_dir)
    if not names:
        print("no shipped models")
        return 0
    for name in names:
        manifest = read_manifest(name, args.weights_dir)
        error = manifest.get("test_per_digit_error")
        error = "not measured" if error is None else f"{error * 100:.2f} %"
        print(
            f"{name}: {manifest['model']}, d = {manifest['downsample']:g}, "
            f"{manifest['status']} ({manifest['epochs_trained']} epochs, best "
            f"{manifest['best_epoch']}), per-digit test error {error}, "
            f"{manifest['storage_dtype']}"
        )
    return 0


def _evaluate(args):
    manifest = read_manifest(args.name, args.weights_dir)
    result = evaluate(
        args.name, args.data_dir, args.weights_dir, batch_size=args.batch_size
    )
    report(args.name, result, manifest)
    if args.json:
        print(json.dumps(result, sort_keys=True))
    return 0


def _figure(args):
    path = attention_figure(
        args.name, args.output, args.data_dir, args.examples, args.weights_dir
    )
    source = (
        "the official MNIST test digits"
        if args.data_dir
        else "the bundled MNIST sample (not the paper's test set)"
    )
    print(f"wrote {path} ({args.examples} test sequences generated from {source})")
    return 0


def build_parser():
    parser = argparse.ArgumentParser(
        prog="python -m cram_keras.pretrained",
        description="Load, evaluate and draw the trained RNN-SPN models shipped "
        "with cram-keras.",
    )
    parser.add_argument(
        "--weights-dir",
        default=None,
        help="folder of shipped models (default: the package's cram_keras/weights)",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("list", help="the shipped models and their numbers")
    data_help = (
        "folder of the four official MNIST IDX .gz files; without it the "
        "sequences are generated from the bundled MNIST sample (not the "
        "paper's test set)"
    )
    evaluate_parser = commands.add_parser(
        "evaluate", help="per-digit and sequence test errors of a shipped model"
    )
    evaluate_parser.add_argument("name")
    evaluate_parser.add_argument("--data-dir", default=None, help=data_help)
    evaluate_parser.add_argument("--batch-size", type=int, default=100)
    evaluate_parser.add_argument(
        "--json", action="store_true", help="also print the result as one JSON line"
    )
    figure_parser = commands.add_parser(
        "figure", help="the Fig. 3 attention figure of a shipped model"
    )
    figure_parser.add_argument("name")
    figure_parser.add_argument(
        "--output",
        required=True,
        help="image file to write (.png, or another format matplotlib writes: "
        ".pdf, .svg, ...)",
    )
    figure_parser.add_argument("--data-dir", default=None, help=data_help)
    figure_parser.add_argument(
        "--examples", type=int, default=6, help="test sequences shown (default 6)"
    )
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    if getattr(args, "batch_size", 1) < 1:
        print("error: --batch-size must be a positive integer", file=sys.stderr)
        return 2
    command = {"list": _list, "evaluate": _evaluate, "figure": _figure}[args.command]
    from cram_keras.data.errors import DatasetError

    try:
        return command(args)
    except (PretrainedError, DatasetError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
