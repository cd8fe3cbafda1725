"""The validation search over dropout and downsample factor
(``run_study.py rnn_spn/dropout_search``, cram_keras/studies/dropout_search.py): the documented grid and selection rule, and a smoke
search (bundled MNIST sample, 1 epoch, 2 trials) whose choice is the argmin
of the validation errors the runs committed, that never evaluates the test
set, and that a rerun finishes from its run directories without training."""

import json
import os
import shutil
from pathlib import Path

import pytest

from cram_keras.experiments import named, rnn_spn
from cram_keras.experiments.run_dir import read_log
from cram_keras.studies import driver
from cram_keras.studies import dropout_search as search

GRID = named.load("rnn_spn/dropout_search")[0].extra["GRID"]


def test_default_grid():
    spn = search.grid_trials(
        "rnn_spn", GRID["rates"], GRID["placements"], GRID["downsample"]
    )
    # d in 1..4; per d: rate 0 once, and 5 rates x 2 placements.
    assert len(spn) == 4 * (1 + 5 * 2) == 44
    assert [t["name"] for t in spn[:4]] == [
        "p0_d1",
        "code_p0.1_d1",
        "paper_p0.1_d1",
        "code_p0.2_d1",
    ]
    assert spn[0]["dropout_placement"] is None and spn[0]["dropout"] == 0.0
    conv = search.grid_trials(
        "conv", GRID["rates"], GRID["placements"], GRID["downsample"]
    )
    assert len(conv) == 11 and {t["downsample"] for t in conv} == {None}
    assert conv[-1]["name"] == "paper_p0.5"


def test_trial_config_cannot_finish_the_run():
    base = rnn_spn.Config()
    trial = search.grid_trials("ffn_spn", [0.3], ["paper"], [3.0])[0]
    config = search.trial_config(base, "ffn_spn", trial, epochs=70)
    assert (config.model, config.dropout, config.dropout_placement) == (
        "ffn_spn",
        0.3,
        "paper",
    )
    assert config.downsample == 3.0
    # The protocol's limit (300) and patience (50) would let a 70-epoch
    # trial finish by early stopping; the trial's run cannot.
    assert config.epochs > 70 and config.patience >= 70
    assert (config.learning_rate, config.batch_size, config.seed) == (5e-4, 100, 0)


def _record(name, rate, error, placement="code"):
    return dict(name=name, dropout=rate, dropout_placement=placement,
                best_valid_per_digit_error=error)  # fmt: skip


def test_the_chosen_command_names_the_data_folder_as_mnist_dir():
    record = dict(downsample=2.0, dropout=0.2, dropout_placement="paper")
    command = search.train_command("rnn_spn", record, "/data/mnist", 5)
    assert command == (
        "python train_rnn_spn.py --model rnn_spn --downsample 2 --data-dir MNIST_DIR "
        "--set dropout=0.2 --set dropout_placement=paper"
    )
    assert "--data-dir" not in search.train_command("rnn_spn", record, None, 5)


def test_selection_rule_lowest_error_then_lower_rate_then_grid_order():
    records = [
        _record("p0", 0.0, 0.031),
        _record("code_p0.1", 0.1, 0.020),
        _record("paper_p0.1", 0.1, 0.019),
        _record("code_p0.2", 0.2, 0.019),
    ]
    assert search.choose(records)["name"] == "paper_p0.1"
    # The same count of misclassified digits (float noise below 1e-6): lower rate.
    records[1]["best_valid_per_digit_error"] = 0.019 + 1e-9
    assert search.choose(records)["name"] == "code_p0.1"
    # Same error and rate: the earlier trial in grid order (code before paper).
    records[2]["best_valid_per_digit_error"] = 0.019
    assert search.choose(records)["name"] == "code_p0.1"
    assert search.choose(records[2:])["name"] == "paper_p0.1"


def _keys(value, skip=("data_source",)):
    if isinstance(value, dict):
        for key, item in value.items():
            if key in skip:
                continue
            yield key
            yield from _keys(item, skip)
    elif isinstance(value, list):
        for item in value:
            yield from _keys(item, skip)


