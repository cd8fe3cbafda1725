"""Crash-safe epoch checkpoints: a kill at any moment costs at most the epoch
that was running.

Layout of ``<run>/checkpoints/``::

    epoch-0004.weights.h5   model weights and every optimizer's state
    epoch-0004.json         the commit record of epoch 4 (0-based): the
                            weights file's size and SHA-256, the per-epoch
                            log rows, the early-stopping state, the best
                            weights' file, the wall clock, whether training
                            has finished
    best-0002.weights.h5    the best epoch so far (runs with a monitor)

Every file is written to a temporary name in the same folder, flushed,
fsynced and renamed into place (``os.replace``), and the JSON record is
written last: an epoch exists once its record exists, and its record names
only complete files. On restore the newest record whose files match their
recorded size and checksum and load is used; a damaged one is reported in
one line and the previous one is used instead. The two newest records (and
the files they name) are kept, older ones are deleted.

A finished run's ``model.keras`` is read back for scoring by
`load_inpainter` (``train_inpaint.py --eval-only``), which refuses what it
cannot score with a `ModelFileError` that says what to pass instead.
"""

import contextlib
import glob
import os
import re
import warnings

from cram_keras.utils import atomic_path, file_sha256, read_json, write_json

_RECORD = re.compile(r"epoch-(\d{4,})\.json$")


def _fsync_dir(directory):
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


CRASH_ENV = "CRAM_KERAS_CRASH_AT"


def crash_point(name):
    """Fault injection for the kill tests: SIGKILLs this process when the
    environment variable ``CRAM_KERAS_CRASH_AT`` equals ``name`` (e.g.
    ``checkpoint_tmp:1``, ``evaluate``). Does nothing otherwise."""
    if os.environ.get(CRASH_ENV) == name:
        import signal

        os.kill(os.getpid(), signal.SIGKILL)


@contextlib.contextmanager
def optimizer_state_skipped():
    """Within it, Keras does not warn that it skips a weight file's optimizer
    state. An epoch checkpoint holds the optimizer's variables too; a model
    built to evaluate or ship has an optimizer without variables, so Keras
    skips them (and says so) when the file is loaded: expected there."""
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore",
            message="Skipping variable loading for optimizer",
            category=UserWarning,
        )
        yield


def load_weights_without_optimizer(model, path):
    """`model.load_weights(path)` of an epoch checkpoint into a model built to
    evaluate or ship (its optimizer starts afresh); returns `model`."""
    with optimizer_state_skipped():
        model.load_weights(path)
    return model


class CheckpointError(RuntimeError):
    """No usable checkpoint although records exist (every one is damaged)."""


