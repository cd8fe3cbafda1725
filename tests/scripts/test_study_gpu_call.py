"""benchmarks/study_gpu_call.sh, the command that fills one time-limited
GPU call with the runs of a full-budget study (inpaint/full_mnist32 or
cram_cls/full), checked without a GPU:

* a call of each study with stand-in training processes (and a stand-in
  nvidia-smi): one run finishes, one is stopped by SIGTERM at STOP_AFTER
  (exit 143), one that ignores SIGTERM is killed (exit 137); the real
  progress report (``run_study.py STUDY --progress``) reads their run
  directories; OUT holds the progress file, its figure, the runs' small
  files in one archive, the summary and the finished run's model, within
  the call's file limits and its time, and no process is left behind;
* bad settings refused in one line each before anything runs;
* (slow) a real smoke run on JAX that finishes inside the call.
"""

import json
import os
import signal
import subprocess
import sys
import tarfile
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPT = os.path.join(ROOT, "benchmarks", "study_gpu_call.sh")
MIB = 1 << 20

# train_inpaint.py's and train_cls.py's stand-in: the run directory as the
# runner leaves it (config.json, log.csv committed per epoch, checkpoints,
# figures; at the end metrics.json, the experiment's figure and
# model.keras). cram and oracle train 3 epochs and finish; cnn_encoder and
# none train until SIGTERM, which they answer as the scripts do (exit 143);
# cram_skip and saliency ignore SIGTERM.
FAKE_TRAIN = r"""
import csv, json, os, signal, sys, time

script = sys.argv[1]
args = sys.argv[2:]
value = lambda flag: args[args.index(flag) + 1]
variant = value("--config").split(":")[1]
run_dir = value("--output-dir")
alive = os.environ["FAKE_ALIVE"]
with open(os.path.join(alive, str(os.getpid())), "w") as f:
    json.dump({"script": script, "argv": args, "env": {k: os.environ.get(k) for k in (
        "KERAS_BACKEND", "XLA_PYTHON_CLIENT_PREALLOCATE", "TF_CPP_MIN_LOG_LEVEL")}}, f)
if variant in ("cnn_encoder", "none"):
    signal.signal(signal.SIGTERM, lambda *a: sys.exit(143))
elif variant in ("cram_skip", "saliency"):
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
classify = script == "train_cls.py"
epochs = 3 if variant in ("cram", "oracle") else 50
os.makedirs(os.path.join(run_dir, "checkpoints"), exist_ok=True)
os.makedirs(os.path.join(run_dir, "figures"), exist_ok=True)
os.makedirs(os.path.join(run_dir, "tensorboard"), exist_ok=True)
with open(os.path.join(run_dir, "config.json"), "w") as f:
    json.dump({"epochs": epochs, "batch_size": 64, "n_train": None,
               "monitor_examples": 512, "data_source": {"n_train": 60000}}, f)
open(os.path.join(run_dir, "tensorboard", "events"), "w").write("x")
print("run directory:", run_dir, flush=True)
rows = []
for epoch in range(epochs):
    time.sleep(0.3)
    psnr = 10.0 + epoch + (0.5 if variant == "cram" else 0.0)
    accuracy = 0.5 + 0.125 * min(epoch, 3)  # validation error 50, 37.5, ... %
    rows.append([epoch, 0.9, 0.3, 0.3, accuracy, 0.4] if classify
                else [epoch, 0.2, 0.1, psnr, 0.8, 0.3])
    open(os.path.join(run_dir, "checkpoints", f"epoch-{epoch:04d}.weights.h5"),
         "wb").write(os.urandom(64 * 1024))
    open(os.path.join(run_dir, "figures", f"epoch_{epoch + 1:03d}.png"), "w").write("png")
    with open(os.path.join(run_dir, ".log.tmp"), "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["epoch", "accuracy", "loss", "train_seconds", "val_accuracy",
                         "val_loss"] if classify else ["epoch", "recon_loss",
                         "val_hole_l1", "val_hole_psnr", "val_ssim", "train_seconds"])
        writer.writerows(rows)
    os.replace(os.path.join(run_dir, ".log.tmp"), os.path.join(run_dir, "log.csv"))
    print(f"Epoch {epoch + 1}/{epochs}", flush=True)
open(os.path.join(run_dir, "glimpses.png" if classify else "inpaint.png"), "w").write(
    "png")
open(os.path.join(run_dir, "model.keras"), "wb").write(os.urandom(4096))
errors = [1.0 - row[4] for row in rows]
metrics = {"methods": {"cram": {"psnr": 21.0, "ssim": 0.9}}, "epochs": epochs}
if classify:
    metrics = dict(
        test_error=0.3, valid_error=min(errors), epochs=epochs, best_epoch=2,
        wall_seconds=2.0, valid_error_per_epoch=errors,
        train_error_per_epoch=[0.1] * epochs, glimpse_in_digit_box=0.7,
        glimpse_scale=0.5, beta=1.0, parameters=5900000,
        train_samples_per_second=900.0)
with open(os.path.join(run_dir, "metrics.json"), "w") as f:
    json.dump(metrics, f)
"""

