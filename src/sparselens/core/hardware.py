"""What the hardware computes fast: whether bfloat16 matrix products are native here.

CPUs differ: with AMX-BF16 or AVX-512-BF16 a bf16 GEMM is about twice as fast as float32; on a
CPU without them (an AVX2-only AMD EPYC, say) bf16 is emulated and many times slower than
float32 (measured: the embedded model's harvest ran at ~170 tokens/s in bfloat16 on such a
CPU). So every "auto" dtype in sparselens asks this module, once, instead of assuming.
"""

from __future__ import annotations

import functools
from pathlib import Path

import torch

CPU_BF16_FLAGS = ("amx_bf16", "avx512_bf16")
"""/proc/cpuinfo flags of x86 CPUs with native bfloat16 dot products."""


def fast_bfloat16(device: torch.device) -> str | None:
    """Why `device` runs bfloat16 GEMMs natively (a short reason), or None if it does not."""
    if device.type == "cuda":
        if torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation=False):
            return f"{torch.cuda.get_device_name(device)} supports bfloat16"
        return None
    if device.type == "cpu":
        flags = cpu_flags()
        found = [flag for flag in CPU_BF16_FLAGS if flag in flags]
        if found:
            return f"this CPU has {' and '.join(found)}"
        if "AMX" in torch.backends.cpu.get_cpu_capability().upper():
            return "this CPU has AMX"
    return None


@functools.cache
def cpu_flags() -> frozenset[str]:
    """The CPU feature flags of the first processor in /proc/cpuinfo (empty off Linux)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return frozenset(value.split())
    return frozenset()


def auto_dtype(name: str, device: str | torch.device) -> str:
    """`name` itself, or for ``"auto"``: bfloat16 where `device` has native bf16 GEMMs, else
    float32 (where bf16 would be emulated and slower)."""
    if name != "auto":
        return name
    return "bfloat16" if fast_bfloat16(torch.device(device)) else "float32"
