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

import torch

from sparselens.core.hardware import fast_bfloat16
from sparselens.training.config import TrainConfig

__all__ = ["as_trained", "autocast_context", "fast_bfloat16", "resolve_autocast"]


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
