"""Which precision the trainer computes in: bf16 autocast where the hardware makes it fast.

Under ``torch.autocast(dtype=bfloat16)`` the encoder GEMM and the weight-gradient sums run in
bfloat16 with float32 accumulation while parameters and Adam state stay float32. On hardware
with native bf16 matrix units that is about twice as fast at the same FVU (on a 2-core Sapphire
Rapids with AMX: 32.9k against 17.1k tok/s for a 9216-latent TopK SAE, docs/performance.md);
without them bf16 is emulated and slower than float32. So ``autocast="auto"`` (the default)
picks bfloat16 on CUDA devices that support it and on CPUs with AMX-BF16 or AVX-512-BF16, and
float32 elsewhere; ``autocast="float32"`` keeps everything in float32.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
from pathlib import Path

import torch

from sparselens.training.config import TrainConfig

CPU_BF16_FLAGS = ("amx_bf16", "avx512_bf16")
"""/proc/cpuinfo flags of x86 CPUs with native bfloat16 dot products."""


def fast_bfloat16(device: torch.device) -> str | None:
    """Why `device` runs bfloat16 GEMMs natively (a short reason), or None if it does not."""
    if device.type == "cuda":
        if torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation=False):
            return f"{torch.cuda.get_device_name(device)} supports bfloat16"
        return None
    if device.type == "cpu":
        flags = _cpu_flags()
        found = [flag for flag in CPU_BF16_FLAGS if flag in flags]
        if found:
            return f"this CPU has {' and '.join(found)}"
        if "AMX" in torch.backends.cpu.get_cpu_capability().upper():
            return "this CPU has AMX"
    return None


@functools.cache
def _cpu_flags() -> frozenset[str]:
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


def resolve_autocast(autocast: str, device: torch.device) -> tuple[str, str | None]:
    """``(dtype, note)``: "auto" becomes bfloat16 or float32 for `device`, with a line saying
    why (None when the user chose the dtype explicitly)."""
    if autocast != "auto":
        return autocast, None
    reason = fast_bfloat16(device)
    if reason is not None:
        return "bfloat16", (f"training under bfloat16 autocast ({reason}); "
                            "--autocast float32 trains in float32")
    return "float32", (f"training in float32 ({device.type} has no fast bfloat16 matrix unit); "
                       "--autocast bfloat16 forces bf16 autocast")


def as_trained(cfg: TrainConfig) -> TrainConfig:
    """`cfg` as the trainer records it: "auto" autocast resolved for its device. Compare this,
    not the options as given, with a saved run's config."""
    autocast, _ = resolve_autocast(cfg.autocast, torch.device(cfg.device))
    return dataclasses.replace(cfg, autocast=autocast)


def autocast_context(autocast: str, device: torch.device) -> contextlib.AbstractContextManager:
    """The context the loss runs in: torch.autocast, or nothing for float32."""
    if autocast == "float32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=getattr(torch, autocast))