@pytest.mark.slow
def test_smoke_search_chooses_the_validation_argmin_and_never_reads_test(
    tmp_path, monkeypatch, capsys
):
    def forbidden(*args, **kwargs):
        raise AssertionError("the search evaluated the test set")

    # The runner's final step (test evaluation, figures of test images).
    monkeypatch.setattr(rnn_spn.RNNSPNExperiment, "evaluate", forbidden)
    monkeypatch.setattr(rnn_spn.RNNSPNExperiment, "write_outputs", forbidden)
    output = tmp_path / "search.json"
    argv = [
        "rnn_spn/dropout_search",
        "--smoke", "--models", "rnn_spn", "--epochs", "1", "--rates", "0,0.3",
        "--placements", "paper", "--downsample", "3",
        "--runs-dir", str(tmp_path / "runs"), "--output", str(output),
        "--cache-dir", str(tmp_path / "cache"),
    ]  # fmt: skip
    assert driver.main(argv) == 0
    result = json.loads(output.read_text())
    # Each trial pauses after its epochs; the search's own flags continue it.
    said = capsys.readouterr()
    assert "the trial is done" in said.out + said.err
    assert "--stop-after-epochs" not in said.out + said.err
    # After each trial: how many are done, and the time the rest should take.
    assert "search: 1 of 2 trials done; about " in said.out
    assert "search: 2 of 2 trials done\n" in said.out

    entry = result["models"]["rnn_spn"]
    assert [t["name"] for t in entry["trials"]] == ["p0_d3", "paper_p0.3_d3"]
    assert entry["complete"]
    # Each curve is what its run committed: 1 - validation digit accuracy.
    errors = {}
    for trial in entry["trials"]:
        # Recorded without this machine's folders: DIR is the --runs-dir.
        assert trial["run_dir"] == f"DIR/rnn_spn/{trial['name']}"
        run_dir = str(tmp_path / "runs" / "rnn_spn" / trial["name"])
        rows = read_log(run_dir)
        assert len(rows) == 1
        assert trial["valid_per_digit_error"] == [1.0 - rows[0]["val_digit_accuracy"]]
        errors[trial["name"]] = (min(trial["valid_per_digit_error"]), trial["dropout"])
        # Paused after its epoch: never finished, never evaluated.
        assert not os.path.exists(os.path.join(run_dir, "metrics.json"))
        stored = json.loads((Path(run_dir) / "config.json").read_text())
        assert stored["dropout"] == trial["dropout"] and stored["downsample"] == 3.0
    argmin = min(errors, key=lambda name: errors[name])  # error, then rate
    assert entry["chosen"]["trial"] == argmin
    assert entry["chosen"]["best_valid_per_digit_error"] == errors[argmin][0]
    assert "--downsample 3" in entry["chosen"]["train_command"]
    # No test-set number anywhere (the data source only counts test digits,
    # the settings hold the test set's size).
    assert not [
        k for k in _keys(result, ("data_source", "settings")) if "test" in k.lower()
    ]
    assert not [
        k for k in _keys(result["data_source"], ()) if "error" in k or "loss" in k
    ]
    for key in ("grid", "hardware", "backend", "commit", "command", "selection_rule"):
        assert key in result
    # No folder of this machine: the data (the bundled sample here) as DIR.
    text = output.read_text()
    assert str(tmp_path) not in text
    assert os.path.dirname(os.path.abspath(rnn_spn.__file__)) not in text
    assert result["data_source"]["path"] == "DIR"
    assert result["configuration"] == "rnn_spn/dropout_search"
    assert result["settings"]["dropout_ramp_epochs"] == 5
    assert result["grid"]["rnn_spn"]["trials"] == ["p0_d3", "paper_p0.3_d3"]
    assert result["command"].startswith(
        "python run_study.py rnn_spn/dropout_search --smoke"
    )

    # Resumable: a rerun trains nothing and writes the same choice.
    monkeypatch.setattr(rnn_spn, "train_and_evaluate", forbidden)
    assert driver.main(argv) == 0
    again = json.loads(output.read_text())["models"]["rnn_spn"]
    assert again["chosen"] == entry["chosen"] and again["trials"] == entry["trials"]
    assert driver.main(argv + ["--report"]) == 0
    reported = json.loads(output.read_text())
    assert reported["models"]["rnn_spn"]["chosen"] == entry["chosen"]
    # The file records the command that trains, not the report's.
    assert reported["command"] == result["command"]

    # The runs folder lost (a new machine): the result file alone continues
    # the search, its trials as they were, saying where they came from.
    shutil.rmtree(tmp_path / "runs")
    for extra in ([], ["--report"]):
        assert driver.main(argv + extra) == 0
        said = capsys.readouterr().out
        assert "search: rnn_spn p0_d3: done, as the result file records it" in said
        again = json.loads(output.read_text())
        kept = again["models"]["rnn_spn"]
        assert kept["chosen"] == entry["chosen"]
        for before, now in zip(entry["trials"], kept["trials"], strict=True):
            origin = now.pop("from_result_file")
            assert now == before
            assert origin == {k: result[k] for k in ("date", "commit", "hardware")}
        assert again["data_source"] == result["data_source"]


