"""benchmarks/rnn_spn_gpu_fill.py, the driver that fills one time-limited
GPU call, and the sharded validation search it runs, checked without a GPU:

* the job list (search shards, Table rows with their settings) and the
  commands each job runs; bad settings refused in one line each;
* the throughput of a stage from committed epochs, the attribution of a
  search shard's trials, and the rule that adds stages;
* the staged start of small stand-in processes whose throughput saturates:
  the ramp stops adding when the aggregate stops growing, and the deadline
  stops every process (SIGTERM, then SIGKILL for one that ignores it);
* the pack: within the file count and sizes, weights by priority, identical
  files stored once, a trial without room left out; the round trip, and a
  smoke run that resumes from the unpacked directory;
* ``--shard K/N`` of the search: the shards partition the grid, and the
  report reads every trial found, also one brought back with its logs only.
"""

import csv
import hashlib
import importlib.util
import json
import os
import sys
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _load(name):
    path = os.path.join(ROOT, "benchmarks", f"{name}.py")
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


fill = _load("rnn_spn_gpu_fill")


def _settings(tmp_path, jobs=(), **overrides):
    values = dict(
        out=str(tmp_path / "out"),
        runs_dir=str(tmp_path / "runs"),
        data_dir=None,
        stop_after=0,
        started_at=time.time(),
        stages=[3, 6],
        stage_seconds=60.0,
        min_gain=0.1,
        jobs=fill.parse_jobs(list(jobs), 4) if jobs else [],
        job_words=list(jobs),
        search_args=[],
        search_epochs=fill.SEARCH_EPOCHS,
        resume_dir="",
        resume_bytes=40 * fill.MIB,
        max_files=8,
        max_file_bytes=16 * fill.MIB,
        max_total_bytes=64 * fill.MIB,
        report_reserve=4 * fill.MIB,
    )
    values.update(overrides)
    return fill.Settings(**values)


# === Jobs and settings ===


