"""The inpainter's search study (``inpaint/tune_svhn1083``): its progress
report read from trial run directories written here by hand, the
comparison with the defaults, the refusals, and the rendered tables."""

import importlib
import json
import os
import sys

import numpy as np
import pytest

from cram_keras.studies import driver, inpaint_tune

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "tools"))

HEADER = "epoch,recon_loss,train_seconds,val_hole_l1,val_hole_psnr,val_ssim\n"


def _study(*args):
    """`run_study.py inpaint/tune_svhn1083 ARGS`: its exit code."""
    return driver.main(["inpaint/tune_svhn1083", *args])


def _study_progress(runs, out, figure=""):
    """The study's `--progress` over the run directories in `runs`, written
    to `out`, its trials figure to `figure` ('': none): its exit code."""
    return _study(
        "--progress", "--runs-dir", str(runs), "--output", str(out),
        "--figure", f"trials={figure}",
    )  # fmt: skip


def _trial(directory, glimpses, rate, window, seconds, score=None):
    """A trial's run directory: its config, one log row per entry of
    ``seconds``, and metrics.json once ``score`` is given."""
    os.makedirs(directory)
    config = dict(glimpses=glimpses, learning_rate=rate, min_scale=window, epochs=10)
    with open(os.path.join(directory, "config.json"), "w") as f:
        json.dump(config, f)
    with open(os.path.join(directory, "log.csv"), "w") as f:
        f.write(HEADER)
        for epoch, s in enumerate(seconds):
            f.write(f"{epoch},0.1,{s},0.1,20.0,0.9\n")
    if score is not None:
        metrics = dict(epochs=len(seconds), wall_seconds=sum(seconds) + 7.0)
        metrics["valid_hole_psnr"] = score
        with open(os.path.join(directory, "metrics.json"), "w") as f:
            json.dump(metrics, f)


def _progress(tmp_path, capsys):
    runs = tmp_path / "runs"
    trials = runs / "search_seed0" / "trials"
    _trial(trials / "00", 8, 9e-5, 0.39, [30.0, 25.0], score=19.5)
    _trial(trials / "01", 2, 2e-4, 0.27, [12.0, 11.0], score=20.25)
    _trial(trials / "02", 5, 4e-5, 0.44, [20.0])
    out, figure = tmp_path / "tune.json", tmp_path / "trials.png"
    code = _study_progress(runs, out, figure)
    assert code == 0, capsys.readouterr().err
    assert figure.stat().st_size > 0  # drawn from the two finished trials
    return json.loads(out.read_text())


def test_progress_reads_each_trial_from_its_run_directory(tmp_path, capsys):
    results = _progress(tmp_path, capsys)
    assert results["configuration"] == "inpaint/tune_svhn1083"
    assert results["status"] == "2 of 16 trials finished"
    rows = {t["trial_id"]: t for t in results["trials"]}
    assert list(rows) == ["00", "01", "02"]
    assert rows["01"]["status"] == "COMPLETED"
    assert (rows["01"]["glimpses"], rows["01"]["min_scale"]) == (2, 0.27)
    assert rows["01"]["valid_hole_psnr"] == 20.25
    # A finished trial's time is its run's (metrics.json), one in progress
    # the sum of its epochs so far.
    assert rows["01"]["seconds"] == pytest.approx(30.0)
    assert rows["02"]["status"] == "RUNNING"
    assert rows["02"]["valid_hole_psnr"] is None
    assert (rows["02"]["epochs"], rows["02"]["seconds"]) == (1, 20.0)
    assert "summary" not in results and results["runs"] == {}
    printed = capsys.readouterr().out
    assert "| 01 | 2 | 2.00e-04 | 0.270 | 20.25 | 2 |" in printed


