"""benchmarks/gpu_speed.py, the sampler and the RNN-SPN step on JAX against
torch on the same device, checked here on the CPU with --smoke: it runs
without TensorFlow's sampler kernel, its outputs and gradients agree with
torch's, the file holds every timing and a profiler trace per shape, and
the speed page renders a GPU file as a table (a smoke or GPU-less file is
not shown there)."""

import importlib
import importlib.util
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tarfile

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
SCRIPT = REPO / "benchmarks" / "gpu_speed.py"


def render_modules():
    spec = importlib.util.spec_from_file_location(
        "render_docs", REPO / "tools" / "render_docs.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return importlib.import_module("render.speed"), importlib.import_module(
        "render.sources"
    )


@pytest.mark.slow
def test_smoke_run_agrees_with_torch_and_writes_every_timing(tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("jax")
    out = tmp_path / "gpu_speed.json"
    env = dict(os.environ, KERAS_BACKEND="jax", TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            "--smoke",
            "--output",
            str(out),
            "--profile",
            str(tmp_path / "traces"),
        ],  # fmt: skip
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "tensorflow" not in proc.stdout.lower()
    result = json.loads(out.read_text())
    assert result["smoke"] and result["backend"] == "jax"
    assert set(result["sampler"]) == {"rnn_spn", "cram"}
    for row in result["sampler"].values():
        assert set(row["agreement"]) == {"output", "grad_images", "grad_params"}
        assert max(row["agreement"].values()) < 1e-4, row["agreement"]
        for key in ("ours", "torch", "ours_forward", "torch_forward"):
            assert row["ms"][key] > 0
        assert row["ratio"] == pytest.approx(row["ms"]["ours"] / row["ms"]["torch"])
    # One profiler trace of ours per shape, with the XSpace protobuf in it.
    for name, row in result["sampler"].items():
        assert row["trace"] == str(tmp_path / "traces" / f"jax_trace_{name}.tar.gz")
        with tarfile.open(row["trace"]) as tar:
            assert any(n.endswith(".xplane.pb") for n in tar.getnames())
    training = result["training"]["rnn_spn"]
    assert training["ms"]["ours"] > 0 and training["ms"]["torch"] > 0
    speed, _ = render_modules()
    text = speed.gpu_speed(result)
    assert "sampler, RNN-SPN shape: 4 x 20x20x1 -> 10x10, affine" in text
    assert "RNN-SPN, d = 2 training step, batch 4" in text


def test_the_speed_page_shows_a_gpu_file_and_ignores_a_smoke_one(tmp_path, monkeypatch):
    speed, sources = render_modules()
    results = tmp_path / "benchmarks" / "results"
    shutil.copytree(REPO / "benchmarks" / "results", results)
    monkeypatch.setattr(sources, "REPO", tmp_path)
    monkeypatch.setattr(sources, "RESULTS", results)
    shape = {"batch": 64, "input": [32, 32, 3], "output": [16, 16]}
    row = {
        "shape": {**shape, "transform": "attention"},
        "ms": {"ours": 0.2, "torch": 0.1, "ours_forward": 0.05, "torch_forward": 0.04},
        "ratio": 2.0,
        "forward_ratio": 1.25,
        "backward_ratio": 2.5,
        "agreement": {"output": 1e-7, "grad_images": 2e-7, "grad_params": 3e-6},
    }
    result = {
        "command": "python benchmarks/gpu_speed.py --output benchmarks/results/gpu_speed.json",
        "date": "2026-12-06T10:00:00+00:00",
        "hardware": "AMD EPYC, 16 cores, 1 x NVIDIA H100 80GB HBM3",
        "gpu": "NVIDIA H100 80GB HBM3",
        "versions": {"jax": "0.11.2", "keras": "3.15.1", "torch": "2.11.0"},
        "backend": "jax",
        "protocol": "5 warm-up calls, then 6 alternating rounds",
        "smoke": False,
        "sampler": {"cram": row},
        "training": {
            "rnn_spn": {"batch": 100, "ms": {"ours": 9.0, "torch": 6.0}, "ratio": 1.5}
        },
    }
    (results / "gpu_speed.json").write_text(json.dumps(result))
    text = speed.speed_gpu("docs")
    assert "| sampler, CRAM shape: 64 x 32x32x3 -> 16x16, attention | 0.200 ms" in text
    assert "**2.00x** | 1.25x / 2.50x | 3.0e-06 |" in text
    assert (
        "| RNN-SPN, d = 2 training step, batch 100 | 9.0 ms | 6.0 ms | **1.50x**"
        in text
    )
    assert "Device: NVIDIA H100 80GB HBM3" in text
    assert "gpu_speed.json" in text  # the source line
    result["smoke"] = True
    (results / "gpu_speed.json").write_text(json.dumps(result))
    assert "sampler, CRAM shape" not in speed.speed_gpu("docs")
