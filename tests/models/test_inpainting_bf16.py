"""The inpainter under `mixed_bfloat16` (`--dtype-policy mixed_bfloat16`), on
TensorFlow here (CRAM encoder) and on JAX in a subprocess (the no-attention
encoder, whose step compiles faster): its networks compute in bfloat16
with float32 variables (batch-norm statistics and optimizer slots included),
every loss and the completed images are float32, a training step runs, and
from the same weights and batch one step's logged losses match a float32
step's to bfloat16's precision. The training script's option (a run that
stops after one epoch and resumes): tests/scripts/test_train_inpaint.py.

Tolerance: bfloat16 keeps 8 significant bits (relative rounding 2^-9, about
2e-3 per operation); through the encoder, generator and discriminators the
logged losses of these tiny networks move by at most 0.25 % (measured, both
backends); the bound is 2 % relative (absolute 0.01 for losses near 0).
"""

import argparse
import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parents[1]
LOSSES = (
    "g_loss", "recon_loss", "clue_loss", "adv_loss", "local_d_loss", "global_d_loss",
)  # fmt: skip
RTOL, ATOL = 2e-2, 1e-2


def build(policy, weights=None, encoder="cram"):
    """A tiny inpainter built and compiled under the dtype `policy`, with a
    CRAM encoder or ("cnn") the no-attention one."""
    import keras

    from cram_keras.models.cram import CRAMEncoder
    from cram_keras.models.inpainting import (
        CNNEncoder,
        CRAMInpainter,
        GlobalDiscriminator,
        InpaintingGenerator,
        LocalDiscriminator,
    )
    from cram_keras.training.precision import dtype_policy_scope

    with dtype_policy_scope(argparse.Namespace(dtype_policy=policy)):
        keras.utils.set_random_seed(0)
        if encoder == "cnn":
            network = CNNEncoder(units=16, filters=(4, 4, 4))
        else:
            network = CRAMEncoder(
                num_glimpses=1,
                glimpse_size=6,
                core_units=16,
                context_filters=(4,),
                context_units=8,
                localization_filters=(4,),
                localization_units=8,
                glimpse_filters=(4,),
                glimpse_units=8,
                min_scale=0.3,
            )
        model = CRAMInpainter(
            network,
            InpaintingGenerator(32, 1, filters=(8, 4, 4)),
            LocalDiscriminator(16, filters=(4, 4, 4, 4), units=8),
            GlobalDiscriminator(filters=(4, 4, 4), units=8),
            beta=0.5,
            warmup_steps=0,
        )
        model.build([(None, 32, 32, 1), (None, 32, 32, 1)])
        if weights is not None:
            model.set_weights(weights)
        model.compile(
            g_optimizer=keras.optimizers.Adam(1e-3),
            local_d_optimizer=keras.optimizers.Adam(1e-3),
            global_d_optimizer=keras.optimizers.Adam(1e-3),
            # One step: eager on TensorFlow (tracing costs more), compiled
            # on JAX (as the training script runs it).
            run_eagerly=keras.backend.backend() == "tensorflow",
            jit_compile=keras.backend.backend() == "jax",
        )
    return model


def data():
    from cram_keras.data.masks import random_rectangle_masks

    images = np.random.default_rng(1).random((4, 32, 32, 1)).astype("float32")
    return images, random_rectangle_masks(4, 32, 6, 12, seed=1)


def dtype_name(x):
    import keras

    return keras.backend.standardize_dtype(x.dtype)


def float_dtypes(variables):
    """The dtypes of the float variables (not counters or seeds)."""
    names = {dtype_name(v) for v in variables}
    return sorted(n for n in names if "float" in n)


