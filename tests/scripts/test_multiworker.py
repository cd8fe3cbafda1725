"""--strategy multiworker: two worker processes on 127.0.0.1 (TF_CONFIG) run
each script's smoke run to the end together (training, evaluation, figures,
--export). Both exit 0; only the chief writes the run (metrics.json,
figures, the SavedModel, checkpoints, TensorBoard), the other worker only
``workers/worker-1/final.weights.h5``; and the weights each worker ends
with, read from the file each one wrote, are identical.

Also: another worker leaves a run that --overwrite discards to the chief;
when the chief cannot take the run directory (another process holds it),
every worker stops with exit code 2. What Keras itself cannot do under the
strategy: tests/training/test_workarounds.py."""

import dataclasses
import json
import os
import re

import keras
import numpy as np
import pytest
from testing import ROOT, held_by_another_process, run_workers

from cram_keras.experiments.config import option
from cram_keras.experiments.experiment import Experiment
from cram_keras.experiments.runner import run_experiment
from cram_keras.training.distribute import Distribution

# Per script: extra flags (the smoke settings, a smaller training set) and
# the files of the chief's run beyond those of every script.
SCRIPTS = {
    "train_rnn_spn.py": (
        ["--set", "n_train=32"],
        ["attention.png"],
    ),
    # The learned clue: the chief trains the saliency network, the other
    # worker waits for its clues.
    "train_cls.py": (
        ["--clue", "saliency"],
        [
            "glimpses.png",
            "glimpses.gif",
            "saliency/clues.npz",
            "saliency/network/model.keras",
        ],
    ),
    "train_inpaint.py": (
        ["--dataset", "mnist32", "--set", "n_train=32"],
        [
            "inpaint.png",
            "glimpse_windows.png",
            "figures/epoch_001.png",
            "figures/epoch_002.png",
        ],
    ),
}
COMMON_FILES = [
    "config.json",
    "log.csv",
    "metrics.json",
    "model.keras",
    "saved_model/saved_model.pb",
]


def _event_file_pids(folder):
    """The process ids in the names of the TensorBoard event files under
    ``folder`` (``events.out.tfevents.<time>.<host>.<pid>.<n>.v2``)."""
    pids = set()
    for _, _, names in os.walk(folder):
        for name in names:
            match = re.search(r"\.(\d+)\.\d+\.v2$", name)
            if name.startswith("events.out.tfevents.") and match:
                pids.add(int(match.group(1)))
    return pids


@pytest.mark.slow
@pytest.mark.parametrize("script", list(SCRIPTS))
def test_two_local_workers_run_the_script_to_the_end(script, fake_mnist_dir, tmp_path):
    flags, files = SCRIPTS[script]
    out = tmp_path / "run"
    argv = [os.path.join(ROOT, script), "--smoke", "--strategy", "multiworker",
            "--data-dir", str(fake_mnist_dir), "--export", "--output-dir", str(out),
            *flags]  # fmt: skip
    if script != "train_inpaint.py":
        argv += ["--cache-dir", str(tmp_path / "cache")]
    (chief, *_), (other, *_) = results = run_workers(argv)
    for proc, stdout, stderr in results:
        assert proc.returncode == 0, stdout[-2000:] + stderr[-4000:]

    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["distribution"] == {
        "strategy": "multiworker",
        "replicas": 2,
        "workers": 2,
    }
    for name in COMMON_FILES + files:
        assert (out / name).is_file(), name
    assert sorted(p.name for p in (out / "checkpoints").glob("epoch-*.json"))
    # The other worker wrote its final weights and nothing else; the
    # TensorBoard logs are the chief's process's alone.
    written = sorted(
        str(p.relative_to(out / "workers")) for p in (out / "workers").rglob("*")
    )
    assert written == ["worker-1", os.path.join("worker-1", "final.weights.h5")]
    assert not (out / ".lock").exists()  # the chief held the directory
    assert _event_file_pids(out) == {chief.pid}
    assert other.pid != chief.pid

    import cram_keras.models  # noqa: F401  Registers the model classes.

    chief_model = keras.models.load_model(out / "model.keras", compile=False)
    other_model = keras.models.load_model(out / "model.keras", compile=False)
    other_model.load_weights(out / "workers" / "worker-1" / "final.weights.h5")
    assert len(chief_model.weights) > 0
    for a, b in zip(chief_model.weights, other_model.weights, strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), a.path)