def _search_file(path, **changes):
    trial = dict(name="code_p0.3_d2", dropout=0.3, dropout_placement="code",
                 downsample=2.0, epochs_done=3, best_valid_per_digit_error=0.02)  # fmt: skip
    stored = dict(
        settings=dict(dropout_ramp_epochs=5, dtype_policy="float32"),
        backend="tensorflow",
        epochs_per_trial=3,
        date="2026-01-02",
        commit="abc",
        hardware="a CPU",
        models=dict(rnn_spn=dict(trials=[trial, dict(trial, name="p0_d2",
                                                     epochs_done=2)])),
    )  # fmt: skip
    stored.update(changes)
    path.write_text(json.dumps(stored))
    return trial


def test_only_done_trials_of_the_same_search_count_without_run_directories(tmp_path):
    path = tmp_path / "search.json"
    settings = dict(dropout_ramp_epochs=5, dtype_policy="float32")
    grid = {k: v for k, v in _search_file(path).items() if k in search.GRID_FIELDS}
    recorded = search.RecordedTrials(path, settings, "tensorflow", 3)
    record = recorded.get("rnn_spn", grid)
    assert record["best_valid_per_digit_error"] == 0.02
    assert record["from_result_file"] == dict(
        date="2026-01-02", commit="abc", hardware="a CPU"
    )
    # Not done (2 of 3 epochs), another family, other settings of the trial,
    # or the precision check's policy: none.
    assert recorded.get("rnn_spn", dict(grid, name="p0_d2")) is None
    assert recorded.get("ffn_spn", grid) is None
    assert recorded.get("rnn_spn", dict(grid, dropout=0.4)) is None
    assert recorded.get("rnn_spn", grid, "float32") is None
    # A file of another search: other settings, backend or trial length.
    for args in (
        (dict(settings, dtype_policy="mixed_bfloat16"), "tensorflow", 3),
        (settings, "jax", 3),
        (settings, "tensorflow", 5),
    ):
        assert search.RecordedTrials(path, *args).get("rnn_spn", grid) is None
    # No file, or not a result file: none.
    assert (
        search.RecordedTrials(tmp_path / "none.json", settings, "jax", 3).records == {}
    )
    path.write_text("[1, 2")
    assert search.RecordedTrials(path, settings, "tensorflow", 3).records == {}


def _best_epoch_error(run_dir):
    return min(1.0 - r["val_digit_accuracy"] for r in read_log(str(run_dir)))