def test_the_chosen_setting_is_compared_with_the_defaults_on_test(tmp_path):
    base = _base_config(tmp_path)
    search = dict(
        wall_seconds=100.0,
        values=dict(glimpses=2, learning_rate=2e-4, min_scale=0.27),
        scores=dict(hole_psnr=21.5, hole_l1=0.07, ssim=0.93),
        trials=[{"trial_id": "00"}],
        valid_hole_psnr=20.25,
    )
    default = dict(
        wall_seconds=50.0,
        values=dict(glimpses=4, learning_rate=1e-4, min_scale=0.375),
        scores=dict(hole_psnr=20.75, hole_l1=0.08, ssim=0.92),
        valid_hole_psnr=19.0,
    )
    results = inpaint_tune.results_of({"search": search, "default": default}, base)
    assert results["summary"]["chosen_minus_default_db"] == pytest.approx(0.75)
    assert results["summary"]["chosen_minus_default_held_out_db"] == 1.25
    assert results["summary"]["chosen"]["glimpses"] == 2
    assert results["wall_seconds"] == 150.0
    assert results["searched"]["glimpses"] == [1, 8]
    assert results["trials"] == [{"trial_id": "00"}]
    # Only the search has run: no comparison yet.
    assert "summary" not in inpaint_tune.results_of({"search": search}, base)


def test_the_study_needs_both_variants_in_order(tmp_path, capsys):
    code = _study(
        "--variants",
        "default",
        "--runs-dir",
        str(tmp_path),
        "--output",
        str(tmp_path / "t.json"),
    )
    assert code == 2
    assert "compares the variants search, default" in capsys.readouterr().err
    code = _study(
        "--progress", "--runs-dir", str(tmp_path), "--output", str(tmp_path / "t.json")
    )
    assert code == 2
    assert "no trial of inpaint/tune_svhn1083 has started" in capsys.readouterr().err
    assert not (tmp_path / "t.json").exists()


def test_the_results_page_marks_the_best_trial_and_the_comparison(
    tmp_path, capsys, monkeypatch
):
    results = _progress(tmp_path, capsys)
    sources = importlib.import_module("render.sources")
    inpainting = importlib.import_module("render.inpainting")
    folder = tmp_path / "benchmarks" / "results"
    folder.mkdir(parents=True)
    monkeypatch.setattr(sources, "RESULTS", folder)
    assert inpainting.inpaint_tune("docs") == "Not run yet."
    (folder / inpainting.TUNE).write_text(json.dumps(results))
    text = inpainting.inpaint_tune("docs")
    assert "| 01 | 2 | 2.0e-04 | 0.270 | **20.25** | 2 |" in text
    assert "| 00 | 8 | 9.0e-05 | 0.390 | 19.50 | 2 |" in text
    assert "| 02 (running) | 5 |" in text
    assert "In progress: 2 of 16 trials finished." in text
    assert "Chosen minus defaults" not in text
    # Both variants finished: the test-set comparison follows the trials.
    results.pop("status")
    results["runs"] = {
        "search": dict(
            values=dict(glimpses=2, learning_rate=2e-4, min_scale=0.27),
            scores=dict(hole_psnr=21.5, hole_l1=0.07, ssim=0.93),
            pathway_diagnostics=dict(hole_psnr_glimpses_zeroed=12.0),
            valid_hole_psnr=20.25,
        ),
        "default": dict(
            values=dict(glimpses=4, learning_rate=1e-4, min_scale=0.375),
            scores=dict(hole_psnr=20.75, hole_l1=0.08, ssim=0.92),
            pathway_diagnostics=dict(hole_psnr_glimpses_zeroed=11.0),
            valid_hole_psnr=19.0,
        ),
    }
    results["summary"] = dict(
        chosen_minus_default_db=0.75, chosen_minus_default_held_out_db=1.25
    )
    (folder / inpainting.TUNE).write_text(json.dumps(results))
    text = inpainting.inpaint_tune("docs")
    assert "| chosen by the search | 2 | 2.0e-04 | 0.270 | 20.25 | 21.50 |" in text
    assert "| defaults | 4 | 1.0e-04 | 0.375 | 19.00 | 20.75 |" in text
    assert (
        "Chosen minus defaults: +0.75 dB on the test images, +1.25 dB on the "
        "held-out images." in text
    )
    assert "In progress" not in text


def _base_config(tmp_path):
    """The study's base Config, as the driver resolves it."""
    named, protocol = driver.load_study("inpaint/tune_svhn1083")
    argv = ["inpaint/tune_svhn1083", "--runs-dir", str(tmp_path)]
    args = driver.build_parser(named, protocol).parse_args(argv)
    return driver.Study(named, args, argv).config()


