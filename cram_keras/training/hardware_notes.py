"""The lines a run logs when it starts where its setting is known to train
slowly on this machine: `mixed_bfloat16` where bfloat16 is emulated, and
JAX on a CPU. Each says why and what is faster; the run goes on either way
(docs/running.md#backends and docs/speed.md have the measurements)."""

import os

from cram_keras import platform_info

# The flags of /proc/cpuinfo that mean bfloat16 instructions.
BFLOAT16_FLAGS = ("avx512_bf16", "amx_bf16")


def run_notes(policy, backend, flags=None, accelerators=None, max_isa=None):
    """The notes for a run under dtype ``policy`` on ``backend``: a list of
    lines, empty where nothing is slow. ``flags`` (this CPU's, from
    /proc/cpuinfo), ``accelerators`` (the GPUs and TPUs the backends see)
    and ``max_isa`` (``ONEDNN_MAX_CPU_ISA``): this machine's unless given."""
    if accelerators is None:
        accelerators = platform_info.accelerators()
    if accelerators:
        return []
    notes = []
    if backend == "jax":
        notes.append(
            "note: JAX without a GPU: on a CPU TensorFlow trains these models "
            "faster (docs/running.md#backends has a measurement); "
            "KERAS_BACKEND=tensorflow is the faster choice on this machine."
        )
    note = bfloat16_note(policy, backend, flags, max_isa)
    if note:
        notes.append(note)
    return notes


def bfloat16_note(policy, backend, flags=None, max_isa=None):
    """The note for ``mixed_bfloat16`` on a CPU where it trains slower than
    float32: on JAX (XLA's CPU backend), and on TensorFlow where the CPU
    has no AVX512_BF16 or AMX or oneDNN is held below them
    (``ONEDNN_MAX_CPU_ISA``), so that oneDNN emulates bfloat16. None
    otherwise, also where the CPU's flags cannot be read. Call it for a run
    without a GPU or TPU (`run_notes`)."""
    if policy != "mixed_bfloat16":
        return None
    source = "docs/speed.md"
    if backend == "jax":
        why = "on JAX without a GPU, whose CPU backend computes it slowly"
        source = "docs/running.md#backends"
    else:
        flags = platform_info.cpu_flags() if flags is None else flags
        if max_isa is None:
            max_isa = os.environ.get("ONEDNN_MAX_CPU_ISA", "ALL")
        native = any(f in flags for f in BFLOAT16_FLAGS)
        limited = max_isa.upper() != "ALL" and not any(
            word in max_isa.upper() for word in ("BF16", "AMX")
        )
        if not flags or (native and not limited):
            return None
        why = (
            f"with oneDNN limited to {max_isa} (ONEDNN_MAX_CPU_ISA), which "
            "emulates bfloat16"
            if native
            else "on a CPU without bfloat16 instructions (no AVX512_BF16 or "
            "AMX), where it is emulated"
        )
    return (
        f"note: mixed_bfloat16 {why}: it trains slower than float32 here "
        f"({source} has a measurement); --dtype-policy float32 is faster on "
        "this machine."
    )
