"""Named configurations (configs/<experiment>/<name>.py): every one
resolves to its experiment's Config, in every variant and seed, and has its
header; every result file that names a configuration names one that
exists, with the settings, variants and seeds that configuration resolves
to; the training scripts' --config."""

import json
import pathlib
import shlex

import pytest

from cram_keras.experiments import cli, named, rnn_spn
from cram_keras.experiments.config import parse_assignments
from cram_keras.experiments.errors import UsageError

REPO = pathlib.Path(__file__).resolve().parents[2]
RESULTS = sorted((REPO / "benchmarks" / "results").glob("*.json"))
NAMES = named.names()
# The configurations whose rows train the setting a search chose.
CHOSEN = [n for n in NAMES if "CHOSEN_BY" in named.load(n)[0].extra]


def test_the_configurations_are_found():
    assert "rnn_spn/table1" in NAMES and "cram_cls/budget" in NAMES
    assert {n.split("/")[0] for n in NAMES} == set(named.EXPERIMENTS)


@pytest.mark.parametrize("name", NAMES)
def test_a_configuration_resolves_and_has_its_header(name):
    config, _ = named.load(name)
    for variant in list(config.variants) or [None]:
        for seed in list(config.seeds) or [None]:
            resolved = config.resolve(variant, seed)
            assert isinstance(resolved, config.module().Config)
    for field in named.HEADER_FIELDS:
        assert config.header.get(field), f"{name}: its header has no {field}:"
    assert name in config.header["Command"] or (
        f"--config {name.split('/')[1]}" in config.header["Command"]
    )
    assert named.read_header(name) == config.header
    if config.is_study:
        assert config.output, f"{name}: a study names its result file"


def check_settings(recorded, config, drop=()):
    """``recorded`` holds settings of ``config``'s experiment with the values
    ``config`` resolves to, every one that differs from the defaults among
    them (a setting added to the experiment later is at its default)."""
    resolved = named.recorded_settings(config, drop)
    defaults = named.recorded_settings(type(config)(), drop)
    assert set(recorded) <= set(resolved), sorted(set(recorded) - set(resolved))
    assert recorded == {k: resolved[k] for k in recorded}
    assert [
        k for k in resolved if resolved[k] != defaults[k] and k not in recorded
    ] == []


def check_result(path):
    """The configuration a result file names exists and resolves to the
    settings, variants and seeds the file records (also per row)."""
    result = json.loads(pathlib.Path(path).read_text())
    if "configuration" not in result:
        return None
    config, _ = named.load(result["configuration"])
    drop = ("seed",) if config.seeds else ()
    if config.is_study:
        assert result["variants"] == {v: config.variants[v] for v in result["variants"]}
        assert result["seeds"] == list(config.seeds)
    # The command's --set changes every run's settings (e.g. a search run in
    # float32 on a CPU without bfloat16 instructions).
    words = shlex.split(result.get("command", ""))
    sets = [words[i + 1] for i, word in enumerate(words[:-1]) if word == "--set"]
    changes = parse_assignments(config.module().Config, sets)
    check_settings(result["settings"], config.resolve(changes=changes), drop)
    assert len(result["commit"]) == 40
    for row in result.get("models", {}).values():
        if isinstance(row, dict) and "configuration" in row:
            # A row of another seed (the training script's --seed) is
            # checked with its own seed.
            row_config, variant = named.load(row["configuration"])
            seed = row.get("seed", config.seeds[0] if config.seeds else None)
            check_settings(row["settings"], row_config.resolve(variant, seed))
    return config.name


def check_chosen(config, results_dir):
    """Each row of ``config``'s ``CHOSEN_BY`` (``{variant: search result
    file}``) resolves to the dropout, its placement and the downsample
    factor that the search's selection rule chose for the row's model."""
    for variant, name in config.extra["CHOSEN_BY"].items():
        resolved = config.resolve(variant)
        search = json.loads((results_dir / name).read_text())
        chosen = search["models"][resolved.model]["chosen"]
        assert chosen is not None, f"{name}: no setting chosen for {resolved.model}"
        assert resolved.dropout == chosen["dropout"], variant
        if chosen["dropout"]:  # no placement without dropout
            assert resolved.dropout_placement == chosen["dropout_placement"], variant
        assert resolved.downsample == chosen["downsample"], variant


@pytest.mark.parametrize("name", CHOSEN)
def test_a_row_trains_the_setting_its_search_chose(name):
    check_chosen(named.load(name)[0], REPO / "benchmarks" / "results")


