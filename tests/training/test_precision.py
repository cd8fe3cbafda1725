"""The note a run under mixed_bfloat16 logs where bfloat16 is emulated
(`cram_keras.training.precision.emulated_bfloat16_note`); that the runner
logs it: tests/experiments/test_runner.py."""

import pytest

from cram_keras.training.precision import emulated_bfloat16_note

OLD_CPU = ["avx2", "fma", "avx512f", "avx512_vnni"]
NEW_CPU = [*OLD_CPU, "avx512_bf16"]


@pytest.mark.parametrize(
    "policy, flags, accelerators, max_isa, says",
    [
        ("mixed_bfloat16", OLD_CPU, [], "ALL", "without bfloat16 instructions"),
        ("mixed_bfloat16", ["avx2", "fma"], [], "ALL", "without bfloat16"),
        ("mixed_bfloat16", NEW_CPU, [], "ALL", None),
        ("mixed_bfloat16", ["avx2", "amx_bf16"], [], "ALL", None),
        # oneDNN held below the CPU's bfloat16 instructions emulates them too.
        ("mixed_bfloat16", NEW_CPU, [], "AVX512_CORE_VNNI", "limited to"),
        ("mixed_bfloat16", NEW_CPU, [], "avx512_core_bf16", None),
        ("mixed_bfloat16", NEW_CPU, [], "AVX512_CORE_AMX", None),
        # A GPU computes the bfloat16; unknown flags say nothing.
        ("mixed_bfloat16", OLD_CPU, ["NVIDIA H100"], "ALL", None),
        ("mixed_bfloat16", [], [], "ALL", None),
        ("float32", OLD_CPU, [], "ALL", None),
        (None, OLD_CPU, [], "ALL", None),
    ],
)
def test_the_note_names_the_cause_where_bfloat16_is_emulated(
    policy, flags, accelerators, max_isa, says
):
    note = emulated_bfloat16_note(policy, flags, accelerators, max_isa)
    if says is None:
        assert note is None
    else:
        assert note.startswith("note: mixed_bfloat16 ") and says in note
        assert "--dtype-policy float32" in note