@pytest.mark.slow
def test_the_precision_check_reruns_the_two_best_under_float32(tmp_path, monkeypatch):
    monkeypatch.setattr(rnn_spn.RNNSPNExperiment, "evaluate", _forbidden)
    output = tmp_path / "search.json"
    runs = tmp_path / "runs"
    argv = [
        "rnn_spn/dropout_search_cpu",
        "--smoke", "--epochs", "1", "--rates", "0,0.3,0.5", "--placements", "code",
        "--runs-dir", str(runs), "--output", str(output),
        "--cache-dir", str(tmp_path / "cache"),
    ]  # fmt: skip
    assert driver.main(argv) == 0
    result = json.loads(output.read_text())
    assert result["settings"]["dtype_policy"] == "mixed_bfloat16"
    assert "float32" in result["dtype_check_rule"]
    entry = result["models"]["rnn_spn"]
    check = entry["dtype_check"]
    assert check["dtype_policy"] == "float32" and check["complete"]

    # The two best of the search, by the rule, from what the runs committed.
    names = ["p0_d2", "code_p0.3_d2", "code_p0.5_d2"]
    rates = [0.0, 0.3, 0.5]
    searched = {n: _best_epoch_error(runs / "rnn_spn" / n) for n in names}
    order = sorted(range(3), key=lambda i: (round(searched[names[i]], 6), rates[i]))
    two = sorted(order[:2])
    assert [t["name"] for t in check["trials"]] == [names[i] for i in two]
    assert entry["chosen"]["trial"] == names[order[0]]
    # Trained again under float32, the same settings otherwise.
    checked = {}
    for i in two:
        run_dir = runs / "rnn_spn_float32" / names[i]
        stored = json.loads((run_dir / "config.json").read_text())
        assert stored["dtype_policy"] == "float32" and stored["dropout"] == rates[i]
        assert not (run_dir / "metrics.json").exists()
        checked[names[i]] = (round(_best_epoch_error(run_dir), 6), rates[i])
    picks = min(checked, key=checked.__getitem__)
    assert check["picks"] == picks
    assert check["agrees"] == (picks == entry["chosen"]["trial"])

    # A rerun and a report train nothing and record the same check, also
    # without the runs folder (the result file alone).
    monkeypatch.setattr(rnn_spn, "train_and_evaluate", _forbidden)
    for extra in ([], ["--report"], "lost"):
        if extra == "lost":
            shutil.rmtree(runs)
            extra = []
        assert driver.main(argv + extra) == 0
        again = json.loads(output.read_text())["models"]["rnn_spn"]
        for record in again["dtype_check"]["trials"]:
            assert record.pop("from_result_file", None) in (None, {
                k: result[k] for k in ("date", "commit", "hardware")
            })  # fmt: skip
        assert again["dtype_check"] == check


def _forbidden(*args, **kwargs):
    raise AssertionError("called where nothing may train or read the test set")


def test_the_search_progress_line(capsys):
    progress = search.SearchProgress(4)
    record = dict(epochs_done=20, train_seconds=600.0)
    progress.trial_done(record, 20)
    progress.trial_done(dict(record, train_seconds=1200.0), 20)
    # A trial cut short (fewer epochs) does not count in the mean.
    progress.trial_done(dict(record, epochs_done=3, train_seconds=90.0), 20)
    progress.trial_done(record, 20)
    assert capsys.readouterr().out.splitlines() == [
        "search: 1 of 4 trials done; about 30m00s to go (10m00s per trial)",
        "search: 2 of 4 trials done; about 30m00s to go (15m00s per trial)",
        "search: 3 of 4 trials done; about 15m00s to go (15m00s per trial)",
        "search: 4 of 4 trials done",
    ]
    # With its epochs' times: the median epoch times a trial's epochs, so
    # that one paused epoch moves it little.
    progress = search.SearchProgress(3)
    epochs = [30.0] * 9 + [3000.0]  # the last paused for 50 minutes
    timed = dict(epochs_done=10, train_seconds=sum(epochs), epoch_seconds=epochs)
    progress.trial_done(timed, 10)
    progress.trial_done(dict(timed, epoch_seconds=[40.0] * 10), 10)
    assert capsys.readouterr().out.splitlines() == [
        "search: 1 of 3 trials done; about 10m00s to go (5m00s per trial)",
        "search: 2 of 3 trials done; about 6m40s to go (6m40s per trial)",
    ]


def test_the_recorded_data_source_names_no_local_folder():
    source = dict(
        name="mnist", origin="idx", path="/data/mine/mnist", n_train=60000,
        n_test=10000, pools=dict(train=50000, valid=10000, test=10000),
        description="MNIST from the official IDX files in /data/mine/mnist: 60,000 "
        "train / 10,000 test digits",
    )  # fmt: skip
    portable = search.portable_source(source)
    assert portable["path"] == "MNIST_DIR"
    assert portable["description"].startswith(
        "MNIST from the official IDX files in MNIST_DIR:"
    )
    assert portable["pools"] == source["pools"] and portable["n_train"] == 60000
    assert search.portable_source(dict(source, origin="bundled"))["path"] == "DIR"
    assert search.portable_source(None) is None
