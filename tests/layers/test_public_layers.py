"""The public layers of `cram_keras.layers` (and the blocks they are built
from) pass `layer_testing.run_layer_test`: build, symbolic and eager shapes,
serialisation and `.keras` round trips, one training step, and mixed
precision. On TensorFlow here; `test_layer_contract_on_jax` runs the same
cases in one KERAS_BACKEND=jax process. Also: the package exports, the
registered names, and the docstring examples."""

import doctest
import os
import pathlib
import subprocess
import sys

import keras
import numpy as np
import pytest
from layer_testing import run_layer_test

import cram_keras.layers
from cram_keras.layers import (
    ContextNetwork,
    CoreNetwork,
    GlimpseNetwork,
    LocalizationNetwork,
    SpatialTransformer,
)
from cram_keras.layers.conv_blocks import MLP, ConvStack

PUBLIC = [
    ContextNetwork,
    CoreNetwork,
    GlimpseNetwork,
    LocalizationNetwork,
    SpatialTransformer,
]

# name: (layer class, constructor kwargs, input shape(s), output shape(s),
#        extra run_layer_test arguments). One case per public layer, with
# non-default arguments and tiny sizes (JAX compiles every case).
CASES = {
    "SpatialTransformer-attention": (
        SpatialTransformer,
        dict(transform="attention", output_size=(3, 4)),
        [(2, 5, 6, 1), (2, 3)],
        (2, 3, 4, 1),
        {},
    ),
    "GlimpseNetwork": (
        GlimpseNetwork,
        dict(filters=(2, 3), units=4),
        [(2, 6, 6, 1), (2, 3)],
        (2, 4),
        # 2 x (conv kernel, BN gamma, beta) + what and where (kernel, bias);
        # 2 x BN moving mean and variance.
        dict(expected_num_trainable_weights=10, expected_num_non_trainable_weights=4),
    ),
    "ContextNetwork": (
        ContextNetwork,
        dict(filters=(2, 3), units=4, state_units=5, downsample=2),
        [(2, 8, 8, 1), (2, 8, 8, 1)],
        [(2, 5), (2, 5)],
        # CNNs: 2 x 2 x 3; heads: 2 x (kernel, gamma, beta, kernel, bias).
        dict(expected_num_trainable_weights=22, expected_num_non_trainable_weights=12),
    ),
    "LocalizationNetwork": (
        LocalizationNetwork,
        dict(
            filters=(2,),
            kernel_size=3,
            units=4,
            min_scale=0.1,
            initial_scale=0.3,
            steps=3,
            layout="spread",
        ),
        [(2, 6), (2, 5)],  # [features, r2]
        (2, 3),
        # The head's kernel starts at zero, so the first step's gradient
        # reaches only the head and the per-step bias.
        dict(call_kwargs={"step": 1}, unchanged_by_first_step=("state_mlp", "hidden")),
    ),
    "CoreNetwork": (
        CoreNetwork,
        dict(units=3),
        [(2, 4), [(2, 3), (2, 3)], [(2, 3), (2, 3)]],
        ((2, 3), (2, 3), [(2, 3), (2, 3)], [(2, 3), (2, 3)]),
        # Two LSTM cells: kernel, recurrent kernel, bias each.
        dict(expected_num_trainable_weights=6, expected_num_non_trainable_weights=0),
    ),
}
# Another transform, and the blocks the CRAM networks and models are built
# from: on TensorFlow only (on JAX the blocks run inside the networks above,
# and the affine transform in the transformer's own tests).
MORE_CASES = {
    "SpatialTransformer-affine": (
        SpatialTransformer,
        dict(
            transform="affine",
            downsample_factor=1.2,
            padding="border",
            align_corners=True,
        ),
        [(2, 5, 6, 1), (2, 6)],
        (2, 4, 5, 1),  # int(5 / 1.2), int(6 / 1.2)
        {},
    ),
    "ConvStack": (
        ConvStack,
        dict(filters=(2, 3), kernel_size=3, strides=1, pool_size=3, pool_strides=2),
        (2, 7, 7, 1),
        (2, 2 * 2 * 3),  # 7 -> 4 -> 2
        {},
    ),
    "MLP": (MLP, dict(units=(4, 3), activate_last=True), (2, 5), (2, 3), {}),
}


@pytest.mark.parametrize("case", list(CASES))
def test_layer_contract(case):
    layer_cls, init_kwargs, input_shape, output_shape, extra = CASES[case]
    run_layer_test(layer_cls, init_kwargs, input_shape, output_shape, **extra)


@pytest.mark.parametrize("case", list(MORE_CASES))
def test_more_layers_pass_the_layer_checks(case):
    layer_cls, init_kwargs, input_shape, output_shape, extra = MORE_CASES[case]
    run_layer_test(layer_cls, init_kwargs, input_shape, output_shape, **extra)


def test_layer_contract_backend_matches_environment():
    assert keras.backend.backend() == os.environ["KERAS_BACKEND"]


@pytest.mark.slow
@pytest.mark.skipif(
    keras.backend.backend() != "tensorflow", reason="starts the JAX run"
)
def test_layer_contract_on_jax():
    pytest.importorskip("jax")
    tests = pathlib.Path(__file__).resolve().parents[1]
    this = pathlib.Path(__file__).relative_to(tests.parent).as_posix()
    result = subprocess.run(
        # One process for all cases (-n 0): JAX compiles each primitive once
        # per process.
        [sys.executable, "-m", "pytest", "-q", "-rA", "-n", "0"]
        + ["-p", "no:cacheprovider", "-k", "contract and not on_jax", this],
        cwd=tests.parent,
        env={**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-6000:]
    passed = [f"PASSED {this}::test_layer_contract[{case}]" for case in CASES]
    passed.append(f"PASSED {this}::test_layer_contract_backend_matches_environment")
    missing = [line for line in passed if line not in output]
    assert not missing, (missing, output[-3000:])


# === Exports, registration, documentation ===


def test_public_layers_are_exported_and_registered():
    assert sorted(cram_keras.layers.__all__) == sorted(c.__name__ for c in PUBLIC)
    for layer_cls in PUBLIC:
        assert getattr(cram_keras.layers, layer_cls.__name__) is layer_cls
        name = f"cram_keras>{layer_cls.__name__}"
        assert keras.saving.get_registered_name(layer_cls) == name
        assert keras.saving.get_registered_object(name) is layer_cls


@pytest.mark.parametrize("layer_cls", PUBLIC, ids=lambda c: c.__name__)
def test_docstring_documents_arguments_shapes_and_an_example(layer_cls):
    doc = layer_cls.__doc__
    sections = [s.strip() for s in doc.splitlines() if s.strip().endswith(":")]
    for section in ("Args:", "Call arguments:", "Example:"):
        assert section in sections, section
    assert "Returns:" in sections or "Output shape:" in sections
    # Every constructor argument is documented.
    import inspect

    for name in inspect.signature(layer_cls.__init__).parameters:
        if name not in ("self", "kwargs"):
            assert f"\n        {name}: " in doc, name


# Examples that run as written (the localisation network's shows no output).
EXAMPLES = [ContextNetwork, CoreNetwork, GlimpseNetwork, ConvStack, MLP]


@pytest.mark.parametrize("layer_cls", EXAMPLES, ids=lambda c: c.__name__)
def test_docstring_example_runs_as_written(layer_cls):
    [test] = doctest.DocTestFinder(recurse=False).find(
        layer_cls, globs={layer_cls.__name__: layer_cls, "np": np}
    )
    assert test.examples, "no example"
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    runner.run(test)
    assert runner.failures == 0, f"{runner.failures} failing example lines"