def test_the_defaults_are_scored_on_the_searchs_held_out_images(tmp_path):
    """`held_out_score`: a saved model's mean hole PSNR on the last 10 % of
    the training images the search loads, with the evaluation holes,
    recomputed here in NumPy from the model's own completions."""
    import keras

    from cram_keras.data.inpainting import load_images
    from cram_keras.experiments import inpaint
    from cram_keras.models.inpainting.sizes import build_inpainter

    config = inpaint.smoke_config(n_train=40)
    x_train, _ = load_images(config, bundled=True)
    assert len(x_train) == 40
    model = build_inpainter(config, x_train.shape[1:], warmup_steps=0)
    (tmp_path / "run").mkdir()
    model.save(tmp_path / "run" / "model.keras")
    score = inpaint_tune.held_out_score(config, str(tmp_path / "run"), smoke=True)

    valid = x_train[36:]  # round(0.1 * 40) = 4 held out: the last four
    masks = np.zeros((4, 32, 32, 1), np.float32)
    masks[:, 12:20, 12:20] = 1.0  # the centred 8x8 hole
    completed = keras.ops.convert_to_numpy(model([valid, masks], training=False))
    hole = masks[..., 0] > 0
    mse = [
        ((c - v)[h] ** 2).mean() for c, v, h in zip(completed, valid, hole, strict=True)
    ]
    expected = np.mean(10 * np.log10(1.0 / np.array(mse)))
    assert score == pytest.approx(expected, abs=1e-4)


def test_a_setting_that_turns_the_search_off_is_refused(tmp_path, capsys):
    code = _study(
        "--set",
        "tune=false",
        "--runs-dir",
        str(tmp_path),
        "--output",
        str(tmp_path / "t.json"),
    )
    assert code == 2
    err = capsys.readouterr().err
    assert "needs tune on for the variant search" in err and "'search': False" in err
    assert not (tmp_path / "t.json").exists() and not any(tmp_path.iterdir())


def test_progress_of_a_finished_study_gives_its_comparison(
    tmp_path, capsys, monkeypatch
):
    """Once both runs have finished, --progress writes what the study wrote:
    the search's own trials table, both held-out scores and the comparison
    (the held-out scoring of saved models is stubbed here: the test above
    checks it)."""
    runs = tmp_path / "runs"
    _trial(runs / "search_seed0" / "trials" / "00", 4, 3e-4, 0.33, [5.0], 21.0)
    scores = {"hole_psnr": 21.5, "hole_l1": 0.07, "ssim": 0.93}
    search = dict(
        methods={"cram": scores}, epochs=10, n_train=795, n_test=200,
        train_wall_seconds=50.0, wall_seconds=60.0, glimpses=4,
        learning_rate=3e-4, min_scale=0.33, best_trial="00",
        best_trial_directory="trials/00", valid_hole_psnr=21.0,
    )  # fmt: skip
    (runs / "search_seed0" / "metrics.json").write_text(json.dumps(search))
    table = [
        dict(trial_id="00", status="COMPLETED", glimpses=4, learning_rate=3e-4,
             min_scale=0.33, valid_hole_psnr=21.0, epochs=10, seconds=50.0)
    ]  # fmt: skip
    (runs / "search_seed0" / "trials.json").write_text(json.dumps({"trials": table}))
    (runs / "default_seed0").mkdir()
    default = dict(search, methods={"cram": dict(scores, hole_psnr=20.25)})
    for key in ("glimpses", "learning_rate", "min_scale", "best_trial"):
        default.pop(key)
    (runs / "default_seed0" / "metrics.json").write_text(json.dumps(default))
    held_out = {"trials/00": 21.0, "default_seed0": 19.5}
    monkeypatch.setattr(
        inpaint_tune,
        "held_out_score",
        lambda config, run_dir, smoke=False: next(
            v for k, v in held_out.items() if str(run_dir).endswith(k)
        ),
    )
    out = tmp_path / "tune.json"

    code = _study_progress(runs, out)
    assert code == 0, capsys.readouterr().err
    results = json.loads(out.read_text())
    assert "status" not in results and results["trials"] == table
    assert results["runs"]["default"]["values"]["glimpses"] == 4  # the default's
    assert results["runs"]["default"]["valid_hole_psnr"] == 19.5
    assert results["summary"]["chosen_minus_default_db"] == pytest.approx(1.25)
    assert results["summary"]["chosen_minus_default_held_out_db"] == 1.5
    # A winner whose saved model scores otherwise than its run recorded.
    held_out["trials/00"] = 20.0
    code = _study_progress(runs, out)
    assert code == 2
    assert "is not the model its run scored" in capsys.readouterr().err
