"""The shared runner on a tiny regression experiment: resume without
retraining, a damaged checkpoint falls back to the previous one, a failed
first attempt never blocks the corrected command, a different config with
completed epochs (or with a search's trials) is refused, a larger
max_trials continues a search, early stopping and best weights survive a
restart, a NaN loss stops the run naming epoch and step, and a run says
where it goes, each epoch's time and ETA, and where its outputs are.

The reference for every "resumed == uninterrupted" check is a separate
uninterrupted run of the same config, not the code's own bookkeeping.
"""

import csv
import dataclasses
import json
import os
import re

import keras
import numpy as np
import pytest

from cram_keras.experiments import cli, run_dir
from cram_keras.experiments.config import option
from cram_keras.experiments.errors import UsageError
from cram_keras.experiments.experiment import Experiment
from cram_keras.experiments.runner import run_experiment
from cram_keras.training.callbacks import TrainingDiverged


@dataclasses.dataclass(frozen=True)
class ToyConfig:
    epochs: int = option(4, "epochs")
    learning_rate: float = option(0.05, "SGD rate")
    seed: int = option(0, "seed")
    n: int = option(64, "examples")
    patience: int = option(100, "early-stopping patience", flag=False)
    poison_epoch: int = option(-1, "epoch whose targets are NaN", flag=False)
    export: bool = option(False, "unused")


class _Data:
    def __init__(self, x, y):
        self.x, self.y = x, y
        self.source = {"name": "toy", "n": len(x)}


class Toy(Experiment):
    name = "toy"
    Config = ToyConfig
    backends = ("tensorflow", "jax")
    monitor = "val_loss"
    monitor_mode = "min"
    smoke_overrides = {"epochs": 2}
    loads = 0

    def run_name(self, config):
        return f"toy_seed{config.seed}"

    def load_data(self, run):
        config = run.config
        type(self).loads += 1
        rng = np.random.default_rng(0)
        x = rng.normal(size=(config.n, 3)).astype("float32")
        y = (x @ np.array([[1.0], [-2.0], [0.5]], "float32")).astype("float32")
        return _Data(x, y)

    def train_dataset(self, run, epoch):
        config, data = run.config, run.data
        order = np.random.default_rng([config.seed, epoch]).permutation(len(data.x))
        y = data.y[order].copy()
        if epoch == config.poison_epoch:
            y[:] = np.nan
        return _Batches(data.x[order], y)

    def valid_dataset(self, run):
        return (run.data.x[:16], run.data.y[:16])

    def samples_per_epoch(self, run):
        return len(run.data.x)

    def build_model(self, run):
        model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
        rate = run.config.learning_rate
        model.compile(optimizer=keras.optimizers.Adam(rate), loss="mse")
        return model

    def evaluate(self, run):
        return {"mse": float(run.model.evaluate(run.data.x, run.data.y, verbose=0))}


class _Batches(keras.utils.PyDataset):
    def __init__(self, x, y, batch=16):
        super().__init__()
        self.x, self.y, self.batch = x, y, batch

    def __len__(self):
        return len(self.x) // self.batch

    def __getitem__(self, i):
        s = slice(i * self.batch, (i + 1) * self.batch)
        return self.x[s], self.y[s]


def _log_epochs(directory):
    with open(os.path.join(directory, "log.csv")) as f:
        return [int(r["epoch"]) for r in csv.DictReader(f)]


def _final_weights(directory):
    model = keras.models.load_model(os.path.join(directory, "model.keras"))
    return [np.asarray(w) for w in model.get_weights()]


def test_uninterrupted_run_writes_every_artifact(tmp_path):
    out = tmp_path / "run"
    metrics = run_experiment(Toy(), ToyConfig(), str(out))
    assert _log_epochs(out) == [0, 1, 2, 3]
    for name in ("config.json", "metrics.json", "model.keras", "log.csv"):
        assert (out / name).exists()
    assert metrics["epochs"] == 4
    stored = json.loads((out / "config.json").read_text())
    assert stored["epochs"] == 4 and stored["data_source"] == {"name": "toy", "n": 64}
    # A finished run returns its metrics without loading data again.
    before = Toy.loads
    again = run_experiment(Toy(), ToyConfig(), str(out))
    assert Toy.loads == before and again["mse"] == metrics["mse"]


