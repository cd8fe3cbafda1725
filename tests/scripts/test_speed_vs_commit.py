"""benchmarks/speed_vs_commit.py: the current checkout's training step against
an earlier commit's in alternating processes. Checked with HEAD as the
baseline (the same code both sides): each process imports the package it
was given, the loss curves agree exactly (deterministic float32 steps from
the same seed), the file holds every round, and the speed page renders it.
A baseline that git does not know is refused in one line."""

import importlib.util
import json
import os
import pathlib
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
SCRIPT = REPO / "benchmarks" / "speed_vs_commit.py"
ENV = dict(os.environ, CRAM_KERAS_NATIVE_SAMPLER="0", TF_CPP_MIN_LOG_LEVEL="2")


def in_git_checkout():
    proc = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True
    )
    return proc.returncode == 0


def package_unchanged():
    proc = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no", "--", "cram_keras"],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    return proc.returncode == 0 and not proc.stdout.strip()


@pytest.mark.slow
def test_head_against_itself_gives_the_same_losses_and_a_rendered_table(tmp_path):
    if not in_git_checkout():
        pytest.skip("needs a git checkout (the baseline is exported from git)")
    out = tmp_path / "speed_vs_commit.json"
    # A file from another machine with an entry written before entries
    # recorded their machine: that entry keeps the file's machine.
    earlier = {
        "command": "python benchmarks/speed_vs_commit.py --model cram_inpainter",
        "date": "2020-01-02", "hardware": "CPU X, 2 cores, no GPU",
        "cpu_flags": ["avx2"], "versions": {"tensorflow": "0", "keras": "0"},
        "models": {"cram_inpainter": json.loads(
            (REPO / "benchmarks/results/speed_vs_commit.json").read_text()
        )["models"]["cram_inpainter"]},
    }  # fmt: skip
    for key in ("date", "hardware", "cpu_flags", "versions"):
        earlier["models"]["cram_inpainter"].pop(key, None)
    earlier["models"]["cram_inpainter"]["command"] = earlier["command"]
    out.write_text(json.dumps(earlier))
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--baseline", "HEAD", "--model", "rnn_spn",
         "--batch", "2", "--steps", "2", "--warmup", "1", "--rounds", "1",
         "--output", str(out)],
        capture_output=True, text=True, env=ENV, cwd=tmp_path, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    result = json.loads(out.read_text())
    entry = result["models"]["rnn_spn"]
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True
    ).stdout.strip()
    assert entry["baseline"]["commit"] == head == entry["current"]["commit"]
    # One round (the order of later rounds and the medians over rounds:
    # the tests below), the baseline first.
    [only] = entry["rounds"]
    assert only["order"] == ["baseline/float32", "current/float32"]
    base, cur = only["ms"]["baseline/float32"], only["ms"]["current/float32"]
    assert base > 0 and cur > 0
    assert entry["median_ms"] == only["ms"]
    assert entry["ratio"]["current/float32"] == pytest.approx(base / cur)
    assert entry["round_ratios"]["current/float32"] == pytest.approx([base / cur])
    losses = entry["losses"]
    assert losses["steps"] == 3  # 1 warm-up and 2 timed steps
    compared = losses["against_baseline_float32"]["current/float32"]
    assert "loss" in compared
    if package_unchanged():  # Else the two sides are different code.
        assert all(v["max_abs"] == 0.0 for v in compared.values()), compared
    assert "round 1/1: current/float32" in proc.stdout

    sys.path.insert(0, str(REPO / "tools"))
    try:
        from render import speed
    finally:
        sys.path.remove(str(REPO / "tools"))
    text = speed.speed_vs_commit.__wrapped__(result)
    assert f"`{head[:7]}` (current)" in text and "`float32`" in text
    assert f"{entry['median_ms']['baseline/float32']:.1f}" in text

    # Each entry names its machine; the file lists both commands and, its
    # machines differing, the source line names each model's.
    sys.path.insert(0, str(REPO))
    try:
        from cram_keras.platform_info import describe
    finally:
        sys.path.remove(str(REPO))
    inpainter = result["models"]["cram_inpainter"]
    assert (inpainter["hardware"], inpainter["date"]) == (
        "CPU X, 2 cores, no GPU", "2020-01-02",
    )  # fmt: skip
    assert entry["hardware"] == describe() == result["hardware"]
    assert result["command"].split("; ") == [earlier["command"], entry["command"]]
    machines = speed._vs_commit_machines(result)
    assert machines.startswith("per model: CRAM inpainter (32x32x3, G + 2 D) on "
                               "CPU X, 2 cores, no GPU (vector extensions: AVX2), "
                               "2020-01-02; RNN-SPN, d = 2 on "), machines  # fmt: skip
    del result["models"]["cram_inpainter"]
    assert not speed._vs_commit_machines(result).startswith("per model")


def load_benchmark():
    spec = importlib.util.spec_from_file_location("speed_vs_commit", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_rounds_alternate_the_order_of_the_processes():
    bench = load_benchmark()
    runs = [("baseline", "float32"), ("current", "float32"), ("current", "bf16")]
    forward, backward = runs, runs[::-1]
    assert [bench.round_order(runs, r) for r in range(4)] == [
        forward,
        backward,
        forward,
        backward,
    ]
    assert runs == [
        ("baseline", "float32"),
        ("current", "float32"),
        ("current", "bf16"),
    ]


def test_the_summary_takes_medians_over_rounds_and_keeps_each_rounds_ratio():
    bench = load_benchmark()
    rounds = [
        {"ms": {"baseline/float32": 10.0, "current/float32": 5.0}},
        {"ms": {"baseline/float32": 14.0, "current/float32": 8.0}},
        {"ms": {"baseline/float32": 12.0, "current/float32": 4.0}},
    ]
    entry = bench.summarise({"batch": 8, "rounds": rounds})
    assert entry["median_ms"] == {"baseline/float32": 12.0, "current/float32": 5.0}
    assert entry["ratio"] == {"current/float32": pytest.approx(12.0 / 5.0)}
    assert entry["per_second"] == {
        "baseline/float32": pytest.approx(8 / 0.012),
        "current/float32": pytest.approx(8 / 0.005),
    }
    assert entry["round_ratios"]["current/float32"] == pytest.approx([2.0, 1.75, 3.0])
    # Two rounds: the median is their mean.
    entry = bench.summarise({"batch": 8, "rounds": rounds[:2]})
    assert entry["median_ms"]["baseline/float32"] == pytest.approx(12.0)
    assert entry["ratio"]["current/float32"] == pytest.approx(12.0 / 6.5)


def test_an_unknown_baseline_is_refused_with_what_to_do(tmp_path):
    if not in_git_checkout():
        pytest.skip("needs a git checkout")
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--baseline", "no-such-commit-xyz",
         "--output", str(tmp_path / "out.json")],
        capture_output=True, text=True, env=ENV, timeout=300,
    )  # fmt: skip
    assert proc.returncode != 0
    assert "--baseline 'no-such-commit-xyz': not a commit of this repository" in (
        proc.stderr
    )
    assert "git log" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "out.json").exists()
