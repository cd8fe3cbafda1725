"""Runs the sampler, SpatialTransformer and CRAM encoder tests again under
KERAS_BACKEND=jax.

Keras picks its backend once per process, so the JAX run is a subprocess.
Inside it, `test_backend_matches_environment` (in both test files) asserts
that Keras really runs on JAX; this test checks that they ran and passed.
"""

import os
import pathlib
import subprocess
import sys

import pytest

pytest.importorskip("jax")

TESTS = pathlib.Path(__file__).parent
FILES = [
    TESTS / "ops",
    TESTS / "layers" / "test_spatial_transformer.py",
    TESTS / "layers" / "test_cram_layers.py",
    TESTS / "models" / "test_cram.py",
]


@pytest.mark.slow
def test_sampler_and_layer_tests_pass_on_jax():
    env = {**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu"}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rA", "-p", "no:cacheprovider"]
        + [str(f) for f in FILES],
        cwd=TESTS.parent,
        env=env,
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