def test_resume_after_a_kill_matches_an_uninterrupted_run(tmp_path):
    reference = tmp_path / "reference"
    run_experiment(Toy(), ToyConfig(), str(reference))

    out = tmp_path / "run"

    class KilledAfterTwo(Toy):
        def epoch_callbacks(self, run):
            return [_KillAt(2)]

    with pytest.raises(_Killed):
        run_experiment(KilledAfterTwo(), ToyConfig(), str(out))
    assert _log_epochs(out) == [0, 1]
    assert not (out / "metrics.json").exists()
    run_experiment(Toy(), ToyConfig(), str(out))
    assert _log_epochs(out) == [0, 1, 2, 3]
    for a, b in zip(_final_weights(out), _final_weights(reference), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_training_in_stretches_matches_an_uninterrupted_run(tmp_path, capsys):
    reference = tmp_path / "reference"
    run_experiment(Toy(), ToyConfig(), str(reference))

    out = tmp_path / "run"
    assert run_experiment(Toy(), ToyConfig(), str(out), stop_after_epochs=1) is None
    assert _log_epochs(out) == [0]
    assert not (out / "metrics.json").exists()
    err = capsys.readouterr().err
    assert "paused:" in err and "without --stop-after-epochs" in err
    # A smaller limit than the epochs done trains nothing and stays paused;
    # a caller with its own way to continue says so instead of the flag.
    hint = "the next stage continues it."
    assert (
        run_experiment(
            Toy(), ToyConfig(), str(out), stop_after_epochs=1, pause_hint=hint
        )
        is None
    )
    err = capsys.readouterr().err
    assert hint in err and "--stop-after-epochs" not in err
    assert run_experiment(Toy(), ToyConfig(), str(out), stop_after_epochs=3) is None
    assert _log_epochs(out) == [0, 1, 2]
    # A limit beyond the run's epochs finishes it.
    metrics = run_experiment(Toy(), ToyConfig(), str(out), stop_after_epochs=10)
    assert metrics["epochs"] == 4 and _log_epochs(out) == [0, 1, 2, 3]
    for a, b in zip(_final_weights(out), _final_weights(reference), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("bad", [0, -2, 1.5, True])
def test_stop_after_epochs_must_be_a_positive_integer(bad, tmp_path):
    with pytest.raises(UsageError, match="--stop-after-epochs must be a positive"):
        run_experiment(Toy(), ToyConfig(), str(tmp_path / "r"), stop_after_epochs=bad)
    assert not (tmp_path / "r").exists()


def test_cli_stop_after_epochs_exits_0_and_resumes(tmp_path, capsys):
    out = str(tmp_path / "r")
    assert cli.main(Toy(), ["--output-dir", out, "--stop-after-epochs", "2"]) == 0
    assert _log_epochs(out) == [0, 1] and not os.path.exists(out + "/metrics.json")
    assert cli.main(Toy(), ["--output-dir", out, "--stop-after-epochs", "0"]) == 2
    assert "positive whole number" in capsys.readouterr().err
    assert cli.main(Toy(), ["--output-dir", out]) == 0
    assert _log_epochs(out) == [0, 1, 2, 3] and os.path.exists(out + "/metrics.json")


class _Killed(Exception):
    pass


class _KillAt(keras.callbacks.Callback):
    """Raises at the start of epoch `epoch` (as a SIGKILL mid-epoch would stop it)."""

    def __init__(self, epoch):
        super().__init__()
        self.at = epoch

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.at:
            raise _Killed()


def test_a_truncated_checkpoint_falls_back_to_the_previous_one(tmp_path, capsys):
    out = tmp_path / "run"

    class KilledAfterThree(Toy):
        def epoch_callbacks(self, run):
            return [_KillAt(3)]

    with pytest.raises(_Killed):
        run_experiment(KilledAfterThree(), ToyConfig(), str(out))
    newest = out / "checkpoints" / "epoch-0002.weights.h5"
    newest.write_bytes(newest.read_bytes()[:100])  # a write cut short
    capsys.readouterr()
    run_experiment(Toy(), ToyConfig(), str(out))
    err = capsys.readouterr().err
    assert "checkpoint of epoch 3" in err and "falling back to epoch 2" in err
    assert _log_epochs(out) == [0, 1, 2, 3]


def test_a_run_without_completed_epochs_is_reused_with_a_new_config(tmp_path):
    out = tmp_path / "run"

    class Failing(Toy):
        def load_data(self, run):
            raise UsageError("no data")

    with pytest.raises(UsageError):
        run_experiment(Failing(), ToyConfig(), str(out))
    assert not out.exists()  # nothing half-written
    out.mkdir()
    (out / "config.json").write_text(json.dumps({"epochs": 9}))
    metrics = run_experiment(Toy(), ToyConfig(), str(out))
    assert metrics["epochs"] == 4


def test_a_different_config_with_completed_epochs_is_refused(tmp_path):
    out = tmp_path / "run"
    run_experiment(Toy(), ToyConfig(epochs=1), str(out))
    with pytest.raises(UsageError, match=r"epochs: 1 -> 2.*--output-dir.*--overwrite"):
        run_experiment(Toy(), ToyConfig(epochs=2), str(out))
    metrics = run_experiment(Toy(), ToyConfig(epochs=2), str(out), overwrite=True)
    assert metrics["epochs"] == 2


def test_the_refusal_names_the_flags_of_the_caller_that_chose_the_directory(
    tmp_path,
):
    """The study driver chooses its runs' directories (--runs-dir) and has no
    --output-dir or --overwrite: within `remedy`, the refusal says what to
    do in its terms; outside it, the scripts' flags again."""
    out = tmp_path / "run"
    run_experiment(Toy(), ToyConfig(epochs=1), str(out))
    with run_dir.remedy("choose another --runs-dir"):
        with pytest.raises(UsageError) as info:
            run_experiment(Toy(), ToyConfig(epochs=2), str(out))
    message = str(info.value)
    assert message.endswith("resume it, choose another --runs-dir."), message
    assert "--output-dir" not in message and "--overwrite" not in message
    with pytest.raises(UsageError, match=r"--output-dir.*--overwrite"):
        run_experiment(Toy(), ToyConfig(epochs=2), str(out))


def test_early_stopping_state_and_best_weights_survive_a_restart(tmp_path):
    # A huge rate makes validation loss worse after the first epochs.
    config = ToyConfig(epochs=8, learning_rate=3.0, patience=2)
    reference = run_experiment(Toy(), config, str(tmp_path / "reference"))

    class KilledAtThree(Toy):
        def epoch_callbacks(self, run):
            return [_KillAt(3)]

    out = tmp_path / "run"
    try:
        run_experiment(KilledAtThree(), config, str(out))
    except _Killed:
        pass
    resumed = run_experiment(Toy(), config, str(out))
    assert resumed["best_epoch"] == reference["best_epoch"]
    assert resumed["epochs"] == reference["epochs"]
    np.testing.assert_allclose(resumed["mse"], reference["mse"], rtol=1e-5)


def test_nan_loss_stops_with_epoch_and_step_and_keeps_the_checkpoint(tmp_path):
    out = tmp_path / "run"
    with pytest.raises(TrainingDiverged, match=r"at epoch 2, step 1.*epoch 1"):
        run_experiment(Toy(), ToyConfig(poison_epoch=1), str(out))
    assert _log_epochs(out) == [0]
    assert (out / "checkpoints" / "epoch-0000.json").exists()


def test_backend_outside_the_experiment_is_refused_in_one_line(tmp_path):
    class TFOnly(Toy):
        backends = ("jax",)

    with pytest.raises(UsageError, match="trains on jax only"):
        run_experiment(TFOnly(), ToyConfig(), str(tmp_path / "run"))


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--set", "learning_rate=nan"], "must be a finite number"),
        (["--learning-rate", "inf"], "must be a finite number"),
        (["--set", "nope=1"], "Valid keys: epochs, export, learning_rate"),
        (["--set", "epochs"], "--set takes key=value"),
        (["--set", "epochs=two"], "`epochs` must be an integer"),
    ],
)
def test_cli_rejects_bad_settings_with_exit_2(argv, message, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        code = cli.main(Toy(), ["--output-dir", str(tmp_path / "r"), *argv])
        raise SystemExit(code)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "r").exists()


