"""The lines a run logs where its setting trains slowly on this machine
(`cram_keras.training.hardware_notes`); that the runner logs them:
tests/experiments/test_runner.py."""

import pytest

from cram_keras.training.hardware_notes import bfloat16_note, run_notes

OLD_CPU = ["avx2", "fma", "avx512f", "avx512_vnni"]
NEW_CPU = [*OLD_CPU, "avx512_bf16"]


@pytest.mark.parametrize(
    "policy, backend, flags, max_isa, says",
    [
        ("mixed_bfloat16", "tensorflow", OLD_CPU, "ALL", "without bfloat16 instr"),
        ("mixed_bfloat16", "tensorflow", ["avx2", "fma"], "ALL", "where it is emul"),
        ("mixed_bfloat16", "tensorflow", NEW_CPU, "ALL", None),
        ("mixed_bfloat16", "tensorflow", ["avx2", "amx_bf16"], "ALL", None),
        # oneDNN held below the CPU's bfloat16 instructions emulates them too.
        ("mixed_bfloat16", "tensorflow", NEW_CPU, "AVX512_CORE_VNNI", "limited to"),
        ("mixed_bfloat16", "tensorflow", NEW_CPU, "avx512_core_bf16", None),
        ("mixed_bfloat16", "tensorflow", NEW_CPU, "AVX512_CORE_AMX", None),
        # XLA's CPU backend is slow in bfloat16 whatever the CPU has.
        ("mixed_bfloat16", "jax", NEW_CPU, "ALL", "on JAX without a GPU"),
        ("mixed_bfloat16", "tensorflow", [], "ALL", None),  # flags unknown
        ("float32", "tensorflow", OLD_CPU, "ALL", None),
        ("float32", "jax", OLD_CPU, "ALL", None),
        (None, "tensorflow", OLD_CPU, "ALL", None),
    ],
)
def test_the_bfloat16_note_names_its_cause(policy, backend, flags, max_isa, says):
    note = bfloat16_note(policy, backend, flags, max_isa)
    if says is None:
        assert note is None
    else:
        assert note.startswith("note: mixed_bfloat16 ") and says in note
        assert "--dtype-policy float32 is faster" in note


def test_the_run_notes():
    bf16_jax = run_notes("mixed_bfloat16", "jax", NEW_CPU, [], "ALL")
    assert [n.split(":")[1].strip() for n in bf16_jax] == [
        "JAX without a GPU",
        "mixed_bfloat16 on JAX without a GPU, whose CPU backend computes it slowly",
    ]
    assert "KERAS_BACKEND=tensorflow" in bf16_jax[0]
    assert run_notes("float32", "jax", NEW_CPU, [], "ALL") == bf16_jax[:1]
    assert run_notes("float32", "tensorflow", OLD_CPU, [], "ALL") == []
    assert len(run_notes("mixed_bfloat16", "tensorflow", OLD_CPU, [], "ALL")) == 1
    # A GPU or TPU computes: nothing to say.
    for backend in ("jax", "tensorflow"):
        assert run_notes("mixed_bfloat16", backend, OLD_CPU, ["NVIDIA H100"]) == []
