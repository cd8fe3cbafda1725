#!/usr/bin/env python
"""Ship the best-validation weights of an RNN-SPN run with the package.

    python tools/ship_weights.py RUN_DIR NAME --data-dir MNIST_DIR \\
        [--command "python train_rnn_spn.py ..."] [--commit SHA]

RUN_DIR is a run directory of `train_rnn_spn.py` (or of the study
`rnn_spn/table1`), finished or still training; it is only
read. The tool takes the best-validation weights of its newest epoch
checkpoint (copied first and checked against the checkpoint's SHA-256, so a
training that is still running may go on; where that file is missing or
damaged it stops, rather than ship an older checkpoint's), and writes into
`cram_keras/weights/` (`--output-dir`):

- `NAME.weights.h5`: the model's weights alone (no optimizer), at most
  6 MB. They are stored as float32 when that fits; otherwise as float16,
  but only after measuring on the test set (`--data-dir`) that the per-digit
  test error of the float16 weights is within 0.02 percentage points of the
  float32 weights'. Without that measurement float16 is refused.
- `NAME.batch.npz`: the fixed batch that `tests/test_pretrained.py` checks
  an installation against (see `cram_keras.pretrained`).
- `NAME.json`: the manifest: model config, downsample factor, epochs trained,
  best epoch and its validation errors, the test errors of the shipped
  weights as measured here, data seed and counts, backend, hardware, commit
  and training command, the files' sizes and SHA-256, storage dtype, and
  whether training had "finished" or was "in progress".

All shipped files together must stay under 20 MB; the tool refuses
otherwise. The test set is regenerated from the MNIST files in `--data-dir`
with the run's data seed (`cram_keras.pretrained.generated_test_set`); a run
trained on the bundled MNIST sample is measured on that without
`--data-dir`. Local folders never enter the manifest: the MNIST folder is
recorded as `MNIST_DIR`.
"""

import argparse
import dataclasses
import json
import os
import pathlib
import re
import shlex
import shutil
import sys
import tempfile
import typing

# As the training scripts: TensorFlow's oneDNN CPU kernels on and its C++
# logs quiet unless set; the lines it logs while loading held to that level.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from cram_keras._startup_logs import filtered_startup_logs  # noqa: E402

with filtered_startup_logs():
    import keras  # noqa: E402

import h5py  # noqa: E402
import numpy as np  # noqa: E402

from cram_keras import pretrained  # noqa: E402
from cram_keras.experiments import named, rnn_spn  # noqa: E402
from cram_keras.experiments.config import field_default  # noqa: E402
from cram_keras.experiments.run_dir import (  # noqa: E402
    CHECKPOINT_DIR,
    CONFIG_FILE,
    METRICS_FILE,
    RUN_KEYS,
)
from cram_keras.platform_info import describe  # noqa: E402
from cram_keras.training.checkpoint import (  # noqa: E402
    EpochCheckpoints,
    load_weights_without_optimizer,
)
from cram_keras.training.precision import dtype_policy_scope  # noqa: E402
from cram_keras.utils import atomic_path, file_sha256, read_json  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parent.parent
DEFAULT_OUTPUT = ROOT / "cram_keras" / "weights"
NAME = re.compile(r"^[a-z0-9][a-z0-9_]*$")


class ShipError(RuntimeError):
    """The run cannot be shipped as asked (the message says why)."""


class RunState(typing.NamedTuple):
    """A run at its newest checkpoint: the checkpoint record, the epoch log,
    the best epoch (from 0) and its log row, whether training finished, and
    the runner's metrics (None until the run has ended)."""

    record: dict
    rows: list
    best: int | None
    best_row: dict | None
    finished: bool
    metrics: dict | None


class Storage(typing.NamedTuple):
    """How the weights are stored: the dtype, the size of each dtype's file
    (float16: None where none was written) and each dtype's test errors
    (None where not measured)."""

    dtype: str
    float32_bytes: int
    float16_bytes: int | None
    errors32: dict | None
    errors16: dict | None

    @property
    def shipped_errors(self):
        return self.errors32 if self.dtype == "float32" else self.errors16


# === The run ===


