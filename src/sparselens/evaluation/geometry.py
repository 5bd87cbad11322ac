"""Feature geometry: how close to orthogonal the decoder is, and how often latents fire.

- **Quasi-orthogonality**: with unit decoder rows w_i, the off-diagonal |cos(w_i, w_j)|. A
  dictionary in superposition cannot be orthogonal (n_latents > d), but near-duplicate latents
  (|cos| close to 1) are wasted capacity or split features; ``max_abs_cos`` finds them,
  ``mean_abs_cos`` is the typical overlap (about sqrt(2 / (π d)) for random directions), and
  ``mean_max_abs_cos`` the average over latents of their nearest neighbour's |cos|.
  Computed in row blocks, so 65k latents need no 65k × 65k matrix.
- **Density**: the fraction of held-out tokens on which each latent is non-zero; the histogram
  of log10 density (the SAEBench / Anthropic "feature density" plot), the dead fraction (never
  fires) and the dense fraction (fires on more than ``dense_threshold`` of tokens).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from sparselens.lens.codes import SparseCodes


def unit_rows(matrix: Tensor) -> Tensor:
    """Rows scaled to unit norm (float32 on the CPU); a zero row stays zero."""
    matrix = matrix.detach().float().cpu()
    return matrix / matrix.norm(dim=1, keepdim=True).clamp_min(1e-12)


def decoder_orthogonality(decoder: Tensor, *, block: int = 2048) -> dict[str, float]:
    """Max, mean and mean-nearest-neighbour off-diagonal |cos| of the decoder rows."""
    w = unit_rows(decoder)
    n = w.shape[0]
    if n < 2:
        raise ValueError("orthogonality needs at least two latents")
    total, biggest = 0.0, 0.0
    nearest = torch.empty(n)
    for start in range(0, n, block):
        cos = (w[start:start + block] @ w.T).abs()
        rows = torch.arange(cos.shape[0])
        cos[rows, rows + start] = 0.0
        total += float(cos.double().sum())
        nearest[start:start + block] = cos.max(dim=1).values
        biggest = max(biggest, float(nearest[start:start + block].max()))
    return {"max_abs_cos": biggest, "mean_abs_cos": total / (n * (n - 1)),
            "mean_max_abs_cos": float(nearest.mean()),
            "random_mean_abs_cos": math.sqrt(2 / (math.pi * w.shape[1]))}


def latent_density(codes: SparseCodes | Tensor) -> Tensor:
    """Per-latent firing fraction (float64) over the tokens of `codes` (sparse or dense)."""
    if isinstance(codes, SparseCodes):
        fires = torch.zeros(codes.n_latents, dtype=torch.float64)
        active = codes.values != 0
        fires.index_add_(0, codes.indices[active].cpu(),
                         torch.ones(int(active.sum()), dtype=torch.float64))
        n = codes.n_tokens
    else:
        flat = codes.reshape(-1, codes.shape[-1])
        fires, n = (flat != 0).sum(0).double().cpu(), flat.shape[0]
    if n == 0:
        raise ValueError("no tokens: density needs held-out codes")
    return fires / n


def density_summary(density: Tensor, *, dense_threshold: float = 0.1,
                    bins: int = 20, floor: float = 1e-7) -> dict[str, Any]:
    """Dead and dense fractions and a histogram of log10 density (dead latents counted apart,
    since log10 0 is -inf)."""
    alive = density[density > 0]
    low = math.log10(floor)
    edges = torch.linspace(low, 0.0, bins + 1, dtype=torch.float64)
    counts = torch.histc(alive.clamp_min(floor).log10(), bins=bins, min=low, max=0.0)
    return {"dead_fraction": float((density == 0).double().mean()),
            "dense_fraction": float((density > dense_threshold).double().mean()),
            "dense_threshold": dense_threshold,
            "median_density": float(density.median()),
            "log10_density_histogram": {"edges": edges.tolist(),
                                        "counts": [int(c) for c in counts.tolist()],
                                        "dead": int((density == 0).sum())}}


def geometry_metrics(decoder: Tensor, codes: SparseCodes | Tensor, *,
                     dense_threshold: float = 0.1) -> dict[str, Any]:
    """Orthogonality of `decoder` and the density summary of held-out `codes`."""
    density = latent_density(codes)
    if density.numel() != decoder.shape[0]:
        raise ValueError(f"codes have {density.numel()} latents but the decoder has "
                         f"{decoder.shape[0]} rows: codes from another dictionary?")
    return {**decoder_orthogonality(decoder),
            **density_summary(density, dense_threshold=dense_threshold),
            "n_tokens": int(codes.n_tokens if isinstance(codes, SparseCodes)
                            else codes.reshape(-1, codes.shape[-1]).shape[0])}
