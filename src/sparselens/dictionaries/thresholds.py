"""Inference thresholds and firing rates estimated as running averages during training.

BatchTopK, Matryoshka and the Choice SAEs select latents using the whole batch while
training. At inference a token's codes must depend on that token alone, so those variants
estimate thresholds while training (a running average of the smallest activation the batch
selection kept) and apply them per token afterwards (Bussmann et al., "BatchTopK sparse
autoencoders", section 3). Estimates live in registered buffers so they are saved with the
checkpoint. NaN marks "not estimated yet".
"""

from __future__ import annotations

import torch
from torch import Tensor


@torch.no_grad()
def ema_update_(estimate: Tensor, observed: Tensor, decay: float) -> None:
    """In place: ``estimate <- decay * estimate + (1 - decay) * observed``.

    Entries still NaN take the observed value (no bias towards the initial value); entries whose
    observation is NaN (nothing was selected) keep their estimate.
    """
    observed = observed.to(estimate.dtype)
    seen = ~torch.isnan(observed)
    blended = torch.lerp(observed, estimate, decay)
    fresh = torch.isnan(estimate)
    estimate.copy_(torch.where(seen, torch.where(fresh, observed, blended), estimate))


@torch.no_grad()
def min_positive(codes: Tensor, dim: int | None = None) -> Tensor:
    """Smallest positive entry (over everything, or along `dim`); NaN where there is none."""
    masked = torch.where(codes > 0, codes, torch.full_like(codes, torch.inf))
    smallest = masked.amin() if dim is None else masked.amin(dim=dim)
    return torch.where(torch.isinf(smallest), torch.full_like(smallest, torch.nan), smallest)


def apply_threshold(pre: Tensor, threshold: Tensor) -> Tensor:
    """``pre * 1[pre > threshold]`` (a JumpReLU); a NaN threshold never fires."""
    return pre * (pre > threshold).to(pre.dtype)


@torch.no_grad()
def firing_rate(codes: Tensor) -> Tensor:
    """Fraction of tokens on which each latent is non-zero, ``(n_latents,)``."""
    return (codes != 0).reshape(-1, codes.shape[-1]).float().mean(0)