def test_job_list_and_commands(tmp_path):
    jobs = fill.parse_jobs(
        ["rnn_spn:3:dropout=0.3:dropout_placement=paper", "conv", "ffn_spn", "search"],
        4,
    )
    assert [job.name for job in jobs] == [
        "rnn_spn_d3",
        "conv",
        "ffn_spn",
        "search-0-of-4",
        "search-1-of-4",
        "search-2-of-4",
        "search-3-of-4",
    ]
    row = jobs[0]
    assert (row.kind, row.model, row.downsample) == ("table", "rnn_spn", 3.0)
    assert row.sets == ("dropout=0.3", "dropout_placement=paper")
    assert row.spec() == "rnn_spn:3:dropout=0.3:dropout_placement=paper"
    assert fill.parse_jobs(["search:1/3"], 9)[0].shard == (1, 3)
    assert [j.name for j in fill.parse_jobs([], 4)] == ["rnn_spn", "ffn_spn", "conv"]
    # The campaign's own naming of the rows and their run directories.
    from cram_keras.studies import table1

    for model, d in [("rnn_spn", 2.0), ("ffn_spn", 1.5), ("conv", 2.0)]:
        assert fill.row_key(model, d) == table1.row_key(model, d)

    settings = _settings(tmp_path, data_dir="mnist", search_args=["--epochs", "5"])
    words = fill.job_command(row, settings)
    assert words[1] == os.path.join(ROOT, "run_study.py")
    assert words[2] == "rnn_spn/table1"
    text = " ".join(words[3:])
    assert "--variants rnn_spn_d3 --schedule rnn_spn:300" in text
    assert "--set dropout=0.3 --set dropout_placement=paper" in text
    assert "--data-dir mnist" in text
    conv = " ".join(fill.job_command(jobs[1], settings))
    assert "--variants conv --schedule conv:300" in conv
    shard = fill.job_command(jobs[4], settings)
    assert shard[1:3] == [os.path.join(ROOT, "run_study.py"), "rnn_spn/dropout_search"]
    assert " ".join(shard[3:]).endswith("--shard 1/4 --epochs 5")
    assert "--runs-dir " + os.path.join(settings.runs_dir, "search") in " ".join(shard)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--stop-after", "9m"], "STOP_AFTER must be a whole number of seconds"),
        (["--stop-after", "-1"], "STOP_AFTER must be a whole number of seconds"),
        (["cnn"], "a job is search, search:K/N or MODEL[:D][:KEY=VALUE...]"),
        (["conv:3"], "the CNN has no downsample factor"),
        (["rnn_spn:0.5"], "D of MODEL:D must be a number of at least 1"),
        (["rnn_spn:3:dropout"], "each KEY=VALUE non-empty"),
        (["rnn_spn:2:downsample=3"], "downsample is not a KEY=VALUE of a job"),
        (["search:4/4"], "search:K/N takes whole numbers 0 <= K < N"),
        (["rnn_spn", "rnn_spn:2"], "a job appears twice"),
        (["search:0/2", "search:1/3"], "search shards must split the grid"),
        (["--stages", "3,3"], "STAGES must be increasing positive process counts"),
        (["--stage-seconds", "0"], "STAGE_SECONDS must be a positive number"),
        (["--search-args=--output x"], "SEARCH_ARGS cannot hold --output"),
        (["--search-args=--epochs 0"], "--epochs takes a positive whole number"),
        (["--resume-dir", "missing"], "RESUME_DIR missing is no folder"),
        (["ffn_spn:1.5"], "ffn_spn_d1.5 is not a row of rnn_spn/table1"),
        (["--config", "rnn_spn/nope"], "no configuration 'rnn_spn/nope'"),
        (["--resume-dir", "."], "holds no readable state.tar.gz"),
    ],
)
def test_bad_settings_are_refused_in_one_line(
    argv, message, tmp_path, capsys, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "out"
    code = fill.main(["--check-only", "--out", str(out), *argv])
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert not out.exists()
    assert fill.main(["--check-only", "--out", str(out), "--stop-after", "5"]) == 0


# === Throughput and the ramp rule ===


def test_throughput_spreads_each_epoch_over_its_interval():
    # Started at 0; epochs of 100 sequences committed at 10, 12, 14, 16.
    events = [(10.0, 100), (12.0, 100), (14.0, 100), (16.0, 100)]
    # [11, 15]: half of 10..12, all of 12..14, half of 14..16.
    assert fill.sequences_in(events, 0.0, 11.0, 15.0) == pytest.approx(200.0)
    # The first interval (start-up, compilation) counts at its slow rate.
    assert fill.sequences_in(events, 0.0, 5.0, 10.0) == pytest.approx(50.0)
    # An epoch still running at b counts nothing yet.
    assert fill.sequences_in(events, 0.0, 16.0, 20.0) == 0.0

    assert fill.decide([{"aggregate_sequences_per_second": 100}], 0.1)[0]
    history = [{"aggregate_sequences_per_second": 100}]
    assert fill.decide(history + [{"aggregate_sequences_per_second": 111}], 0.1)[0]
    add, reason = fill.decide(history + [{"aggregate_sequences_per_second": 109}], 0.1)
    assert not add and "+9.0%" in reason


def _write_log(run_dir, samples, mtime=None):
    os.makedirs(run_dir, exist_ok=True)
    path = os.path.join(run_dir, "log.csv")
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["epoch", "train_samples_per_second", "train_seconds"])
        for epoch, n in enumerate(samples):
            writer.writerow([epoch, n / 2.0, 2.0])
    if mtime is not None:
        os.utime(path, (mtime, mtime))


class _Running:
    returncode = None

    def poll(self):
        return None


def test_a_shard_is_credited_with_the_epochs_of_each_trial_it_names(tmp_path):
    runs = tmp_path / "runs"
    done = runs / "search" / "rnn_spn" / "p0_d1"
    _write_log(done, [60] * 20, mtime=100.0)  # a trial of an earlier call
    baselines = fill.log_snapshot(str(runs))
    log = tmp_path / "shard.log"
    log.write_text("search: rnn_spn p0_d1\n")
    proc = fill.Proc(
        fill.Job("search", "search-0-of-2", shard=(0, 2)),
        _Running(),
        str(log),
        start=1000.0,
        run_dirs=[],
        baselines=baselines,
    )
    root = str(runs / "search")
    proc.poll(1001.0, root)
    assert proc.events == []  # its epochs were there before
    trial = runs / "search" / "rnn_spn" / "code_p0.1_d1"
    with open(log, "a") as f:
        f.write("search: rnn_spn code_p0.1_d1\nEpoch 1/300\n")
    _write_log(trial, [60], mtime=1010.0)
    proc.poll(1011.0, root)
    assert proc.events == [(1010.0, 60)]
    # Two epochs committed between polls share the interval.
    _write_log(trial, [60, 60, 60], mtime=1020.0)
    proc.poll(1021.0, root)
    assert proc.events[1:] == [(1015.0, 60), (1020.0, 60)]


