"""The study driver (run_study.py, cram_keras/studies/driver.py), with the
training replaced by stand-ins: each variant runs once per seed in its own
run directory, every Config is checked before the first run trains, the
result file records the configuration, the resolved settings, the variants
and seeds, the commit and the command; a second driver writing the same
result file is refused before anything trains; usage errors say what to
run instead."""

import datetime
import json
import os
import subprocess
import sys
import textwrap

import pytest

from cram_keras.data.errors import DatasetError
from cram_keras.experiments import (
    cli,
    cram_cls,
    inpaint,
    inpaint_config,
    named,
    rnn_spn,
)
from cram_keras.experiments.errors import UsageError
from cram_keras.studies import driver
from cram_keras.training.callbacks import TrainingDiverged

RNN_SPN_METRICS = dict(
    test_per_digit_error=0.5, test_sequence_error=0.9, valid_per_digit_error=0.4,
    epochs=2, best_epoch=2, wall_seconds=3.0, train_sequences_per_second=10.0,
    parameters=100,
)  # fmt: skip


@pytest.fixture
def trained(monkeypatch):
    runs = []

    def fake(config, run_dir, **kwargs):
        runs.append((config, run_dir))
        return dict(RNN_SPN_METRICS)

    monkeypatch.setattr(rnn_spn, "train_and_evaluate", fake)
    return runs


def test_a_study_runs_each_variant_and_records_its_configuration(tmp_path, trained):
    output = tmp_path / "out.json"
    argv = ["rnn_spn/budget", "--runs-dir", str(tmp_path / "runs")]
    argv += ["--output", str(output), "--data-dir", str(tmp_path / "mnist")]
    assert driver.main(argv + ["--set", "batch_size=50"]) == 0
    assert [os.path.basename(d) for _, d in trained] == [
        "rnn_spn_seed0",
        "ffn_spn_seed0",
        "conv_seed0",
    ]
    assert [c.model for c, _ in trained] == ["rnn_spn", "ffn_spn", "conv"]
    assert {(c.epochs, c.n_train, c.batch_size) for c, _ in trained} == {(2, 20000, 50)}
    assert all(c.data_dir == str(tmp_path / "mnist") for c, _ in trained)
    result = json.loads(output.read_text())
    assert result["models"]["conv"]["paper_per_digit_error"] == 0.029
    assert result["configuration"] == "rnn_spn/budget"
    expected = named.recorded_settings(trained[0][0], ("seed",))
    expected["model"] = "rnn_spn"  # the base: each variant sets its model
    assert result["settings"] == expected and result["settings"]["batch_size"] == 50
    assert "data_dir" not in result["settings"]
    assert result["variants"]["ffn_spn"] == {"model": "ffn_spn"}
    assert result["seeds"] == [0] and len(result["commit"]) == 40
    today = datetime.datetime.now(datetime.timezone.utc).date()
    assert result["date"] in {str(today), str(today - datetime.timedelta(days=1))}
    # The machine's folders are placeholders in the recorded command.
    assert result["command"] == (
        "python run_study.py rnn_spn/budget --runs-dir DIR --output FILE "
        "--data-dir DIR --set batch_size=50"
    )
    # --variants: a subset, in its order.
    trained.clear()
    assert driver.main(argv + ["--variants", "conv,rnn_spn"]) == 0
    assert [c.model for c, _ in trained] == ["conv", "rnn_spn"]


def test_every_run_is_checked_before_the_first_trains(tmp_path, trained, capsys):
    argv = [
        "rnn_spn/init",
        "--runs-dir",
        str(tmp_path),
        "--output",
        str(tmp_path / "o"),
    ]
    assert driver.main(argv + ["--set", "downsample=0.5"]) == 2
    assert "downsample" in capsys.readouterr().err and trained == []
    assert not (tmp_path / "o").exists()