def snapshot_best_weights(run_dir, into, attempts=3, log=print):
    """Copies the best-validation weights of the newest checkpoint of
    ``run_dir`` (the run's best so far) into the folder ``into``; returns
    ``(record, path)``. Refused where that file is missing or damaged: an
    older record's best weights would be an older model than the run's best.

    The copy is checked against the SHA-256 in the checkpoint record; if a
    running training replaced the files meanwhile, the newest record is
    read again."""
    checkpoints = EpochCheckpoints(os.path.join(run_dir, CHECKPOINT_DIR), write=False)
    for _ in range(attempts):
        record = checkpoints.newest_record()
        if record is None:
            raise ShipError(f"{run_dir} has no epoch checkpoint to ship.")
        best = record.get("best_weights")
        if best is None:
            raise ShipError(
                f"The newest checkpoint of {run_dir} names no best weights (a run "
                "without a validation monitor); there is no best epoch to ship."
            )
        problem = checkpoints.check_file(record, "best_weights")
        if problem and checkpoints.newest_record() == record:  # not replaced
            raise ShipError(
                f"The best weights of {run_dir} (its newest checkpoint, after "
                f"epoch {len(record.get('log', []))}) cannot be shipped: {problem}. "
                "An older checkpoint's best weights would be an older model; "
                "restore the file, or resume the training (it goes on from its "
                "last intact checkpoint) and ship again."
            )
        target = os.path.join(into, "best.weights.h5")
        try:
            shutil.copyfile(checkpoints.path(record, "best_weights"), target)
        except FileNotFoundError:
            continue
        if file_sha256(target) == record["best_weights_sha256"]:
            return record, target
    raise ShipError(
        f"The best weights of {run_dir} kept changing while being copied "
        f"({attempts} attempts); run the tool again."
    )


def build_from_config(config):
    """The uncompiled, built model of a run's config."""
    with dtype_policy_scope(config):
        model = rnn_spn.build_model(config)
        model(keras.ops.zeros((1, pretrained.IMAGE_SIZE, pretrained.IMAGE_SIZE, 1)))
    return model


def float16_copy(source, target):
    """Writes ``source`` (a Keras .weights.h5 file) to ``target`` with every
    float32 array stored as float16 (same groups, names and attributes)."""

    def copy(src, dst):
        for key, value in src.attrs.items():
            dst.attrs[key] = value
        for key, item in src.items():
            if isinstance(item, h5py.Group):
                copy(item, dst.create_group(key))
                continue
            data = item[()]
            if isinstance(data, np.ndarray) and data.dtype == np.float32:
                data = data.astype(np.float16)
            dataset = dst.create_dataset(key, data=data)
            for attr, value in item.attrs.items():
                dataset.attrs[attr] = value

    with h5py.File(source, "r") as src, h5py.File(target, "w") as dst:
        copy(src, dst)
    return target


# === Storage ===


def choose_storage(
    float32_bytes,
    float16_bytes,
    float32_error,
    float16_error,
    max_bytes=None,
    tolerance=None,
):
    """``"float32"`` if it fits in ``max_bytes``; else ``"float16"`` if that
    fits and its per-digit test error was measured within ``tolerance`` of
    the float32 one; else `ShipError`. Errors are None when not measured.
    The defaults are `cram_keras.pretrained`'s limits (6 MB, 0.02 points)."""
    if max_bytes is None:
        max_bytes = pretrained.MAX_WEIGHTS_BYTES
    if tolerance is None:
        tolerance = pretrained.FLOAT16_MAX_ERROR_CHANGE
    if float32_bytes <= max_bytes:
        return "float32"
    mb = (
        f"{float32_bytes / 1e6:.2f} MB as float32, more than the {max_bytes / 1e6:g} MB"
    )
    if float16_bytes > max_bytes:
        raise ShipError(
            f"The weights take {mb} allowed, and {float16_bytes / 1e6:.2f} MB as "
            "float16: too large to ship."
        )
    if float32_error is None or float16_error is None:
        raise ShipError(
            f"The weights take {mb} allowed. Float16 storage "
            f"({float16_bytes / 1e6:.2f} MB) is accepted only after measuring "
            "that it moves the per-digit test error by at most "
            f"{tolerance * 100:.2f} points: pass --data-dir MNIST_DIR (the "
            "folder of the four official MNIST IDX files)."
        )
    change = abs(float16_error - float32_error)
    if change > tolerance + 1e-12:
        raise ShipError(
            f"The weights take {mb} allowed, and float16 storage moves the "
            f"per-digit test error from {float32_error * 100:.3f} % to "
            f"{float16_error * 100:.3f} % ({change * 100:.3f} points, more than "
            f"{tolerance * 100:.2f}): not shipped."
        )
    return "float16"


# === The manifest ===