# === Staged start with stand-in processes ===

FAKE = r"""
import csv, os, signal, sys, time

run_dir, alive, mode = sys.argv[1:4]
os.makedirs(run_dir, exist_ok=True)
open(os.path.join(run_dir, "config.json"), "w").write("{}")
if mode == "stubborn":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
open(os.path.join(alive, str(os.getpid())), "w").close()


def running():
    n = 0
    for name in os.listdir(alive):
        try:
            os.kill(int(name), 0)
            n += 1
        except OSError:
            pass
    return max(n, 1)


rows = []
time.sleep(0.2)  # start-up
while True:
    n = running()
    # The "GPU": 5000 sequences/s for one process, 10000 for two, and with
    # more, contention: 7500 together.
    total = 5000.0 * min(n, 2) * (0.75 if n > 2 else 1.0)
    rate = total / n
    seconds = 1000 / rate
    time.sleep(seconds)
    rows.append([len(rows), rate, seconds])
    tmp = os.path.join(run_dir, ".log.tmp")
    with open(tmp, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["epoch", "train_samples_per_second", "train_seconds"])
        writer.writerows(rows)
    os.replace(tmp, os.path.join(run_dir, "log.csv"))
"""


def test_stages_stop_adding_when_the_gpu_saturates(tmp_path):
    script = tmp_path / "fake_job.py"
    script.write_text(FAKE)
    alive = tmp_path / "alive"
    alive.mkdir()
    jobs = ["rnn_spn", "ffn_spn", "conv", "rnn_spn:3", "ffn_spn:3"]
    settings = _settings(
        tmp_path, jobs, stages=[1, 2, 4], stage_seconds=2.0, stop_after=11,
        poll=0.05, grace=1.0, warmup_max=10.0,
    )  # fmt: skip
    settings.started_at = time.time()

    def command(job, s):
        mode = "stubborn" if job.name == "rnn_spn_d3" else "plain"
        run_dir = os.path.join(s.runs_dir, job.name)
        return [sys.executable, str(script), run_dir, str(alive), mode]

    messages = []
    result = fill.Driver(settings, command_for=command, log=messages.append).run()
    assert time.time() - settings.started_at < 11 + 8
    table = result["scaling"]
    assert [row["processes"] for row in table] == [1, 2, 4], messages
    assert [row["decision"] for row in table] == ["add", "add", "stop adding"]
    one, two, four = (row["aggregate_sequences_per_second"] for row in table)
    # 5000, 10000, 7500 sequences/s by construction (less the stand-ins' own
    # overhead); the rule needs only the direction.
    assert 1.5 < two / one < 2.5 and four / two < 1.0, messages
    assert table[2]["per_process_sequences_per_second"] == pytest.approx(
        four / 4, abs=0.1
    )
    assert result["chosen_processes"] == 4
    states = {row["job"]: row for row in result["jobs"]}
    assert states["ffn_spn:3"]["started_s"] is None  # never needed
    assert states["rnn_spn:3"]["stopped_by"] == "SIGKILL"  # ignored SIGTERM
    assert states["conv"]["stopped_by"] == "SIGTERM"
    written = json.loads((tmp_path / "out" / "gpu_scaling.json").read_text())
    assert [row["processes"] for row in written["scaling"]] == [1, 2, 4]
    for row in result["jobs"][:4]:
        assert row["exit"] is not None  # every process ended