def test_a_row_other_than_its_search_chose_fails(tmp_path):
    search = {"models": {"rnn_spn": {"chosen": None}}}
    (tmp_path / "search.json").write_text(json.dumps(search))
    folder = tmp_path / "rnn_spn"
    folder.mkdir()
    (folder / "tuned.py").write_text(
        '"""Tuned."""\nVARIANTS = {"rnn_spn": dict(model="rnn_spn", downsample=2.0, '
        'dropout=0.2, dropout_placement="paper")}\nCHOSEN_BY = {"rnn_spn": '
        '"search.json"}\n'
    )
    config, _ = named.load("rnn_spn/tuned", configs_dir=str(tmp_path))
    with pytest.raises(AssertionError, match="no setting chosen"):
        check_chosen(config, tmp_path)
    chosen = dict(dropout=0.2, dropout_placement="paper", downsample=2.0)
    for change, agrees in [
        ({}, True),
        ({"dropout": 0.3}, False),
        ({"dropout_placement": "code"}, False),
        ({"downsample": 3.0}, False),
    ]:
        search["models"]["rnn_spn"]["chosen"] = dict(chosen, **change)
        (tmp_path / "search.json").write_text(json.dumps(search))
        if agrees:
            check_chosen(config, tmp_path)
        else:
            with pytest.raises(AssertionError):
                check_chosen(config, tmp_path)


@pytest.mark.parametrize("path", RESULTS, ids=[p.name for p in RESULTS])
def test_a_result_file_names_an_existing_configuration(path):
    check_result(path)


def test_every_study_output_names_its_configuration():
    for name in NAMES:
        config, _ = named.load(name)
        if config.output and (REPO / config.output).exists():
            assert check_result(REPO / config.output) == name


def test_a_result_file_of_a_missing_configuration_fails(tmp_path):
    path = tmp_path / "result.json"
    path.write_text(json.dumps({"configuration": "rnn_spn/no_such_config"}))
    with pytest.raises(named.ConfigurationError, match="no configuration"):
        check_result(path)


def _resolve(argv, experiment=rnn_spn.EXPERIMENT):
    parser = cli.build_parser(experiment)
    return cli.resolve_config(experiment, parser.parse_args(argv))


def test_the_scripts_config_flag():
    # A study's variant, with flags and --set over it.
    config = _resolve(["--config", "table1:rnn_spn_d3", "--epochs", "7"])
    assert (config.model, config.downsample, config.epochs) == ("rnn_spn", 3.0, 7)
    config = _resolve(["--config", "rnn_spn/bf16_check", "--set", "n_train=300"])
    assert (config.epochs, config.n_train, config.n_valid) == (10, 300, 5000)
    # --smoke keeps what the configuration runs, not its sizes.
    config = _resolve(["--config", "init:keras", "--smoke"])
    assert (config.gru_initializer, config.n_train) == ("keras", 64)
    assert _resolve([]) == rnn_spn.Config()  # the paper setting
    for argv, message in [
        (["--config", "table1"], "is a study"),
        (["--config", "cram_cls/budget"], "configures cram_cls, not rnn_spn"),
        (["--config", "nope"], "no configuration 'rnn_spn/nope'"),
        (["--config", "table1:rnn_spn_d9"], "has no variant 'rnn_spn_d9'"),
    ]:
        with pytest.raises(UsageError, match=message):
            _resolve(argv)


def test_a_configuration_cannot_hold_a_data_folder(tmp_path):
    folder = tmp_path / "rnn_spn"
    folder.mkdir()
    (folder / "mine.py").write_text('"""Mine."""\nSETTINGS = dict(data_dir="x")\n')
    with pytest.raises(named.ConfigurationError, match="data_dir is not part"):
        named.load("rnn_spn/mine", configs_dir=str(tmp_path))
    assert named.names(str(tmp_path)) == ["rnn_spn/mine"]


def test_a_row_of_another_seed_is_checked_with_its_seed(tmp_path):
    result = json.loads((REPO / "benchmarks/results/rnn_spn_paper.json").read_text())
    row = dict(result["models"]["rnn_spn"])
    row["settings"] = dict(row["settings"], seed=1)
    result["models"] = {"rnn_spn_seed1": dict(row, seed=1)}
    path = tmp_path / "result.json"
    path.write_text(json.dumps(result))
    assert check_result(path) == "rnn_spn/table1"
    result["models"]["rnn_spn_seed1"]["seed"] = 2  # its settings say seed 1
    path.write_text(json.dumps(result))
    with pytest.raises(AssertionError):
        check_result(path)


def test_settings_changed_by_the_command_are_those_of_its_set(tmp_path):
    """A result file's settings may differ from its configuration's only as
    its command's --set says."""
    result = {
        "configuration": "rnn_spn/dropout_search_cpu",
        "variants": {},
        "seeds": [],
        "commit": "0" * 40,
        "command": "python run_study.py rnn_spn/dropout_search_cpu --set "
        "dtype_policy=float32 --data-dir DIR",
        "settings": named.recorded_settings(
            named.load("rnn_spn/dropout_search_cpu")[0].resolve(
                changes={"dtype_policy": "float32"}
            )
        ),
    }
    path = tmp_path / "result.json"
    path.write_text(json.dumps(result))
    assert check_result(path) == "rnn_spn/dropout_search_cpu"
    result["command"] = "python run_study.py rnn_spn/dropout_search_cpu"
    path.write_text(json.dumps(result))
    with pytest.raises(AssertionError):
        check_result(path)