def test_a_second_driver_on_the_same_result_file_is_refused(tmp_path, trained, capsys):
    output = tmp_path / "out.json"
    holder = textwrap.dedent(
        f"""
        import sys, time
        from cram_keras.training import run_lock
        with run_lock.hold({str(tmp_path)!r}, name=".out.json.lock"):
            print("held", flush=True)
            time.sleep(60)
        """
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", holder], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout.readline().strip() == "held"
        argv = ["rnn_spn/budget", "--runs-dir", str(tmp_path / "runs")]
        assert driver.main(argv + ["--output", str(output)]) == 2
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "out.json" in err
    assert trained == [] and not output.exists()


def test_usage_errors_name_what_to_run(capsys):
    assert driver.main(["rnn_spn/bf16_check"]) == 2
    assert "python train_rnn_spn.py --config bf16_check" in capsys.readouterr().err
    assert driver.main(["rnn_spn/table1:rnn_spn"]) == 2
    assert "--variants rnn_spn" in capsys.readouterr().err
    assert driver.main(["inpaint/nope"]) == 2
    err = capsys.readouterr().err
    assert "no configuration 'inpaint/nope'" in err and "inpaint/budget_mnist32" in err
    with pytest.raises(SystemExit):
        driver.main(["rnn_spn/budget", "--no-such-flag"])


def _cls_metrics(config, seed):
    return dict(
        test_error=0.1 + seed, valid_error=0.2, epochs=config.epochs,
        wall_seconds=5.0, valid_error_per_epoch=[0.3, 0.2], best_epoch=2,
        train_error_per_epoch=[0.4, 0.3], glimpse_in_digit_box=0.5,
        glimpse_scale=0.4, beta=1.0, parameters=10, train_samples_per_second=2.0,
        saliency_test_iou=0.7, saliency_valid_iou=0.6, saliency_seconds=1.0,
    )  # fmt: skip


def _fake_cls_run(config, run_dir):
    """A classification run's metrics and glimpse figures, without training."""
    os.makedirs(run_dir, exist_ok=True)
    for ext in ("png", "gif"):
        (open(os.path.join(run_dir, f"glimpses.{ext}"), "w")).close()
    return _cls_metrics(config, config.seed)


def test_the_classification_study_writes_its_figures(tmp_path, monkeypatch):
    monkeypatch.setattr(cram_cls, "train_and_evaluate", _fake_cls_run)
    output = tmp_path / "cls.json"
    argv = ["cram_cls/budget", "--runs-dir", str(tmp_path / "runs"), "--output"]
    argv += [str(output), "--figure", f"curves={tmp_path / 'curves.png'}"]
    argv += ["--figure", f"glimpses={tmp_path / 'glimpses'}"]
    assert driver.main(argv) == 0
    result = json.loads(output.read_text())
    assert result["runs"]["none"]["test_error_per_seed"] == [0.1, 1.1]
    assert result["protocol"]["seeds"] == [0, 1] and result["total_wall_seconds"] == 30
    assert result["saliency_test_iou"] == pytest.approx(0.7)
    assert (tmp_path / "curves.png").stat().st_size > 0
    assert (tmp_path / "glimpses.gif").exists()


def test_the_inpainting_study_scores_the_classical_fills_once(tmp_path, monkeypatch):
    def fake(config, run_dir):
        scores = dict(hole_psnr=10.0 + config.seed, hole_l1=0.1)
        classical = dict(hole_psnr=9.0, hole_l1=0.2)
        run = {k: 1 for k in ("epochs", "steps", "warmup_steps", "parameters")}
        run.update(n_train=40, n_test=20, train_images_per_second=1.0,
                   train_wall_seconds=2.0, wall_seconds=3.0)  # fmt: skip
        methods = {inpaint_config.METHOD_NAMES[config.encoder]: scores}
        methods.update(telea=classical, navier_stokes=classical, mean_fill=classical)
        return dict(run, methods=methods)

    monkeypatch.setattr(inpaint, "train_and_evaluate", fake)
    output = tmp_path / "inpaint.json"
    argv = ["inpaint/budget_mnist32", "--runs-dir", str(tmp_path / "runs")]
    argv += ["--output", str(output), "--figure", "inpainting="]
    assert driver.main(argv) == 0
    result = json.loads(output.read_text())
    assert result["methods"]["cram"]["hole_psnr"] == 10.0
    assert result["summary"]["cram_minus_cnn_encoder_db"] == 0.0
    assert result["runs"]["cram_skip"]["0"]["scores"]["hole_psnr"] == 10.0
    assert result["config"]["n_train"] == 8000 and "encoder" not in result["config"]
    assert "data_dir" not in result["config"]


def test_the_recorded_command_names_no_folder_of_the_machine():
    argv = [
        "inpaint/full_mnist32", "--progress", "--data-dir", "/data/mnist",
        "--runs-dir=/scratch/runs", "--output", "/tmp/p.json",
        "--cache-dir=cache", "--figure", "gap=/tmp/g.png", "--runs-dir", "runs/x",
    ]  # fmt: skip
    assert driver.portable(argv) == [
        "inpaint/full_mnist32", "--progress", "--data-dir", "DIR",
        "--runs-dir=DIR", "--output", "FILE", "--cache-dir=DIR",
        "--figure", "gap=FILE", "--runs-dir", "runs/x",
    ]  # fmt: skip


def test_a_path_under_the_folder_it_ran_in_is_recorded_as_typed_there(
    tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    inside = str(tmp_path / "benchmarks" / "results" / "speed.json")
    argv = ["--output", inside, "--runs-dir", str(tmp_path / "runs"),
            "--note", "idle, nothing else running"]  # fmt: skip
    assert driver.portable(argv) == [
        "--output", "benchmarks/results/speed.json", "--runs-dir", "runs",
        "--note", "idle, nothing else running",
    ]  # fmt: skip
    # A benchmark's recorded command: quoted as a shell would take it.
    assert driver.command_line("benchmarks/sampler.py", argv) == (
        "python benchmarks/sampler.py --output benchmarks/results/speed.json "
        "--runs-dir runs --note 'idle, nothing else running'"
    )
    outside = str(tmp_path.parent / "elsewhere.json")
    assert driver.portable(["--output", outside]) == ["--output", "FILE"]


# === What a study refuses or cannot read: one paragraph, the scripts' codes ===


@pytest.mark.parametrize(
    "error, code",
    [
        (UsageError("a run directory of another config"), 2),
        (DatasetError("the MNIST files are missing"), 1),
        (TrainingDiverged("the loss is NaN"), 1),
    ],
)
def test_an_error_of_a_run_is_one_paragraph_with_the_scripts_exit_code(
    tmp_path, monkeypatch, capsys, error, code
):
    def fails(config, run_dir, **kwargs):
        raise error

    monkeypatch.setattr(rnn_spn, "train_and_evaluate", fails)
    argv = ["rnn_spn/budget", "--runs-dir", str(tmp_path / "runs")]
    argv += ["--output", str(tmp_path / "out.json")]
    assert driver.main(argv) == code
    err = capsys.readouterr().err
    assert err == f"error: {error}\n"
    # --debug shows the traceback; an error of no such kind (a bug) too.
    with pytest.raises(type(error)):
        driver.main(argv + ["--debug"])
    monkeypatch.setattr(rnn_spn, "train_and_evaluate", lambda *a, **k: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        driver.main(argv)


def test_an_error_raised_by_an_interrupt_stops_the_study_as_the_interrupt(
    tmp_path, monkeypatch, capsys
):
    """A SIGTERM that makes one of TensorFlow's context managers raise on
    its way out (here a stand-in for it) stops the study with 143 and the
    line that says how to continue."""

    class Scope:
        def __enter__(self):
            return self

        def __exit__(self, *exc_info):
            raise RuntimeError("Exiting device scope without proper scope nesting")

    def interrupted(config, run_dir, **kwargs):
        with Scope():
            raise cli.Terminated()

    monkeypatch.setattr(rnn_spn, "train_and_evaluate", interrupted)
    argv = ["rnn_spn/budget", "--runs-dir", str(tmp_path / "runs")]
    assert driver.main(argv + ["--output", str(tmp_path / "out.json")]) == 143
    err = capsys.readouterr().err
    assert "interrupted: completed epochs are saved" in err
    assert "Traceback" not in err and "scope nesting" not in err


def test_a_run_directory_of_another_config_is_refused_in_the_studys_terms(
    tmp_path, capsys
):
    """The runner's refusal, from the driver: the study's --runs-dir, and
    not the scripts' --output-dir or --overwrite, which it does not have."""
    runs = tmp_path / "runs"
    (runs / "rnn_spn_seed0" / "checkpoints").mkdir(parents=True)
    (runs / "rnn_spn_seed0" / "config.json").write_text(json.dumps({"epochs": 1}))
    (runs / "rnn_spn_seed0" / "metrics.json").write_text("{}")
    argv = ["rnn_spn/budget", "--runs-dir", str(runs)]
    assert driver.main(argv + ["--output", str(tmp_path / "out.json")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {runs / 'rnn_spn_seed0'} holds a finished run")
    assert "choose another --runs-dir, or delete that directory" in err
    assert "--output-dir" not in err and "--overwrite" not in err
    assert not (tmp_path / "out.json").exists()


def test_unusable_runs_folders_and_result_files_are_refused_before_training(
    tmp_path, trained, capsys
):
    a_file = tmp_path / "a_file"
    a_file.write_text("")
    good = ["--runs-dir", str(tmp_path / "runs"), "--output", str(tmp_path / "o.json")]
    cases = [
        (
            ["--runs-dir", str(a_file / "runs"), "--output", str(tmp_path / "o.json")],
            f"--runs-dir must be a directory, but {str(a_file)!r} is a regular file",
        ),
        (
            ["--runs-dir", str(tmp_path / "runs"), "--output", str(tmp_path)],
            f"--output names the result file, but {str(tmp_path)!r} is a folder",
        ),
        (
            ["--runs-dir", str(tmp_path / "runs"), "--output", str(a_file / "o.json")],
            f"{str(a_file)!r} is a regular file, not a folder",
        ),
    ]
    for flags, expected in cases:
        assert driver.main(["rnn_spn/budget", *flags]) == 2, flags
        err = capsys.readouterr().err
        assert err.startswith("error: ") and expected in err, err
        assert "Traceback" not in err
    assert trained == [] and not (tmp_path / "o.json").exists()
    assert driver.main(["rnn_spn/budget", *good]) == 0
    assert len(trained) == 3


def test_a_smoke_study_writes_beside_its_runs_not_over_the_real_results(
    tmp_path, monkeypatch
):
    """--smoke without --runs-dir, --output or --figure: the runs, the
    result file and the figures in runs/studies/NAME_smoke; nothing where
    the configuration's real results and figures are."""

    monkeypatch.setattr(cram_cls, "train_and_evaluate", _fake_cls_run)
    monkeypatch.chdir(tmp_path)
    assert driver.main(["cram_cls/budget", "--smoke"]) == 0
    smoke = tmp_path / "runs" / "studies" / "cram_cls" / "budget_smoke"
    assert sorted(p.name for p in smoke.iterdir()) == [
        "cram_cls_budget.json",
        "cram_cls_curves.png",
        "cram_cls_glimpses.gif",
        "cram_cls_glimpses.png",
        "none_seed0",
        "none_seed1",
        "oracle_seed0",
        "oracle_seed1",
        "saliency_seed0",
        "saliency_seed1",
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["runs"]
    # A figure given by the configuration per row, too.
    table1, _ = named.load("rnn_spn/table1")
    args = driver.build_parser(table1).parse_args(["rnn_spn/table1", "--smoke"])
    study = driver.Study(table1, args, ["rnn_spn/table1", "--smoke"])
    assert study.figure("attention") == {
        "rnn_spn": os.path.join(
            "runs", "studies", "rnn_spn", "table1_smoke", "rnn_spn_attention.png"
        )
    }
    args = driver.build_parser(table1).parse_args(["rnn_spn/table1"])
    study = driver.Study(table1, args, ["rnn_spn/table1"])
    assert study.figure("attention") == {"rnn_spn": "assets/rnn_spn_attention.png"}
    assert study.output == "benchmarks/results/rnn_spn_paper.json"
