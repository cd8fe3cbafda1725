"""One line describing the machine a benchmark or run happened on."""

import os
import platform
import sys


def accelerators():
    """Names of the GPUs/TPUs the loaded backends see (``[]`` for none).

    Only backends already imported are asked, so describing the machine never
    imports TensorFlow or JAX by itself."""
    names = []
    if "jax" in sys.modules:
        try:
            devices = sys.modules["jax"].devices()
            names = [d.device_kind for d in devices if d.platform != "cpu"]
        except Exception:  # noqa: BLE001 - a broken plugin must not break a log line
            names = []
    if not names and "tensorflow" in sys.modules:
        try:
            tf = sys.modules["tensorflow"]
            for device in tf.config.list_physical_devices("GPU"):
                details = tf.config.experimental.get_device_details(device)
                names.append(details.get("device_name", device.name))
        except Exception:  # noqa: BLE001
            pass
    return names


def describe():
    cpu = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    cores = (
        len(os.sched_getaffinity(0))
        if hasattr(os, "sched_getaffinity")
        else os.cpu_count()
    )
    # The same model name ("AMD EPYC") covers CPUs with and without AVX-512,
    # which changes every kernel's speed: name the widest vector extension.
    flags = cpu_flags()
    if "avx512f" in flags:
        simd = "AVX-512" + (" with BF16" if "avx512_bf16" in flags else "")
    elif "avx2" in flags:
        simd = "AVX2"
    else:
        simd = None
    if simd:
        cpu = f"{cpu} ({simd})"
    found = accelerators()
    if found:
        kinds = sorted(set(found))
        accel = ", ".join(f"{found.count(k)} x {k}" for k in kinds)
    else:
        accel = "no GPU"
    return f"{cpu}, {cores} cores, {accel}" if cores else f"{cpu}, {accel}"


def cpu_flags():
    """The SIMD extensions of this CPU that matter for kernel choice
    (e.g. ``["avx2", "fma"]``), from /proc/cpuinfo; [] where unknown."""
    wanted = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16")
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return [w for w in wanted if w in flags]
    except OSError:
        pass
    return []


def busy_fraction(seconds=1.0):
    """Fraction of all CPU time used by anything during ``seconds`` (from
    /proc/stat), or None where unavailable: a benchmark records it to show
    that nothing else ran while it measured."""
    import time

    def read():
        with open("/proc/stat") as f:
            values = [int(v) for v in f.readline().split()[1:]]
        idle = values[3] + (values[4] if len(values) > 4 else 0)
        return idle, sum(values)

    try:
        idle0, total0 = read()
        time.sleep(seconds)
        idle1, total1 = read()
    except (OSError, ValueError, IndexError):
        return None
    total = total1 - total0
    return None if total <= 0 else 1.0 - (idle1 - idle0) / total