def training_command(config):
    """``python train_rnn_spn.py`` with the flags that give ``config`` (the
    MNIST folder as MNIST_DIR; the dataset cache folder left out)."""
    words = ["python", "train_rnn_spn.py"]
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        if field.name == "cache_dir" or value == field_default(field):
            continue
        if field.name == "data_dir":
            value = pretrained.MNIST_PLACEHOLDER
        text = f"{value:g}" if isinstance(value, float) else str(value)
        if (field.metadata or {}).get("flag") and not isinstance(value, bool):
            words += ["--" + field.name.replace("_", "-"), text]
        else:
            words += ["--set", f"{field.name}={text}"]
    return shlex.join(words)


def scrub(value, paths):
    """``value`` with every string occurrence of the local folders ``paths``
    replaced by MNIST_DIR (recursively through dicts and lists)."""
    if isinstance(value, str):
        for path in paths:
            value = value.replace(path, pretrained.MNIST_PLACEHOLDER)
        return value
    if isinstance(value, dict):
        return {k: scrub(v, paths) for k, v in value.items()}
    if isinstance(value, list):
        return [scrub(v, paths) for v in value]
    return value


def _local_paths(*candidates):
    """The spellings of the local data folders to scrub, longest first."""
    found = set()
    for path in candidates:
        if path:
            text = str(path)
            found.update({text, text.rstrip("/"), os.path.abspath(text)})
    return sorted((p for p in found if p and p != "/"), key=len, reverse=True)


def _software():
    versions = {"keras": keras.__version__, "numpy": np.__version__}
    backend = keras.backend.backend()
    try:
        module = __import__(backend)
        versions[backend] = getattr(module, "__version__", None)
    except ImportError:
        pass
    return versions


def _run_state(record, run_dir):
    rows = record["log"]
    early = record["early_stopping"]
    best = early["best_epoch"]
    row = rows[best] if best is not None and best < len(rows) else None
    metrics_path = os.path.join(run_dir, METRICS_FILE)
    metrics = read_json(metrics_path) if os.path.exists(metrics_path) else None
    return RunState(record, rows, best, row, bool(record.get("finished")), metrics)


# === Shipping ===


def ship(args, log=print):
    run_dir = args.run_dir
    if not NAME.match(args.name):
        raise ShipError(
            "NAME must be lower-case letters, digits and underscores (e.g. "
            f"rnn_spn_d3). Received: {args.name!r}"
        )
    stored = read_json(os.path.join(run_dir, CONFIG_FILE))
    config = rnn_spn.Config(**{k: v for k, v in stored.items() if k not in RUN_KEYS})
    run_source = stored.get("data_source") or {}
    output = pathlib.Path(args.output_dir)
    output.mkdir(parents=True, exist_ok=True)
    paths = pretrained.file_paths(args.name, output)

    with tempfile.TemporaryDirectory() as tmp:
        record, best_path = snapshot_best_weights(run_dir, tmp, log=log)
        state = _run_state(record, run_dir)
        log(
            f"{run_dir}: {len(state.rows)} epochs, best validation epoch "
            f"{state.best + 1} ({'finished' if state.finished else 'in progress'})"
        )
        trained = load_weights_without_optimizer(build_from_config(config), best_path)
        float32_path = os.path.join(tmp, "float32.weights.h5")
        trained.save_weights(float32_path)

        # The test set: the official files in --data-dir, or the bundled
        # sample for a run that was trained on it.
        test = None
        if args.data_dir or run_source.get("origin") == "bundled":
            images, labels, source = pretrained.generated_test_set(
                config.data_seed, config.n_test, args.data_dir
            )
            if run_source.get("origin") and source.origin != run_source["origin"]:
                log(
                    f"warning: the run trained on MNIST from {run_source['origin']!r}, "
                    f"the test set here is generated from {source.origin!r}."
                )
            test = (images, labels, source)
            log(f"measuring the test errors on {len(labels):,} sequences ...")
            errors32 = pretrained.evaluate_model(
                trained, images, labels, config.batch_size
            )
            log(
                f"float32 weights: per-digit {errors32['per_digit_error'] * 100:.3f} %, "
                f"sequence {errors32['sequence_error'] * 100:.3f} %"
            )
        else:
            errors32 = None
            log(
                "no --data-dir: the test errors are not measured (and float16 "
                "storage is not possible)."
            )

        float32_bytes = os.path.getsize(float32_path)
        float16_path = os.path.join(tmp, "float16.weights.h5")
        errors16 = None
        if float32_bytes > pretrained.MAX_WEIGHTS_BYTES:
            float16_copy(float32_path, float16_path)
            if test is not None:
                half = load_weights_without_optimizer(
                    build_from_config(config), float16_path
                )
                errors16 = pretrained.evaluate_model(
                    half, test[0], test[1], config.batch_size
                )
                log(
                    "float16 weights: per-digit "
                    f"{errors16['per_digit_error'] * 100:.3f} %, sequence "
                    f"{errors16['sequence_error'] * 100:.3f} %"
                )
        float16_bytes = (
            os.path.getsize(float16_path) if os.path.exists(float16_path) else None
        )
        dtype = choose_storage(
            float32_bytes,
            float16_bytes,
            errors32 and errors32["per_digit_error"],
            errors16 and errors16["per_digit_error"],
        )
        storage = Storage(dtype, float32_bytes, float16_bytes, errors32, errors16)
        weights_path = float32_path if dtype == "float32" else float16_path
        shipped_errors = storage.shipped_errors

        # The fixed batch, from the shipped file as a user loads it.
        shipped = load_weights_without_optimizer(
            build_from_config(config), weights_path
        )
        images8, labels8 = pretrained.fixed_batch(config.data_seed)
        logits = pretrained.predict_logits(shipped, images8)
        logits32 = pretrained.predict_logits(trained, images8)
        batch_path = os.path.join(tmp, "batch.npz")
        np.savez_compressed(
            batch_path,
            images=images8,
            labels=labels8,
            logits=logits,
            logits_float32=logits32,
        )
        difference = float(np.abs(logits - logits32).max())

        files = {
            "weights": _file_record(paths["weights"].name, weights_path),
            "batch": _file_record(paths["batch"].name, batch_path),
        }
        local = _local_paths(config.data_dir, args.data_dir, config.cache_dir)
        manifest = _manifest(
            args, config, stored, trained, state, test, storage, files, difference
        )
        manifest = scrub(manifest, local)
        text = json.dumps(manifest, indent=2, sort_keys=True) + "\n"
        _check_total(output, args.name, files, len(text.encode()))
        _install(weights_path, paths["weights"])
        _install(batch_path, paths["batch"])
        with atomic_path(str(paths["manifest"])) as tmp_manifest:
            with open(tmp_manifest, "w", encoding="utf-8") as f:
                f.write(text)
    log(
        f"shipped {args.name}: {paths['weights']} ({dtype}, "
        f"{files['weights']['bytes'] / 1e6:.2f} MB), {paths['batch'].name}, "
        f"{paths['manifest'].name}"
    )
    if shipped_errors is not None:
        log(
            f"test errors of the shipped weights: per-digit "
            f"{shipped_errors['per_digit_error'] * 100:.2f} %, sequence "
            f"{shipped_errors['sequence_error'] * 100:.2f} % "
            f"({shipped_errors['sequences']:,} sequences)"
        )
    return manifest