@pytest.mark.slow
def test_workers_stop_with_a_chief_whose_run_directory_is_busy(tmp_path):
    """The chief alone takes the run directory; held by another process, the
    chief is refused (exit 2, one paragraph) and the other worker stops with
    it (exit 2) instead of waiting for it; nothing is written."""
    out = tmp_path / "run"
    out.mkdir()
    argv = [os.path.join(ROOT, "train_rnn_spn.py"), "--smoke", "--strategy",
            "multiworker", "--output-dir", str(out)]  # fmt: skip
    with held_by_another_process(out) as holder:
        (chief, _, chief_err), (other, _, other_err) = run_workers(argv, timeout=300)
        assert sorted(os.listdir(out)) == [".lock"]
    assert chief.returncode == 2, chief_err[-3000:]
    assert other.returncode == 2, other_err[-3000:]
    assert "Traceback" not in chief_err + other_err
    assert f"error: {out} is in use by another process: pid {holder.pid}" in chief_err
    assert (
        f"error: the chief of this cluster could not take the run directory {out}"
        in other_err
    )
    assert os.listdir(out) == []


# === What another worker does with the run directory ===


@dataclasses.dataclass(frozen=True)
class _LineConfig:
    epochs: int = option(2, "epochs")
    seed: int = option(0, "seed")


class _Line(Experiment):
    """Fits y = 2x with one dense unit."""

    name = "line"
    Config = _LineConfig
    backends = ("tensorflow", "jax")

    def run_name(self, config):
        return "line"

    def load_data(self, run):
        x = np.linspace(-1.0, 1.0, 32, dtype="float32")[:, None]
        return x, 2.0 * x

    def train_dataset(self, run, epoch):
        return _Batches(*run.data)

    def samples_per_epoch(self, run):
        return len(run.data[0])

    def build_model(self, run):
        model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
        model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
        return model

    def evaluate(self, run):
        return {"mse": float(run.model.evaluate(*run.data, verbose=0))}


class _Batches(keras.utils.PyDataset):
    def __init__(self, x, y):
        super().__init__()
        self.x, self.y = x, y

    def __len__(self):
        return len(self.x) // 8

    def __getitem__(self, i):
        return self.x[i * 8 : (i + 1) * 8], self.y[i * 8 : (i + 1) * 8]


def test_another_worker_neither_clears_nor_resumes_a_run_that_overwrite_discards(
    tmp_path,
):
    """With --overwrite, each worker may look at the run directory before the
    chief has cleared it: only the chief clears it, and another worker starts
    from the initial weights as the chief does, not from what it finds."""
    out = tmp_path / "run"
    run_experiment(_Line(), _LineConfig(epochs=3), str(out), log=lambda _: None)
    before = {
        str(p.relative_to(out)): p.read_bytes() for p in out.rglob("*") if p.is_file()
    }
    assert "checkpoints/epoch-0002.json" in before  # a finished run of 3 epochs

    other = Distribution("default", workers=1, worker_index=1, is_chief=False)
    metrics = run_experiment(
        _Line(),
        _LineConfig(epochs=2, seed=1),
        str(out),
        other,
        overwrite=True,
        log=lambda _: None,
    )
    assert metrics["epochs"] == 2  # trained anew, not the 3 epochs found
    after = {
        str(p.relative_to(out)): p.read_bytes() for p in out.rglob("*") if p.is_file()
    }
    weights = os.path.join("workers", "worker-1", "final.weights.h5")
    assert set(after) == set(before) | {weights}
    assert all(after[name] == data for name, data in before.items())


def test_the_classifier_search_is_refused_across_workers(tmp_path):
    from cram_keras.experiments import cram_cls
    from cram_keras.experiments.errors import UsageError
    from cram_keras.experiments.experiment import Run

    config = cram_cls.smoke_config(tune=True)
    chief = Distribution("multiworker", workers=2, worker_index=0, is_chief=True)
    run = Run(str(tmp_path / "run"), config, chief)
    with pytest.raises(UsageError, match="does not run under MultiWorkerMirrored"):
        cram_cls.EXPERIMENT.custom_training(run)
    assert not (tmp_path / "run").exists()
