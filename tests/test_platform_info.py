"""`platform_info.describe`: the machine line every result file records names
the GPUs the loaded backend sees, and says "no GPU" only when there is none."""

import sys
import types

from cram_keras import platform_info


class _Device:
    def __init__(self, platform, kind):
        self.platform, self.device_kind = platform, kind


def _fake_jax(*devices):
    module = types.ModuleType("jax")
    module.devices = lambda: list(devices)
    return module


def _fake_tf(gpus):
    module = types.ModuleType("tensorflow")
    config = types.SimpleNamespace(
        list_physical_devices=lambda kind: (
            [
                types.SimpleNamespace(name=f"/physical_device:GPU:{i}")
                for i in range(len(gpus))
            ]
            if kind == "GPU"
            else []
        ),
        experimental=types.SimpleNamespace(
            get_device_details=lambda d: {"device_name": gpus[int(d.name[-1])]}
        ),
    )
    module.config = config
    return module


def test_jax_gpus_are_counted_by_kind(monkeypatch):
    monkeypatch.setitem(
        sys.modules,
        "jax",
        _fake_jax(
            _Device("gpu", "NVIDIA H200"),
            _Device("gpu", "NVIDIA H200"),
            _Device("gpu", "NVIDIA A100"),
        ),
    )
    line = platform_info.describe()
    assert line.endswith(", 1 x NVIDIA A100, 2 x NVIDIA H200"), line
    assert "no GPU" not in line


def test_cpu_only_backends_say_no_gpu(monkeypatch):
    monkeypatch.setitem(sys.modules, "jax", _fake_jax(_Device("cpu", "cpu")))
    monkeypatch.setitem(sys.modules, "tensorflow", _fake_tf([]))
    assert platform_info.describe().endswith(", no GPU")


def test_tensorflow_gpus_are_named(monkeypatch):
    monkeypatch.delitem(sys.modules, "jax", raising=False)
    monkeypatch.setitem(sys.modules, "tensorflow", _fake_tf(["NVIDIA H100"] * 2))
    assert platform_info.describe().endswith(", 2 x NVIDIA H100")


def test_a_broken_backend_does_not_break_the_line(monkeypatch):
    broken = types.ModuleType("jax")

    def devices():
        raise RuntimeError("plugin failed")

    broken.devices = devices
    monkeypatch.setitem(sys.modules, "jax", broken)
    monkeypatch.setitem(sys.modules, "tensorflow", _fake_tf([]))
    assert platform_info.describe().endswith(", no GPU")


def test_the_widest_vector_extension_is_named(monkeypatch):
    monkeypatch.setitem(sys.modules, "jax", _fake_jax(_Device("cpu", "cpu")))
    monkeypatch.delitem(sys.modules, "tensorflow", raising=False)
    for flags, label in (
        (["avx2", "fma", "avx512f", "avx512_bf16"], "(AVX-512 with BF16), "),
        (["avx2", "fma", "avx512f"], "(AVX-512), "),
        (["avx2", "fma"], "(AVX2), "),
    ):
        monkeypatch.setattr(platform_info, "cpu_flags", lambda flags=flags: flags)
        assert label in platform_info.describe()
    monkeypatch.setattr(platform_info, "cpu_flags", lambda: [])
    assert "AVX" not in platform_info.describe()