def test_two_calls_end_to_end_with_stand_ins(tmp_path, monkeypatch, capsys):
    """main(): run, stop, pack, reports; then a second call from the first
    call's files."""
    script = tmp_path / "fake_job.py"
    script.write_text(FAKE)
    alive = tmp_path / "alive"
    alive.mkdir()

    def command(job, s):
        run_dir = os.path.join(s.runs_dir, job.name)
        return [sys.executable, str(script), run_dir, str(alive), "plain"]

    def reports(s):
        path = os.path.join(s.runs_dir, "reports", "progress.json")
        return {"fake": [sys.executable, "-c", f"open({path!r}, 'w').write('{{}}')"]}

    monkeypatch.setattr(fill, "job_command", command)
    monkeypatch.setattr(fill, "report_commands", reports)
    argv = ["--no-prepare", "--stop-after", "3", "--stages", "1,2"]
    argv += ["--stage-seconds", "0.5", "--poll", "0.05", "--grace", "1"]
    argv += ["rnn_spn", "conv"]
    first = tmp_path / "out1"
    runs = tmp_path / "runs1"
    assert fill.main(["--out", str(first), "--runs-dir", str(runs), *argv]) == 0
    assert sorted(p.name for p in first.iterdir()) == [
        "gpu_scaling.json",
        "report.tar.gz",
        "state.tar.gz",
    ]
    scaling = json.loads((first / "gpu_scaling.json").read_text())
    assert [row["processes"] for row in scaling["scaling"]][:1] == [1]
    assert set(scaling["pack"]["runs"]) == {"rnn_spn", "conv"}
    capsys.readouterr()
    second = tmp_path / "out2"
    argv2 = ["--out", str(second), "--runs-dir", str(tmp_path / "runs2")]
    assert fill.main([*argv2, "--resume-dir", str(first), *argv]) == 0
    out = capsys.readouterr().out
    assert f"resumed from {first}: 2 run directories, 0 with weights" in out
    assert (tmp_path / "runs2" / "reports" / "progress.json").exists()
    assert (second / "report.tar.gz").exists()


SHARD = r"""
import csv, os, sys, time

root = sys.argv[1]
time.sleep(0.2)  # start-up
for trial in range(10):
    run_dir = os.path.join(root, "rnn_spn", f"t{trial}")
    os.makedirs(run_dir, exist_ok=True)
    print(f"search: rnn_spn t{trial}", flush=True)
    rows = []
    for epoch in range(4):
        time.sleep(0.3)
        rows.append([epoch, 1000 / 0.3, 0.3])
        with open(os.path.join(run_dir, ".log.tmp"), "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["epoch", "train_samples_per_second", "train_seconds"])
            writer.writerows(rows)
        os.replace(os.path.join(run_dir, ".log.tmp"), os.path.join(run_dir, "log.csv"))
"""


def test_a_shard_is_stopped_at_a_trial_it_cannot_finish(tmp_path):
    """Trials of 4 epochs of 0.3 s; near the deadline the shard's next trial
    would not end in time, so the shard stops instead of starting it, and the
    second shard is not started at all."""
    script = tmp_path / "fake_shard.py"
    script.write_text(SHARD)
    settings = _settings(
        tmp_path, ["search"], stages=[1], stage_seconds=0.5, stop_after=3.3,
        poll=0.05, grace=1.0, search_epochs=4,
    )  # fmt: skip
    settings.jobs = fill.parse_jobs(["search"], 2)
    settings.started_at = time.time()

    def command(job, s):
        return [sys.executable, str(script), os.path.join(s.runs_dir, "search")]

    messages = []
    result = fill.Driver(settings, command_for=command, log=messages.append).run()
    states = {row["job"]: row for row in result["jobs"]}
    first = states["search:0/2"]
    assert first["stopped_by"].startswith("SIGTERM: search/rnn_spn/t"), messages
    assert first["ended_s"] < 3.3 and first["epochs"] >= 4
    assert states["search:1/2"]["started_s"] is None
    # Every trial it began before that ended: none left half done.
    runs = tmp_path / "runs" / "search" / "rnn_spn"
    begun = [d for d in runs.iterdir() if (d / "log.csv").exists()]
    assert all(len(fill.read_rows(str(d / "log.csv"))) == 4 for d in begun)


# === Pack and unpack ===


