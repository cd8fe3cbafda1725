"""--strategy multiworker: two worker processes on 127.0.0.1 (TF_CONFIG)
train one smoke run together; both exit 0, only the chief writes the run,
and the two workers' final weights are identical."""

import json
import os
import socket
import subprocess
import sys

import keras
import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _free_ports(n):
    sockets, ports = [], []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        sockets.append(s)
        ports.append(s.getsockname()[1])
    for s in sockets:
        s.close()
    return ports


@pytest.mark.slow
def test_two_local_workers_train_the_same_weights(tmp_path):
    ports = _free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    out = tmp_path / "run"
    procs = []
    for index in range(2):
        env = dict(
            os.environ,
            KERAS_BACKEND="tensorflow",
            TF_CPP_MIN_LOG_LEVEL="2",
            TF_CONFIG=json.dumps(
                {"cluster": cluster, "task": {"type": "worker", "index": index}}
            ),
        )
        procs.append(
            subprocess.Popen(
                [
                    sys.executable,
                    os.path.join(ROOT, "train_rnn_spn.py"),
                    "--smoke",
                    "--model",
                    "ffn_spn",
                    "--strategy",
                    "multiworker",
                    "--set",
                    "n_train=32",
                    "--output-dir",
                    str(out),
                ],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env=env,
                cwd=ROOT,
            )
        )
    results = []
    for proc in procs:
        try:
            stdout, stderr = proc.communicate(timeout=600)
        except subprocess.TimeoutExpired:
            for p in procs:
                p.kill()
            raise
        results.append((proc.returncode, stdout, stderr))
    for code, stdout, stderr in results:
        assert code == 0, stdout[-2000:] + stderr[-4000:]

    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["distribution"] == {
        "strategy": "multiworker",
        "replicas": 2,
        "workers": 2,
    }
    # The chief wrote the run; the other worker only its final weights.
    assert (out / "model.keras").exists() and (out / "checkpoints").is_dir()
    import cram_keras.models  # noqa: F401

    chief = keras.models.load_model(out / "model.keras", compile=False)
    other = keras.models.clone_model(chief)
    other.load_weights(out / "workers" / "worker-1" / "final.weights.h5")
    for a, b in zip(chief.weights, other.weights, strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
