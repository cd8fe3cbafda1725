"""Runs the sampler, SpatialTransformer and CRAM encoder tests again under
KERAS_BACKEND=jax, and checks what only a JAX process shows: a tiny
CRAMClassifier fits with its clue loss as on TensorFlow (the inpainter:
tests/models/test_inpainting_backends.py).

Keras picks its backend once per process, so the JAX runs are subprocesses.
Inside the first, `test_backend_matches_environment` (in both test files)
asserts that Keras really runs on JAX; this test checks that they ran and
passed. The others import this module in a JAX subprocess and call
`jax_main`.
"""

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
from testing import TINY_ENCODER

pytest.importorskip("jax")

TESTS = pathlib.Path(__file__).parent
FILES = [
    TESTS / "ops",
    TESTS / "layers" / "test_spatial_transformer.py",
    TESTS / "layers" / "test_cram_layers.py",
    TESTS / "models" / "test_cram.py",
]
JAX_ENV = {**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu"}


@pytest.mark.slow
def test_sampler_and_layer_tests_pass_on_jax():
    result = subprocess.run(
        # One process (-n 0): JAX compiles each primitive once per process, and
        # two inner workers inside an outer one would oversubscribe the cores.
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-rA",
            "-n",
            "0",
            "-p",
            "no:cacheprovider",
        ]
        + [str(f) for f in FILES],
        cwd=TESTS.parent,
        # Without the run's shared compilation cache: this process compiles
        # thousands of small programs that no other process runs, and
        # writing each one out cost it a tenth of its time.
        env={**JAX_ENV, "JAX_ENABLE_COMPILATION_CACHE": "false"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    for name in ("ops/test_sampling.py", "layers/test_spatial_transformer.py"):
        assert f"PASSED tests/{name}::test_backend_matches_environment" in output, (
            output
        )


# === A tiny CRAMClassifier fit on JAX ===


def cram_data():
    rng = np.random.default_rng(0)
    images = rng.random((8, 16, 16, 1)).astype("float32")
    clue = np.zeros_like(images)
    clue[:, 4:12, 2:10] = 1.0
    labels = rng.integers(0, 3, size=(8,))
    return [images, clue], labels


def tiny_cram(weights=None):
    import keras

    from cram_keras.models.cram import CRAMClassifier, CRAMEncoder

    keras.utils.set_random_seed(0)
    model = CRAMClassifier(
        CRAMEncoder(**TINY_ENCODER),
        num_classes=3,
        decoder_units=(5, 4),
        clue_weight=0.5,
    )
    # Variables only: an eager forward pass would compile every primitive on JAX.
    model.build([(None, 16, 16, 1), (None, 16, 16, 1)])
    if weights is not None:
        model.set_weights(weights)
    model.compile(
        optimizer=keras.optimizers.SGD(0.1, momentum=0.5),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=keras.backend.backend() == "jax",
    )
    return model


def fit_cram(weights):
    """Two fit steps (batches of 4) from `weights`: final weights, last logs."""
    model = tiny_cram(weights)
    x, y = cram_data()
    history = model.fit(x, y, batch_size=4, epochs=1, shuffle=False, verbose=0)
    weights = [np.asarray(w) for w in model.get_weights()]
    return weights, {k: float(v[-1]) for k, v in history.history.items()}


def jax_main(directory):
    import keras

    assert keras.backend.backend() == "jax", keras.backend.backend()
    directory = pathlib.Path(directory)
    with np.load(directory / "initial.npz") as f:
        initial = [f[f"arr_{i}"] for i in range(len(f.files))]
    weights, logs = fit_cram(initial)
    np.savez(directory / "cram.npz", *weights)
    (directory / "out.json").write_text(json.dumps({"cram_logs": logs}))


@pytest.fixture(scope="module")
def jax_run(tmp_path_factory):
    import keras

    directory = tmp_path_factory.mktemp("jax")
    initial = [np.asarray(w) for w in tiny_cram().get_weights()]
    np.savez(directory / "initial.npz", *initial)
    code = (
        f"import sys; sys.path.insert(0, {str(TESTS)!r}); "
        f"import test_jax_backend; test_jax_backend.jax_main({str(directory)!r})"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=TESTS.parent,
        env=JAX_ENV,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    with np.load(directory / "cram.npz") as f:
        weights = [f[f"arr_{i}"] for i in range(len(f.files))]
    out = json.loads((directory / "out.json").read_text())
    assert keras.backend.backend() == "tensorflow"
    return initial, weights, out


@pytest.mark.slow
def test_cram_classifier_fits_with_the_clue_loss_on_jax_as_on_tensorflow(jax_run):
    initial, on_jax, out = jax_run
    # The same two steps on TensorFlow, whose loss and clue loss
    # tests/models/test_cram.py checks against independent references.
    on_tf, tf_logs = fit_cram(initial)
    moved = max(float(np.abs(a - b).max()) for a, b in zip(on_tf, initial, strict=True))
    worst = max(float(np.abs(a - b).max()) for a, b in zip(on_jax, on_tf, strict=True))
    # Tolerance: 1e-4 of the largest weight change (float32, XLA vs TF).
    assert moved > 1e-2 and worst < 1e-4 * moved, (worst, moved)
    jax_logs = out["cram_logs"]
    assert set(jax_logs) == set(tf_logs) == {"loss", "clue_loss"}
    for key, value in tf_logs.items():
        assert jax_logs[key] == pytest.approx(value, rel=1e-5), key
    assert 0.0 < jax_logs["clue_loss"] < 1.0