def _weights(path, size, seed):
    data = hashlib.sha256(str(seed).encode()).digest() * (size // 32 + 1)
    path.write_bytes(data[:size])
    return dict(size=size, sha256=hashlib.sha256(data[:size]).hexdigest())


def _make_run(runs, rel, epochs, size=30_000, same_best=True, metrics=False, seed=0):
    """A run directory as the runner leaves it: config, log, the newest
    record naming its weights and best weights."""
    run = runs / rel
    checkpoints = run / "checkpoints"
    checkpoints.mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({"model": "x", "seed": seed}))
    _write_log(str(run), [60] * epochs)
    last = epochs - 1
    newest = _weights(checkpoints / f"epoch-{last:04d}.weights.h5", size, (rel, 0))
    record = dict(
        epoch=last,
        log=[{"epoch": e, "val_digit_accuracy": 0.5} for e in range(epochs)],
        weights=f"epoch-{last:04d}.weights.h5",
        weights_size=newest["size"],
        weights_sha256=newest["sha256"],
        finished=metrics,
    )
    best_epoch = last if same_best else last - 1
    best = checkpoints / f"best-{best_epoch:04d}.weights.h5"
    meta = _weights(best, size, (rel, 0) if same_best else (rel, 1))
    record.update(best_weights=best.name, best_weights_size=meta["size"],
                  best_weights_sha256=meta["sha256"])  # fmt: skip
    (checkpoints / f"epoch-{last:04d}.json").write_text(json.dumps(record))
    if epochs > 1:  # the older record the runner keeps too
        older = dict(record, epoch=last - 1, log=record["log"][:-1])
        (checkpoints / f"epoch-{last - 1:04d}.json").write_text(json.dumps(older))
    if metrics:
        (run / "metrics.json").write_text(json.dumps({"test_per_digit_error": 0.1}))
    return run


def _sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_pack_keeps_the_limits_and_the_priorities(tmp_path):
    runs = tmp_path / "runs"
    table = _make_run(runs, "rnn_spn_d3", 12, same_best=False)
    _make_run(runs, "conv", 64, metrics=True)
    trial_a = _make_run(runs, "search/rnn_spn/code_p0.1_d1", 7)
    _make_run(runs, "search/rnn_spn/paper_p0.1_d1", 3, same_best=False)
    _make_run(runs, "search/conv/p0", 20)  # done: its log alone
    (runs / "logs").mkdir()
    (runs / "logs" / "rnn_spn_d3.log").write_bytes(b"x" * (fill.LOG_TAIL_BYTES + 10))
    # Room for two weights parts of 64 KiB: the Table row's two files and the
    # longer trial's one (its best weights are the same file), not the other.
    settings = _settings(
        tmp_path, max_files=5, max_file_bytes=64 * 1024, resume_bytes=1 << 20,
        max_total_bytes=2 << 20, report_reserve=64 * 1024,
    )  # fmt: skip
    messages = []
    manifest = fill.pack(settings, log=messages.append)
    runs_packed = manifest["runs"]
    assert runs_packed["rnn_spn_d3"]["pack"] == "weights"
    assert runs_packed["search/rnn_spn/code_p0.1_d1"]["pack"] == "weights"
    assert runs_packed["search/rnn_spn/paper_p0.1_d1"]["pack"] == "dropped"
    assert runs_packed["search/conv/p0"]["pack"] == "logs"
    assert runs_packed["conv"]["pack"] == "logs"
    assert any("paper_p0.1_d1 (3 epochs, unfinished) left out" in m for m in messages)
    assert list(manifest["aliases"]) == [
        "search/rnn_spn/code_p0.1_d1/checkpoints/best-0006.weights.h5"
    ]
    out = tmp_path / "out"
    (runs / "reports").mkdir()
    (runs / "reports" / "rnn_spn_paper_gpu.json").write_text('{"models": {}}')
    assert fill.write_report_tar(settings)
    (out / "gpu_scaling.json").write_text("{}")
    files = sorted(p.name for p in out.iterdir())
    assert files == [
        "gpu_scaling.json",
        "report.tar.gz",
        "state.tar.gz",
        "weights.tar.part-00",
        "weights.tar.part-01",
    ]
    sizes = [p.stat().st_size for p in out.iterdir()]
    assert max(sizes) <= 64 * 1024 and sum(sizes) <= 2 << 20

    # The round trip: what the next call finds in its RUNS_DIR.
    resumed = tmp_path / "resumed"
    fill.unpack(str(out), str(resumed), log=lambda m: None)
    for rel, source in [
        ("rnn_spn_d3", table),
        ("search/rnn_spn/code_p0.1_d1", trial_a),
    ]:
        _, record = fill.newest_record(str(resumed / rel))
        for key in ("weights", "best_weights"):
            copy = resumed / rel / "checkpoints" / record[key]
            assert _sha(copy) == record[f"{key}_sha256"]
            assert _sha(copy) == _sha(source / "checkpoints" / record[key])
        # Only the newest record: the runner resumes from it.
        assert len(list((resumed / rel / "checkpoints").glob("epoch-*.json"))) == 1
    assert not (resumed / "search/rnn_spn/paper_p0.1_d1").exists()
    done = resumed / "search/conv/p0"
    assert (done / "config.json").exists() and (done / "log.csv").exists()
    assert not list((done / "checkpoints").glob("*.h5"))
    assert (resumed / "conv" / "metrics.json").exists()
    log = (resumed / "logs" / "rnn_spn_d3.log").read_bytes()
    assert len(log) == fill.LOG_TAIL_BYTES
    assert json.loads((resumed / "reports" / "rnn_spn_paper_gpu.json").read_text())

    # Unpacking over runs, or an incomplete copy, is refused before anything
    # runs.
    argv = ["--check-only", "--out", str(tmp_path / "o"), "--resume-dir", str(out)]
    assert fill.main([*argv, "--runs-dir", str(resumed)]) == 2
    assert fill.main([*argv, "--runs-dir", str(tmp_path / "new")]) == 0
    (out / "weights.tar.part-01").unlink()
    with pytest.raises(fill.SettingError, match="lacks weights.tar.part-01"):
        fill.check_resume_dir(str(out))