def test_cli_set_overrides_any_field_and_output_dir_under_a_file(tmp_path, capsys):
    code = cli.main(
        Toy(), ["--output-dir", str(tmp_path / "r"), "--set", "patience=1", "--smoke"]
    )
    assert code == 0
    stored = json.loads((tmp_path / "r" / "config.json").read_text())
    assert stored["patience"] == 1 and stored["epochs"] == 2
    (tmp_path / "file").write_text("x")
    code = cli.main(Toy(), ["--output-dir", str(tmp_path / "file" / "run")])
    assert code == 2
    assert "is a regular file" in capsys.readouterr().err


class _ScopeThatFailsToExit:
    """Like TensorFlow's device scope when an interrupt arrived between its
    entry and exit: leaving it raises an error of its own."""

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        raise RuntimeError("Exiting device scope without proper scope nesting")


@pytest.mark.parametrize(
    "interrupt, code", [(cli.Terminated(), 143), (KeyboardInterrupt(), 130)]
)
def test_an_error_raised_by_an_interrupt_is_the_interrupt(
    tmp_path, capsys, interrupt, code
):
    """A SIGTERM or Ctrl-C that makes a context manager raise on its way out
    stops the run as the interrupt itself does: its exit code and the line
    that says how to continue, no traceback. The same error without an
    interrupt behind it is a bug and keeps its traceback."""

    class Interrupted(Toy):
        def load_data(self, run):
            with _ScopeThatFailsToExit():
                raise interrupt

    out = str(tmp_path / "r")
    assert cli.main(Interrupted(), ["--output-dir", out]) == code
    err = capsys.readouterr().err
    assert "interrupted: completed epochs are saved" in err
    assert "Traceback" not in err and "scope nesting" not in err
    assert not os.path.exists(os.path.join(out, ".lock"))  # released

    class Failing(Toy):
        def load_data(self, run):
            with _ScopeThatFailsToExit():
                pass

    with pytest.raises(RuntimeError, match="scope nesting"):
        cli.main(Failing(), ["--output-dir", str(tmp_path / "f")])


