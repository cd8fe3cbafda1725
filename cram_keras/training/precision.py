"""The dtype policy a model is built and trained under (``--dtype-policy``)."""

import contextlib
import os

import keras


@contextlib.contextmanager
def dtype_policy_scope(config):
    """Builds and trains under ``config.dtype_policy`` where the experiment
    has that setting (e.g. ``"mixed_bfloat16"``); restores the global policy
    afterwards."""
    policy = getattr(config, "dtype_policy", None)
    if policy is None:
        yield
        return
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(policy)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


# The flags of /proc/cpuinfo that mean bfloat16 instructions.
BFLOAT16_FLAGS = ("avx512_bf16", "amx_bf16")


def emulated_bfloat16_note(policy, flags=None, accelerators=None, max_isa=None):
    """The one line a run under ``policy`` logs where bfloat16 has no
    instructions of its own: on a CPU alone (no GPU or TPU visible) without
    AVX512_BF16 and AMX, or with oneDNN limited to an instruction set
    without them (``ONEDNN_MAX_CPU_ISA``). None otherwise, also where the
    CPU's flags cannot be read. ``flags``, ``accelerators``, ``max_isa``:
    this machine's unless given."""
    from cram_keras import platform_info

    if policy != "mixed_bfloat16":
        return None
    if accelerators is None:
        accelerators = platform_info.accelerators()
    if accelerators:
        return None
    flags = platform_info.cpu_flags() if flags is None else flags
    if max_isa is None:
        max_isa = os.environ.get("ONEDNN_MAX_CPU_ISA", "ALL")
    limited = max_isa.upper() != "ALL" and not any(
        word in max_isa.upper() for word in ("BF16", "AMX")
    )
    if not flags or (any(f in flags for f in BFLOAT16_FLAGS) and not limited):
        return None
    why = (
        f"with oneDNN limited to {max_isa} (ONEDNN_MAX_CPU_ISA)"
        if limited and any(f in flags for f in BFLOAT16_FLAGS)
        else "on a CPU without bfloat16 instructions (no AVX512_BF16 or AMX)"
    )
    return (
        f"note: mixed_bfloat16 {why}: bfloat16 is emulated here and trains "
        "slower than float32 (docs/speed.md has a measurement); "
        "--dtype-policy float32 is faster on this machine."
    )