def check(encoder="cram"):
    """Everything the tests assert, as JSON-able results, on this backend."""
    import keras
    from keras import ops

    images, masks = data()
    reference = build("float32", encoder=encoder)
    weights = reference.get_weights()
    model = build("mixed_bfloat16", weights, encoder=encoder)
    # One fit step of each from the same weights and batch.
    logged = {}
    for policy, step in (("float32", reference), ("mixed_bfloat16", model)):
        history = step.fit(images, masks, batch_size=4, epochs=1, verbose=0)
        logged[policy] = {k: float(v[-1]) for k, v in history.history.items()}
    logged["moved"] = float(
        max(
            np.abs(a - b).max()
            for a, b in zip(model.get_weights(), weights, strict=True)
        )
    )
    networks = (
        model.encoder,
        model.generator,
        model.local_discriminator,
        model.global_discriminator,
    )
    z = model.encoder([images, masks])
    results = {
        "backend": keras.backend.backend(),
        "logged": logged,
        "policies": sorted(
            {
                layer.dtype_policy.name
                for network in networks
                for layer in network._flatten_layers()
            }
        ),
        "variables": float_dtypes(model.variables),
        "optimizer_variables": float_dtypes(model.optimizer.variables),
        "z": dtype_name(z),
        "generated": dtype_name(model.generator(z)),
        "logits": dtype_name(model.global_discriminator(images)),
        # G(z) and the glimpses' tau (None without glimpses).
        "generate": [
            None if x is None else dtype_name(x) for x in model.generate(images, masks)
        ],
    }
    objectives, losses = model.compute_losses(
        ops.convert_to_tensor(images), ops.convert_to_tensor(masks)
    )
    results["objectives"] = sorted({dtype_name(v) for v in objectives.values()})
    results["losses"] = sorted({dtype_name(v) for v in losses.values()})
    # The completed image is float32 and keeps the pixels outside the hole.
    completed = model([images, masks])
    results["completed"] = dtype_name(completed)
    outside = masks[..., 0] < 0.5
    results["outside_exact"] = bool(
        np.array_equal(ops.convert_to_numpy(completed)[outside], images[outside])
    )
    return results


def jax_main(path):
    import keras

    assert keras.backend.backend() == "jax", keras.backend.backend()
    # The no-attention encoder: JAX compiles the step once per policy, and
    # the CRAM encoder's layers run under both policies on JAX in
    # tests/layers/test_public_layers.py.
    pathlib.Path(path).write_text(json.dumps(check(encoder="cnn")))


def assert_bf16_results(results):
    assert results["policies"] == ["mixed_bfloat16"], results["policies"]
    assert results["variables"] == ["float32"]
    assert results["optimizer_variables"] == ["float32"]
    assert results["z"] == results["generated"] == results["logits"] == "bfloat16"
    assert results["completed"] == "float32"
    generated, tau = results["generate"]
    assert generated == "float32" and tau in ("float32", None)
    assert results["objectives"] == results["losses"] == ["float32"]
    assert results["outside_exact"]
    f32, bf16 = results["logged"]["float32"], results["logged"]["mixed_bfloat16"]
    assert set(f32) == set(bf16) == set(LOSSES)
    for name in LOSSES:
        assert np.isfinite(bf16[name]), name
        assert bf16[name] == pytest.approx(f32[name], rel=RTOL, abs=ATOL), name
    assert results["logged"]["moved"] > 0


def test_mixed_bfloat16_step_on_tensorflow():
    import keras

    assert keras.backend.backend() == "tensorflow"
    assert_bf16_results(check())
    assert keras.config.dtype_policy().name == "float32"


@pytest.mark.slow
def test_mixed_bfloat16_step_on_jax(tmp_path):
    pytest.importorskip("jax")
    out = tmp_path / "jax.json"
    code = (
        f"import sys; sys.path.insert(0, {str(HERE)!r}); "
        "import test_inpainting_bf16 as t; "
        f"t.jax_main({str(out)!r})"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=dict(os.environ, KERAS_BACKEND="jax", JAX_PLATFORMS="cpu"),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = json.loads(out.read_text())
    assert results["backend"] == "jax"
    assert_bf16_results(results)


def test_float16_compute_is_refused_with_the_policies_that_work():
    import keras

    from cram_keras.models.inpainting import (
        CNNEncoder,
        CRAMInpainter,
        GlobalDiscriminator,
        InpaintingGenerator,
        LocalDiscriminator,
    )

    half = dict(dtype="mixed_float16")
    model = CRAMInpainter(
        CNNEncoder(units=8, filters=(4, 4, 4), **half),
        InpaintingGenerator(32, 1, filters=(8, 4, 4), **half),
        LocalDiscriminator(16, filters=(4, 4, 4, 4), units=8, **half),
        GlobalDiscriminator(filters=(4, 4, 4), units=8, **half),
    )
    model.build([(None, 32, 32, 1), (None, 32, 32, 1)])
    with pytest.raises(ValueError, match="float32 or mixed_bfloat16"):
        model.compile(
            g_optimizer=keras.optimizers.Adam(),
            local_d_optimizer=keras.optimizers.Adam(),
            global_d_optimizer=keras.optimizers.Adam(),
        )