def test_default_run_name_tells_apart_every_changed_setting():
    from cram_keras.experiments import rnn_spn

    name = cli.default_run_name
    paper = name(rnn_spn.EXPERIMENT, rnn_spn.Config())
    assert paper == "rnn_spn_d2_seed0"
    assert name(rnn_spn.EXPERIMENT, rnn_spn.Config(seed=3)) == "rnn_spn_d2_seed3"
    fewer = name(rnn_spn.EXPERIMENT, rnn_spn.Config(n_train=20000))
    other_rate = name(rnn_spn.EXPERIMENT, rnn_spn.Config(learning_rate=1e-3))
    assert len({paper, fewer, other_rate}) == 3
    # Where the cache lives does not change the experiment.
    assert name(rnn_spn.EXPERIMENT, rnn_spn.Config(cache_dir="/tmp/x")) == paper


@pytest.mark.parametrize(
    "backend, flag, run_eagerly, expected",
    [
        ("tensorflow", False, False, False),
        ("tensorflow", True, False, True),
        # On JAX, "not compiled" would dispatch every op of the step alone.
        ("jax", False, False, True),
        ("jax", True, False, True),
        ("jax", False, True, False),
        ("tensorflow", True, True, False),
    ],
)
def test_jit_compile_follows_the_backend(
    backend, flag, run_eagerly, expected, monkeypatch
):
    from cram_keras.experiments import experiment

    monkeypatch.setattr(experiment.keras.backend, "backend", lambda: backend)
    assert experiment.jit_compile_for_backend(flag, run_eagerly) is expected


@pytest.mark.parametrize("backend, eager", [("tensorflow", True), ("jax", False)])
def test_the_classifiers_smoke_step_is_eager_only_on_tensorflow(
    backend, eager, monkeypatch
):
    """On JAX an eager step compiles each of its ops alone: the smoke run
    compiles the step instead."""
    from cram_keras.experiments import cram_cls

    monkeypatch.setattr(cram_cls.keras.backend, "backend", lambda: backend)
    config = cram_cls.EXPERIMENT.smoke_config()
    assert config.run_eagerly is eager
    assert cram_cls.EXPERIMENT.smoke_config(epochs=1).run_eagerly is eager