def _file_record(name, path):
    return {
        "name": name,
        "bytes": os.path.getsize(path),
        "sha256": file_sha256(path),
    }


def _install(source, target):
    with atomic_path(str(target)) as tmp:
        shutil.copyfile(source, tmp)


def _check_total(output, name, files, manifest_bytes):
    own = {f"{name}{suffix}" for suffix in (
        pretrained.WEIGHTS_SUFFIX, pretrained.BATCH_SUFFIX, pretrained.MANIFEST_SUFFIX
    )}  # fmt: skip
    others = sum(
        path.stat().st_size
        for path in output.iterdir()
        if path.is_file() and path.name not in own
    )
    total = others + manifest_bytes + sum(f["bytes"] for f in files.values())
    if total > pretrained.MAX_TOTAL_BYTES:
        raise ShipError(
            f"Shipping {name} would bring {output} to {total / 1e6:.2f} MB, more "
            f"than the {pretrained.MAX_TOTAL_BYTES / 1e6:g} MB all shipped files "
            "may take together."
        )


def _manifest(args, config, stored, trained, state, test, storage, files, difference):
    """The manifest of weights shipped from a run: the run (``args``, its
    stored config, the trained model and its ``state``), the ``test`` set,
    the ``storage`` chosen, the ``files`` written, and the largest
    ``difference`` between the fixed batch's logits of the shipped and the
    trained float32 weights."""
    record, rows, best, best_row, finished, metrics = state
    dtype, float32_bytes, float16_bytes, errors32, errors16 = storage
    shipped_errors = storage.shipped_errors
    source = stored.get("data_source") or {}
    origin = test[2].origin if test is not None else None
    data_flag = " --data-dir MNIST_DIR" if origin not in (None, "bundled") else ""
    training_config = {
        k: v for k, v in dataclasses.asdict(config).items() if k != "cache_dir"
    }
    if training_config.get("data_dir"):
        training_config["data_dir"] = pretrained.MNIST_PLACEHOLDER
    manifest = {
        "format": pretrained.MANIFEST_FORMAT,
        "name": args.name,
        "status": "finished" if finished else "in progress",
        "model": config.model,
        "model_class": type(trained).__name__,
        "model_config": pretrained.model_kwargs(trained),
        "downsample": None if config.model == "conv" else config.downsample,
        "parameters": int(trained.count_params()),
        "epochs_trained": len(rows),
        "max_epochs": config.epochs,
        "best_epoch": best + 1,
        "valid_per_digit_error_at_best": None
        if best_row is None
        else 1.0 - best_row["val_digit_accuracy"],
        "valid_sequence_error_at_best": None
        if best_row is None
        else 1.0 - best_row["val_sequence_accuracy"],
        "stopped_early": record["early_stopping"].get("stopped_epoch") is not None,
        "train_wall_seconds": record.get("train_wall_seconds"),
        "test_per_digit_error": None
        if shipped_errors is None
        else shipped_errors["per_digit_error"],
        "test_sequence_error": None
        if shipped_errors is None
        else shipped_errors["sequence_error"],
        "test_set": {
            "generator": "cram_keras.pretrained.generated_test_set "
            "(the test split of cram_keras.data.cluttered.load_cluttered_sequences)",
            "sequences": config.n_test,
            "origin": origin,
            "description": None if test is None else test[2].description,
            "sha256": None
            if test is None
            else pretrained.test_set_sha256(test[0], test[1]),
        },
        "evaluate_command": (
            f"python -m cram_keras.pretrained evaluate {args.name}{data_flag}"
        ),
        "data_seed": config.data_seed,
        "n_train": config.n_train,
        "n_valid": config.n_valid,
        "n_test": config.n_test,
        "data_source": {k: v for k, v in source.items() if k != "path"},
        "backend": (metrics or {}).get("backend")
        or args.backend
        or keras.backend.backend(),
        "hardware": (metrics or {}).get("hardware") or args.hardware or describe(),
        "commit": args.commit or named.commit(),
        "training_command": args.command or training_command(config),
        "training_config": training_config,
        "storage_dtype": dtype,
        "storage_check": {
            "max_weights_bytes": pretrained.MAX_WEIGHTS_BYTES,
            "float32_bytes": float32_bytes,
            "float16_bytes": float16_bytes,
            "float32_test_per_digit_error": errors32 and errors32["per_digit_error"],
            "float32_test_sequence_error": errors32 and errors32["sequence_error"],
            "float16_test_per_digit_error": errors16 and errors16["per_digit_error"],
            "float16_test_sequence_error": errors16 and errors16["sequence_error"],
            "float16_max_per_digit_error_change": pretrained.FLOAT16_MAX_ERROR_CHANGE,
        },
        "files": files,
        "fixed_batch": {
            "sequences": pretrained.BATCH_SEQUENCES,
            "description": (
                f"the first {pretrained.BATCH_SEQUENCES} test sequences generated "
                "from the bundled MNIST sample with the data seed "
                "(cram_keras.pretrained.fixed_batch); logits: the shipped "
                "weights', logits_float32: the trained float32 weights'"
            ),
            "max_abs_logit_difference": difference,
        },
        "software": _software(),
    }
    if metrics is not None:
        manifest["runner_metrics"] = {
            key: metrics.get(key)
            for key in ("test_per_digit_error", "test_sequence_error")
        }
    return manifest


def build_parser():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("run_dir", metavar="RUN_DIR", help="the run directory")
    parser.add_argument(
        "name", metavar="NAME", help="the shipped model's name (e.g. rnn_spn_d3)"
    )
    parser.add_argument(
        "--data-dir",
        default=None,
        help="folder of the four official MNIST IDX .gz files: measure the test "
        "errors (and allow float16 storage)",
    )
    parser.add_argument(
        "--output-dir",
        default=str(DEFAULT_OUTPUT),
        help="where the files go (default: cram_keras/weights of this repository)",
    )
    parser.add_argument(
        "--command",
        default=None,
        help="the command that trained the run, recorded in the manifest "
        "(default: train_rnn_spn.py with the flags of the run's config); write "
        "the MNIST folder as MNIST_DIR",
    )
    parser.add_argument(
        "--commit",
        default=None,
        help="the commit of the code that trained (default: this repository's HEAD)",
    )
    parser.add_argument(
        "--hardware",
        default=None,
        help="the machine it trained on (default: the run's metrics.json, else "
        "this machine's description)",
    )
    parser.add_argument(
        "--backend",
        default=None,
        help="the Keras backend it trained with (default: the run's metrics.json, "
        "else this process's)",
    )
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        ship(args)
    except ShipError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