class EpochCheckpoints:
    """Commits and restores the per-epoch state of one run.

    Args:
        directory: the ``checkpoints/`` folder of the run.
        write: whether this process writes (the chief under
            MultiWorkerMirroredStrategy); every process reads.
        keep: how many newest records to keep (at least 2, so that a
            damaged newest one has a fallback).
    """

    def __init__(self, directory, write=True, keep=2):
        if keep < 2:
            raise ValueError(f"`keep` must be >= 2. Received: keep={keep}")
        self.directory = directory
        self.write = write
        self.keep = keep

    # === Reading ===

    def records(self):
        """``[(epoch, path)]`` of every record on disk, newest first."""
        found = []
        for path in glob.glob(os.path.join(self.directory, "epoch-*.json")):
            match = _RECORD.search(os.path.basename(path))
            if match:
                found.append((int(match.group(1)), path))
        return sorted(found, reverse=True)

    def has_completed_epoch(self):
        return bool(self.records())

    def newest_record(self):
        """The newest record that parses (a dict), whatever the state of the
        files it names; None if there is none. What the run has done, as
        opposed to `latest`, where it can resume."""
        for _, path in self.records():
            try:
                return read_json(path)
            except (OSError, ValueError):
                continue
        return None

    def check_file(self, record, key):
        """What is wrong with the file that ``record[key]`` names (missing,
        another size, another SHA-256), or None where it is intact or the
        record names none."""
        name = record.get(key)
        if name is None:
            return None
        path = os.path.join(self.directory, name)
        if not os.path.isfile(path):
            return f"{name} is missing"
        size = os.path.getsize(path)
        if size != record.get(f"{key}_size"):
            return f"{name} has {size} bytes, not {record.get(f'{key}_size')}"
        if file_sha256(path) != record.get(f"{key}_sha256"):
            return f"{name} does not match its recorded SHA-256"
        return None

    def latest(self, load=None, log=print):
        """The newest usable record (a dict), or None if there is none.

        ``load(weights_path)`` is called with the record's weights file and
        may raise if it does not load; the record is then skipped too. Each
        skipped record is reported through ``log`` in one line.
        """
        records = self.records()
        for index, (epoch, path) in enumerate(records):
            problem = None
            try:
                record = read_json(path)
            except (OSError, ValueError) as err:
                record, problem = None, f"its record cannot be read ({err})"
            if record is not None:
                problem = self.check_file(record, "weights") or self.check_file(
                    record, "best_weights"
                )
            if problem is None and load is not None:
                try:
                    load(os.path.join(self.directory, record["weights"]))
                except Exception as err:  # noqa: BLE001  Any failure to load.
                    problem = f"its weights do not load ({type(err).__name__}: {err})"
            if problem is None:
                return record
            fallback = (
                f"falling back to epoch {records[index + 1][0] + 1}"
                if index + 1 < len(records)
                else "no earlier checkpoint is left, so training starts over"
            )
            log(
                f"warning: the checkpoint of epoch {epoch + 1} in {self.directory} "
                f"is damaged ({problem}); {fallback}."
            )
        if records:
            return None
        return None

    def path(self, record, key="weights"):
        name = record.get(key)
        return None if name is None else os.path.join(self.directory, name)

    # === Writing ===

    def save_weights(self, save, name):
        """Writes a weights file atomically with ``save(tmp_path)``; returns
        ``(name, size, sha256)``."""
        path = os.path.join(self.directory, name)
        with atomic_path(path) as tmp:
            save(tmp)
            crash_point(f"checkpoint_tmp:{name}")
        return name, os.path.getsize(path), file_sha256(path)

    def commit(self, epoch, save, state, best_improved=False, previous=None):
        """Makes epoch ``epoch`` (0-based) durable.

        Args:
            epoch: the epoch just completed.
            save: ``save(path)`` writes the model's weights (and optimizers).
            state: JSON-serialisable dict stored in the record (log rows,
                early stopping, wall clock, ...).
            best_improved: also write these weights as the new best.
            previous: the previous record (to carry the best weights over).

        Returns:
            The record (also for non-writing processes, which write nothing).
        """
        record = dict(state, epoch=epoch)
        if not self.write:
            return record
        os.makedirs(self.directory, exist_ok=True)
        name, size, digest = self.save_weights(save, f"epoch-{epoch:04d}.weights.h5")
        record.update(weights=name, weights_size=size, weights_sha256=digest)
        if best_improved:
            name, size, digest = self.save_weights(save, f"best-{epoch:04d}.weights.h5")
            record.update(
                best_weights=name, best_weights_size=size, best_weights_sha256=digest
            )
        elif previous is not None and previous.get("best_weights"):
            for key in ("best_weights", "best_weights_size", "best_weights_sha256"):
                record[key] = previous[key]
        crash_point(f"before_record:{epoch}")
        write_json(os.path.join(self.directory, f"epoch-{epoch:04d}.json"), record)
        _fsync_dir(self.directory)
        self._prune()
        return record

    def _prune(self):
        records = self.records()
        kept = records[: self.keep]
        referenced = set()
        for _, path in kept:
            try:
                record = read_json(path)
            except (OSError, ValueError):
                continue
            referenced.update(
                record[k] for k in ("weights", "best_weights") if record.get(k)
            )
        for _, path in records[self.keep :]:
            os.remove(path)
        for path in glob.glob(os.path.join(self.directory, "*.weights.h5")):
            if os.path.basename(path) not in referenced:
                os.remove(path)
        # Temporary files of a writer killed mid-write.
        for path in glob.glob(os.path.join(self.directory, ".*.tmp*")):
            os.remove(path)


# === Finished runs' models ===


class ModelFileError(ValueError):
    """A model file that cannot be scored as asked: missing, not a Keras
    model, another kind of model, or trained on other images."""


def load_inpainter(path):
    """A trained inpainter from `model.keras` (or a run directory holding it).

    Raises `ModelFileError` for a missing file, a file that is not a Keras
    model, or a model that is not an inpainter."""
    import keras

    from cram_keras.models.inpainting import CRAMInpainter

    if os.path.isdir(path):
        path = os.path.join(path, "model.keras")
    if not os.path.isfile(path):
        raise ModelFileError(
            f"--eval-only: no inpainting checkpoint at {path!r}. Pass the "
            "model.keras file of a finished train_inpaint.py run (or its run "
            "directory)."
        )
    import cram_keras.models.cram  # noqa: F401  Registers CRAMEncoder for loading.
    import cram_keras.models.rnn_spn  # noqa: F401  So that the check below can say so.

    try:
        model = keras.models.load_model(path, compile=False)
    except Exception as err:  # noqa: BLE001  Anything that is not a model file.
        first = str(err).strip().splitlines()[0][:200] if str(err).strip() else ""
        raise ModelFileError(
            f"--eval-only: {path!r} is not a readable Keras model file "
            f"({type(err).__name__}: {first}). Pass the model.keras of a finished "
            "train_inpaint.py run."
        ) from None
    if not isinstance(model, CRAMInpainter):
        raise ModelFileError(
            f"--eval-only: {path!r} holds a {type(model).__name__}, not an "
            "inpainter (CRAMInpainter). Pass the model.keras of a train_inpaint.py "
            "run."
        )
    return model


def check_inpainter_fits(model, image_shape, dataset):
    """`ModelFileError` unless `model` was trained on images of
    `image_shape` (H, W, C), the shape of `dataset`'s."""
    expected = tuple(model.generator.image_size for _ in range(2)) + (
        model.generator.channels,
    )
    received = tuple(image_shape)
    if expected != received:
        raise ModelFileError(
            f"--eval-only: the checkpoint was trained on {expected[0]}x{expected[1]} "
            f"images with {expected[2]} channel(s), but --dataset {dataset} "
            f"gives {received[0]}x{received[1]}x{received[2]}. Pass the --dataset "
            "the model was trained on."
        )