@pytest.mark.slow
def test_a_smoke_run_resumes_from_the_unpacked_pack(tmp_path, capsys):
    from cram_keras.experiments import rnn_spn
    from cram_keras.experiments.run_dir import read_log

    runs = tmp_path / "runs"
    # FFN-SPN with d = 4: the smallest weights of Table 1 (about 8 MB with
    # the optimizer's state; the CNN's are 200 MB).
    config = rnn_spn.smoke_config(
        model="ffn_spn", downsample=4.0, cache_dir=str(tmp_path / "cache")
    )
    run = "ffn_spn_d4"
    paused = rnn_spn.train_and_evaluate(
        config, str(runs / run), smoke=True, stop_after_epochs=1, verbose=0
    )
    assert paused is None
    first = read_log(str(runs / run))
    _, record = fill.newest_record(str(runs / run))
    size = record["weights_size"]
    # Parts smaller than the weights file: it travels in pieces.
    settings = _settings(tmp_path, max_file_bytes=size // 2 + 4096)
    manifest = fill.pack(settings, log=lambda m: None)
    assert manifest["runs"][run]["pack"] == "weights"
    assert len(manifest["weights_parts"]) >= 2
    resumed = tmp_path / "resumed"
    fill.unpack(str(tmp_path / "out"), str(resumed), log=lambda m: None)
    capsys.readouterr()
    metrics = rnn_spn.train_and_evaluate(
        config, str(resumed / run), smoke=True, verbose=0
    )
    assert "resuming" in capsys.readouterr().err
    assert metrics["epochs"] == 2
    rows = read_log(str(resumed / run))
    assert rows[0] == first[0] and len(rows) == 2


# === The sharded search ===

from cram_keras.studies import driver  # noqa: E402
from cram_keras.studies import dropout_search as search  # noqa: E402


def test_search_shards_partition_the_grid_and_the_report_reads_them_all(
    tmp_path, monkeypatch
):
    from cram_keras.experiments.config import config_to_dict
    from cram_keras.utils import write_json

    trained = {}
    accuracy = {"p0_d3": 0.90, "paper_p0.3_d3": 0.95, "p0": 0.80, "paper_p0.3": 0.70}

    def rows(run_dir):
        value = accuracy[os.path.basename(run_dir)]
        return [dict(val_digit_accuracy=value, val_sequence_accuracy=value,
                     val_loss=1.0, loss=1.0, train_seconds=1.0)]  # fmt: skip

    def fake_trial(config, run_dir, epochs, smoke=False):
        trained.setdefault(run_dir, 0)
        trained[run_dir] += 1
        os.makedirs(run_dir, exist_ok=True)
        write_json(os.path.join(run_dir, "config.json"),
                   dict(config_to_dict(config), data_source={"kind": "fake"}))  # fmt: skip
        return rows(run_dir)

    monkeypatch.setattr(search, "run_trial", fake_trial)
    monkeypatch.setattr(search, "committed_rows", rows)
    runs = tmp_path / "search"
    common = [
        "rnn_spn/dropout_search",
        "--smoke", "--models", "rnn_spn,conv", "--epochs", "1", "--rates", "0,0.3",
        "--placements", "paper", "--downsample", "3", "--runs-dir", str(runs),
    ]  # fmt: skip
    names = {}
    for k in range(3):
        output = tmp_path / f"shard-{k}.json"
        assert driver.main([*common, "--shard", f"{k}/3", "--output", str(output)]) == 0
        result = json.loads(output.read_text())
        assert result["shard"] == f"{k}/3"
        names[k] = sorted(
            f"{model}/{t['name']}"
            for model, entry in result["models"].items()
            for t in entry["trials"]
        )
        assert all(entry["chosen"] is None for entry in result["models"].values())
    # Global order: rnn_spn p0_d3 (0), paper_p0.3_d3 (1), conv p0 (2),
    # paper_p0.3 (3); trial i to shard i % 3.
    assert names == {
        0: ["conv/paper_p0.3", "rnn_spn/p0_d3"],
        1: ["rnn_spn/paper_p0.3_d3"],
        2: ["conv/p0"],
    }
    assert sorted(trained.values()) == [1, 1, 1, 1]

    output = tmp_path / "report.json"
    argv = [*common, "--report", "--shard", "1/3", "--output", str(output)]
    assert driver.main(argv) == 0
    result = json.loads(output.read_text())
    assert "shard" not in result
    assert result["models"]["rnn_spn"]["chosen"]["trial"] == "paper_p0.3_d3"
    assert result["models"]["conv"]["chosen"]["trial"] == "p0"
    with pytest.raises(SystemExit):
        driver.main([*common, "--shard", "3/3"])


def test_a_trial_brought_back_with_its_logs_only_counts_its_epochs(
    tmp_path, monkeypatch
):
    from cram_keras.experiments import rnn_spn
    from cram_keras.experiments.config import config_to_dict

    trial = search.grid_trials("rnn_spn", [0.0], ["code"], [3.0])[0]
    config = search.trial_config(rnn_spn.smoke_config(), "rnn_spn", trial, 2)
    run = tmp_path / "search" / "rnn_spn" / trial["name"]
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.json").write_text(
        json.dumps(dict(config_to_dict(config), data_source=None))
    )
    rows = [dict(epoch=e, val_digit_accuracy=0.5, val_sequence_accuracy=0.2,
                 val_loss=1.0, loss=1.0) for e in range(2)]  # fmt: skip
    record = dict(epoch=1, log=rows, weights="epoch-0001.weights.h5",
                  weights_size=10, weights_sha256="0" * 64)  # fmt: skip
    (run / "checkpoints" / "epoch-0001.json").write_text(json.dumps(record))

    def forbidden(*args, **kwargs):
        raise AssertionError("a trial done was trained again")

    monkeypatch.setattr(rnn_spn, "train_and_evaluate", forbidden)
    assert search.committed_rows(str(run)) == rows
    assert search.run_trial(config, str(run), 2) == rows
    # The pack's own count of its epochs agrees: done, no weights needed.
    plan = fill.plan_pack(str(tmp_path), search_epochs=2, budget=0)
    assert [(r["rel"], r["epochs_done"], r["pack"]) for r in plan["runs"]] == [
        (os.path.join("search", "rnn_spn", trial["name"]), 2, "logs")
    ]