def test_a_setting_added_after_a_run_started_takes_its_default(tmp_path):
    """A run directory written before a Config gained a field (its
    config.json lacks the key) resumes as long as the new field keeps its
    default; a non-default value is a real difference."""
    out = tmp_path / "run"
    run_experiment(Toy(), ToyConfig(epochs=2), str(out), stop_after_epochs=1)
    stored = json.loads((out / "config.json").read_text())
    del stored["poison_epoch"]  # as written by the older version
    (out / "config.json").write_text(json.dumps(stored))
    with pytest.raises(UsageError, match=r"poison_epoch: -1 -> 5"):
        run_experiment(Toy(), ToyConfig(epochs=2, poison_epoch=5), str(out))
    metrics = run_experiment(Toy(), ToyConfig(epochs=2), str(out))
    assert metrics["epochs"] == 2 and _log_epochs(out) == [0, 1]


def test_dtype_policy_scope_sets_and_restores_the_global_policy():
    from cram_keras.training.precision import dtype_policy_scope

    @dataclasses.dataclass(frozen=True)
    class WithPolicy:
        dtype_policy: str = "mixed_bfloat16"

    before = keras.config.dtype_policy().name
    with dtype_policy_scope(WithPolicy()):
        assert keras.config.dtype_policy().name == "mixed_bfloat16"
        layer = keras.layers.Dense(2)
        layer.build((None, 3))
        assert layer.compute_dtype == "bfloat16"
        assert layer.kernel.dtype == "float32"
    assert keras.config.dtype_policy().name == before
    with pytest.raises(RuntimeError), dtype_policy_scope(WithPolicy()):
        raise RuntimeError("training failed")
    assert keras.config.dtype_policy().name == before
    with dtype_policy_scope(ToyConfig()):  # no such setting: left alone
        assert keras.config.dtype_policy().name == before


# === What a run prints ===

_EPOCH_LINE = re.compile(r"^Epoch (\d+)/(\d+) - [\d.hms]+ - ETA [\d.hms]+ - (.*)$")


def test_a_run_says_where_it_goes_each_epoch_and_where_its_outputs_are(
    tmp_path, capsys
):
    out = tmp_path / "run"
    metrics = run_experiment(Toy(), ToyConfig(epochs=3), str(out))
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"run directory: {out} (new run)"
    assert lines[1].startswith("backend: tensorflow; strategy: default (1 replica)")
    assert lines[2] == "data: toy"

    epochs = [m for m in map(_EPOCH_LINE.match, lines) if m]
    assert [(m[1], m[2]) for m in epochs] == [("1", "3"), ("2", "3"), ("3", "3")]
    with open(out / "log.csv") as f:
        logged = list(csv.DictReader(f))
    for match, row in zip(epochs, logged, strict=True):
        assert f"val_loss: {float(row['val_loss']):.4g}" in match[3]

    # The summary, not the metrics as JSON: the best epoch, then every entry
    # of the run directory with what it is.
    assert not any(line.startswith(("{", "}")) for line in lines)
    best = f"best validation epoch: {metrics['best_epoch'] + 1} of 3"
    assert any(line.strip() == best for line in lines)
    listing = lines[lines.index(f"Outputs in {out}:") + 1 :]
    named = [line.split()[0] for line in listing]
    assert sorted(name.rstrip("/") for name in named) == sorted(os.listdir(out))
    assert named[:2] == ["metrics.json", "model.keras"]
    for name in named:
        assert (out / name).is_dir() == name.endswith("/"), name

    # A finished run says so, and shows the same summary.
    run_experiment(Toy(), ToyConfig(epochs=3), str(out))
    again = capsys.readouterr().out.splitlines()
    assert again[0] == f"run directory: {out} is complete (trained earlier; " + (
        "--overwrite trains it again)"
    )
    assert again[again.index(f"Outputs in {out}:") + 1 :] == listing


@dataclasses.dataclass(frozen=True)
class SearchConfig:
    max_trials: int = option(1, "trials")
    glimpse_range: list = option([1, 2], "glimpses searched", flag=False)