# PYTHON: train_inpaint.py and train_cls.py run the stand-in, the
# environment check answers at once, anything else (the report) is the real
# interpreter.
FAKE_PYTHON = """\
#!/usr/bin/env bash
case "$1" in
  train_inpaint.py | train_cls.py) exec {python} {train} "$@" ;;
  -c) echo "jax (stand-in)"; exit 0 ;;
esac
exec {python} "$@"
"""

FAKE_NVIDIA_SMI = """\
#!/usr/bin/env bash
case " $* " in
  *" -l "*)
    echo $$ > "$FAKE_ALIVE/$$"
    while :; do echo "2026/01/01 00:00:00.000, 87, 1234, 81559"; sleep 0.2; done ;;
  *) echo "NVIDIA H100 (stand-in), 81559 MiB, 550.00" ;;
esac
"""


def _alive(pid):
    """True while ``pid`` runs (a zombie does not)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _call(env, timeout=120):
    return subprocess.run(
        ["bash", SCRIPT],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=timeout,
    )


@pytest.fixture
def stand_ins(tmp_path):
    """(environment, folder of the processes' records) for a call with the
    stand-ins, OUT and RUNS_DIR under tmp_path, and a DATA_DIR that holds the
    four file names."""
    data = tmp_path / "mnist"
    data.mkdir()
    for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                 "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):  # fmt: skip
        (data / f"{name}.gz").write_bytes(b"")
    alive = tmp_path / "alive"
    alive.mkdir()
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    train = tmp_path / "fake_train.py"
    train.write_text(FAKE_TRAIN)
    python = bin_dir / "fake-python"
    python.write_text(FAKE_PYTHON.format(python=sys.executable, train=train))
    smi = bin_dir / "nvidia-smi"
    smi.write_text(FAKE_NVIDIA_SMI)
    for path in (python, smi):
        path.chmod(0o755)
    env = dict(
        os.environ,
        PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        OUT=str(tmp_path / "out"),
        DATA_DIR=str(data),
        RUNS_DIR=str(tmp_path / "runs"),
        PYTHON=str(python),
        FAKE_ALIVE=str(alive),
    )
    return env, alive


def test_a_call_stops_the_runs_reports_and_packs_within_the_limits(stand_ins, tmp_path):
    env, alive = stand_ins
    env.update(
        JOBS="cram:0 cnn_encoder:0 cram_skip:1",
        STOP_AFTER="8",
        STOP_GRACE="2",
        CALL_SECONDS="40",
        EXTRA="--set n_test=16",
        DTYPE_POLICY="mixed_bfloat16",
    )
    begin = time.time()
    proc = _call(env)
    wall = time.time() - begin
    output = proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.returncode == 0, output
    # Stopped at STOP_AFTER (the stubborn run after the grace), within the call.
    assert 8 <= wall < 40, output

    out = tmp_path / "out"
    files = {p.name: p.stat().st_size for p in out.iterdir()}
    assert set(files) == {
        "inpaint_full_mnist32.json",
        "inpaint_full_mnist32_gap.png",
        "runs.tar.gz",
        "summary.txt",
        "model_cram_seed0.keras",  # the finished run's model fits
    }, output
    assert len(files) <= 8 and all(0 < size < 16 * MIB for size in files.values())

    # The progress file of the real report: each run with its epochs.
    result = json.loads((out / "inpaint_full_mnist32.json").read_text())
    assert result["configuration"] == "inpaint/full_mnist32"
    assert result["backend"] == "jax"
    status = result["status"]
    runs = result["runs"]

    def best(curves):  # the first epoch of the highest validation PSNR, 1-based
        psnr = curves["val_hole_psnr"]
        return curves["epochs"][psnr.index(max(psnr))]

    cram = runs["cram"]["0"]
    assert status["cram"]["0"] == f"finished after 3 epochs, best epoch {best(cram)}"
    assert cram["best_epoch"] == best(cram)
    assert status["cram_skip"]["0"] == "not started"
    assert runs["cram"]["0"]["epochs"] == [1, 2, 3]
    assert runs["cram"]["0"]["final"] == {"cram": {"psnr": 21.0, "ssim": 0.9}}
    for variant, seed in (("cnn_encoder", "0"), ("cram_skip", "1")):
        epochs = runs[variant][seed]["epochs"]
        assert len(epochs) >= 1 and epochs == list(range(1, len(epochs) + 1))
        assert status[variant][seed] == (
            f"epoch {epochs[-1]} of 50, best epoch {best(runs[variant][seed])}"
        )
        assert runs[variant][seed]["final"] is None
    assert result["gap_db"]["0"]["epochs"][:1] == [1]
    # EXTRA and DTYPE_POLICY reach the report's settings too.
    assert result["settings"]["n_test"] == 16
    assert result["settings"]["dtype_policy"] == "mixed_bfloat16"

    summary = (out / "summary.txt").read_text()
    lines = {line.split()[0]: line for line in summary.splitlines() if line.strip()}
    assert lines["cram_seed0"].split()[1:4] == ["3/3", "12.50", "(epoch"]
    assert " yes " in lines["cram_seed0"] and " 0 " in lines["cram_seed0"]
    cnn = runs["cnn_encoder"]["0"]["epochs"][-1]
    assert lines["cnn_encoder_seed0"].split()[1] == f"{cnn}/50"
    assert " no " in lines["cnn_encoder_seed0"]
    assert "143 (stopped, SIGTERM)" in lines["cnn_encoder_seed0"]
    assert "137 (stopped, SIGKILL)" in lines["cram_skip_seed1"]
    assert "utilisation mean 87 %" in lines["GPU:"]

    # The archive: every run's small files, the newest epoch figure, the
    # console logs and the GPU samples; no checkpoints, TensorBoard or model.
    with tarfile.open(out / "runs.tar.gz") as tar:
        names = set(tar.getnames())
    for run in ("cram_seed0", "cnn_encoder_seed0", "cram_skip_seed1"):
        assert {f"{run}/config.json", f"{run}/log.csv", f"logs/{run}.log"} <= names
    assert {"cram_seed0/metrics.json", "cram_seed0/inpaint.png",
            "cram_seed0/figures/epoch_003.png"} <= names  # fmt: skip
    assert "cram_seed0/figures/epoch_001.png" not in names
    assert {"logs/nvidia_smi.csv", "logs/progress_report.log"} <= names
    assert not any(
        "checkpoints" in n or "tensorboard" in n or n.endswith("model.keras")
        for n in names
    ), names
    assert "cnn_encoder_seed0/metrics.json" not in names

    # Each run's command and environment, and nothing left running.
    records = {}
    for path in alive.iterdir():
        pid = int(path.name)
        assert not _alive(pid), f"process {pid} was left behind"
        text = path.read_text()
        if text.startswith("{"):
            record = json.loads(text)
            records[record["argv"][1]] = record
    assert set(records) == {
        "inpaint/full_mnist32:cram",
        "inpaint/full_mnist32:cnn_encoder",
        "inpaint/full_mnist32:cram_skip",
    }
    record = records["inpaint/full_mnist32:cram_skip"]
    assert record["script"] == "train_inpaint.py"
    assert record["argv"] == [
        "--config", "inpaint/full_mnist32:cram_skip", "--seed", "1",
        "--data-dir", env["DATA_DIR"],
        "--output-dir", os.path.join(env["RUNS_DIR"], "cram_skip_seed1"),
        "--set", "n_test=16", "--set", "dtype_policy=mixed_bfloat16",
    ]  # fmt: skip
    assert record["env"] == {
        "KERAS_BACKEND": "jax",
        "XLA_PYTHON_CLIENT_PREALLOCATE": "false",
        "TF_CPP_MIN_LOG_LEVEL": "2",
    }
    assert len(list(alive.iterdir())) == 4  # three runs and the GPU monitor


def test_a_cram_cls_call_trains_its_runs_and_reports_validation_errors(
    stand_ins, tmp_path
):
    env, alive = stand_ins
    env.update(
        STUDY="cram_cls/full",
        JOBS="oracle:0 none:1 saliency:0",
        STOP_AFTER="4",
        STOP_GRACE="1",
        CALL_SECONDS="40",
    )
    proc = _call(env)
    output = proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.returncode == 0, output

    out = tmp_path / "out"
    files = {p.name: p.stat().st_size for p in out.iterdir()}
    assert set(files) == {
        "cram_cls_full.json",
        "cram_cls_full_curves.png",
        "runs.tar.gz",
        "summary.txt",
        "model_oracle_seed0.keras",
    }, output
    assert all(0 < size < 16 * MIB for size in files.values())

    result = json.loads((out / "cram_cls_full.json").read_text())
    assert result["configuration"] == "cram_cls/full"
    assert result["backend"] == "jax"
    status = result["status"]
    assert status["oracle"] == {"0": "finished", "1": "not started"}
    oracle = result["progress"]["oracle"]["0"]
    assert oracle["finished"] is True and oracle["test_error"] == 0.3
    assert oracle["best_valid_epoch"] == 3
    assert result["runs"]["oracle"]["test_error_per_seed"] == [0.3]
    for clue, seed in (("none", "1"), ("saliency", "0")):
        run = result["progress"][clue][seed]
        assert run["finished"] is False and run["test_error"] is None
        assert status[clue][seed] == f"epoch {run['epochs_done']} of 50"

    summary = (out / "summary.txt").read_text()
    assert "best val error (%)" in summary.splitlines()[0]
    lines = {line.split()[0]: line for line in summary.splitlines() if line.strip()}
    assert lines["oracle_seed0"].split()[1:4] == ["3/3", "25.00", "(epoch"]
    assert " yes " in lines["oracle_seed0"]
    assert "143 (stopped, SIGTERM)" in lines["none_seed1"]
    assert "137 (stopped, SIGKILL)" in lines["saliency_seed0"]

    with tarfile.open(out / "runs.tar.gz") as tar:
        names = set(tar.getnames())
    assert {"oracle_seed0/metrics.json", "oracle_seed0/glimpses.png",
            "none_seed1/log.csv", "logs/saliency_seed0.log"} <= names  # fmt: skip
    assert not any("checkpoints" in n for n in names)

    scripts = {}
    for path in alive.iterdir():
        assert not _alive(int(path.name)), f"process {path.name} was left behind"
        text = path.read_text()
        if text.startswith("{"):
            record = json.loads(text)
            scripts[record["argv"][1]] = record["script"]
    assert scripts == {
        f"cram_cls/full:{clue}": "train_cls.py"
        for clue in ("oracle", "none", "saliency")
    }


def test_a_call_stopped_from_outside_leaves_no_process(stand_ins, tmp_path):
    """SIGTERM to the script itself (the call's own limit) ends its runs too."""
    env, alive = stand_ins
    env.update(JOBS="cnn_encoder:1 cram_skip:0", STOP_AFTER="60", CALL_SECONDS="90")
    proc = subprocess.Popen(["bash", SCRIPT], env=env, cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.monotonic() + 30
    while len(list(alive.iterdir())) < 3:  # two runs and the GPU monitor
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 143
    time.sleep(0.5)
    left = [int(p.name) for p in alive.iterdir() if _alive(int(p.name))]
    assert left == []


@pytest.mark.parametrize(
    "changes, message",
    [
        (dict(OUT=""), "set OUT to the output folder"),
        (dict(DATA_DIR=""), "set DATA_DIR to the folder of the four MNIST IDX"),
        (dict(DATA_DIR="/nonexistent"), "lacks train-images-idx3-ubyte.gz"),
        (dict(JOBS="cram:2"), "a job is VARIANT:SEED with VARIANT one of"),
        (dict(JOBS="cnn:0"), "a job is VARIANT:SEED with VARIANT one of"),
        (dict(JOBS="cram"), "a job is VARIANT:SEED"),
        (dict(JOBS="cram:0 cram:0"), "job cram:0 appears twice"),
        (
            dict(STUDY="cram_cls/budget"),
            "STUDY is inpaint/full_mnist32 or cram_cls/full",
        ),
        (
            dict(STUDY="cram_cls/full", JOBS="cram:0"),
            "VARIANT one of oracle, saliency, none",
        ),
        (dict(STUDY="cram_cls/full", JOBS="none:2"), "SEED one of 0, 1"),
        (dict(STOP_AFTER="9m"), "STOP_AFTER must be a whole number of seconds"),
        (dict(CALL_SECONDS="-1"), "CALL_SECONDS must be a whole number of seconds"),
        (dict(STOP_AFTER="590"), "must fit in CALL_SECONDS (595)"),
        (dict(EXTRA="--epochs 2"), "EXTRA holds --smoke and --set KEY=VALUE words"),
        (dict(EXTRA="--set 3"), "EXTRA: --set takes KEY=VALUE"),
        (dict(EXTRA="--smoke --set"), "EXTRA: --set at its end takes KEY=VALUE"),
        (dict(PYTHON="no-such-python"), "PYTHON no-such-python is no command"),
    ],
)
def test_bad_settings_are_refused_in_one_line(stand_ins, tmp_path, changes, message):
    env, alive = stand_ins
    env.update(changes)
    proc = _call(env, timeout=30)
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists() and not (tmp_path / "runs").exists()
    assert not list(alive.iterdir())


def test_a_non_empty_out_is_refused(stand_ins, tmp_path):
    env, _ = stand_ins
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "old.json").write_text("{}")
    proc = _call(env, timeout=30)
    assert proc.returncode == 2 and "must be empty" in proc.stderr


@pytest.mark.slow
def test_a_real_smoke_run_on_jax_finishes_inside_the_call(fake_mnist_dir, tmp_path):
    """train_inpaint.py itself (JAX, --smoke sizes, one epoch): the run
    finishes, its final scores reach the progress file and its model OUT."""
    env = dict(
        os.environ,
        OUT=str(tmp_path / "out"),
        DATA_DIR=str(fake_mnist_dir),
        RUNS_DIR=str(tmp_path / "runs"),
        PYTHON=sys.executable,
        JOBS="cnn_encoder:0",
        EXTRA="--smoke --set epochs=1",
        STOP_AFTER="400",
        CALL_SECONDS="450",
    )
    proc = _call(env, timeout=480)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = tmp_path / "out"
    assert {p.name for p in out.iterdir()} == {
        "inpaint_full_mnist32.json",
        "inpaint_full_mnist32_gap.png",
        "runs.tar.gz",
        "summary.txt",
        "model_cnn_encoder_seed0.keras",
    }
    result = json.loads((out / "inpaint_full_mnist32.json").read_text())
    status = result["status"]["cnn_encoder"]["0"]
    assert status == "finished after 1 epoch, best epoch 1"
    run = result["runs"]["cnn_encoder"]["0"]
    assert run["epochs"] == [1] and "cnn_encoder" in run["final"]
    with tarfile.open(out / "runs.tar.gz") as tar:
        names = set(tar.getnames())
    assert {"cnn_encoder_seed0/metrics.json", "cnn_encoder_seed0/inpaint.png",
            "logs/cnn_encoder_seed0.log"} <= names  # fmt: skip
    assert not any("checkpoints" in n for n in names)
    summary = (out / "summary.txt").read_text()
    assert "cnn_encoder_seed0  1/1" in summary and " yes " in summary