def _search_dir(tmp_path, trials, finished):
    """A run directory as a search leaves it: config.json, keras-tuner's
    trial folders and, when finished, metrics.json (no epoch checkpoints of
    its own)."""
    out = tmp_path / "search"
    (out / "trials").mkdir(parents=True)
    (out / "config.json").write_text(json.dumps(dataclasses.asdict(SearchConfig())))
    for i in range(trials):
        (out / "tuner" / f"trial_{i}").mkdir(parents=True)
        (out / "tuner" / f"trial_{i}" / "trial.json").write_text("{}")
        (out / "trials" / str(i)).mkdir()
        (out / "trials" / str(i) / "metrics.json").write_text("{}")
    if finished:
        (out / "metrics.json").write_text("{}")
    return out


def _files(directory):
    return {
        os.path.relpath(os.path.join(root, name), directory): os.stat(
            os.path.join(root, name)
        ).st_mtime_ns
        for root, _, names in os.walk(directory)
        for name in names
    }


@pytest.mark.parametrize("finished", [True, False])
def test_a_search_is_never_cleared_for_another_config(tmp_path, finished):
    from cram_keras.experiments.run_dir import inspect_run_dir

    out = _search_dir(tmp_path, trials=1, finished=finished)
    before = _files(out)
    notes = []
    with pytest.raises(UsageError, match=r"a search with 1 trial \(tuner/\)") as error:
        inspect_run_dir(str(out), SearchConfig(glimpse_range=[1, 1]), log=notes.append)
    assert "glimpse_range: [1, 2] -> [1, 1]" in str(error.value)
    assert "--overwrite" in str(error.value)
    assert _files(out) == before and notes == []
    # Nor with a changed max_trials on top.
    with pytest.raises(UsageError):
        inspect_run_dir(str(out), SearchConfig(max_trials=3, glimpse_range=[1, 1]))
    assert _files(out) == before


def test_a_larger_max_trials_continues_a_search(tmp_path):
    from cram_keras.experiments.run_dir import inspect_run_dir

    out = _search_dir(tmp_path, trials=1, finished=True)
    trials = _files(out / "trials")
    # Not more trials than it has: the search is done.
    assert inspect_run_dir(str(out), SearchConfig()) == "finished"
    assert inspect_run_dir(str(out), SearchConfig(max_trials=1)) == "finished"
    notes = []
    state = inspect_run_dir(str(out), SearchConfig(max_trials=2), log=notes.append)
    assert state == "resume"
    assert "max_trials: 1 -> 2" in notes[0] and "every trial is kept" in notes[0]
    # The finished search's metrics.json goes (the continued search writes
    # it again); every trial stays as it was.
    assert not (out / "metrics.json").exists()
    assert _files(out / "trials") == trials
    assert (out / "tuner" / "trial_0" / "trial.json").exists()

    # An interrupted search resumes under a changed max_trials.
    out = _search_dir(tmp_path / "interrupted", trials=2, finished=False)
    before = _files(out)
    assert inspect_run_dir(str(out), SearchConfig(max_trials=5)) == "resume"
    assert inspect_run_dir(str(out), SearchConfig(max_trials=1)) == "resume"
    assert _files(out) == before


def test_default_run_name_leaves_out_max_trials():
    from cram_keras.experiments import inpaint

    name = cli.default_run_name
    base = name(inpaint.EXPERIMENT, inpaint.Config(tune=True))
    assert name(inpaint.EXPERIMENT, inpaint.Config(tune=True, max_trials=40)) == base
    other = inpaint.Config(tune=True, glimpse_range=[1, 4])
    assert name(inpaint.EXPERIMENT, other) != base


def test_a_run_under_mixed_bfloat16_notes_a_cpu_that_emulates_it(
    tmp_path, monkeypatch, capsys
):
    from cram_keras import platform_info

    @dataclasses.dataclass(frozen=True)
    class ToyBf16Config(ToyConfig):
        dtype_policy: str = "mixed_bfloat16"

    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    monkeypatch.setattr(platform_info, "accelerators", lambda: [])
    old_cpu = ["avx2", "fma", "avx512f"]
    for flags, noted in ((old_cpu, True), ([*old_cpu, "amx_bf16"], False)):
        monkeypatch.setattr(platform_info, "cpu_flags", lambda flags=flags: flags)
        out = tmp_path / "-".join(flags)
        run_experiment(Toy(), ToyBf16Config(epochs=1), str(out))
        err = capsys.readouterr().err
        assert ("note: mixed_bfloat16 on a CPU without bfloat16" in err) == noted
