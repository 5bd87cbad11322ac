"""Data-dependent initialisation helpers."""

from __future__ import annotations

import torch
from torch import Tensor


@torch.no_grad()
def geometric_median(points: Tensor, max_iter: int = 100, tol: float = 1e-6) -> Tensor:
    """Weiszfeld's algorithm: the point minimising the sum of Euclidean distances.

    Gao et al. initialise ``b_dec`` here: it is robust to the outliers that drag the mean.
    """
    if points.ndim != 2 or points.shape[0] == 0:
        raise ValueError("geometric_median needs a non-empty (n, d) tensor, "
                         f"got {tuple(points.shape)}")
    median = points.mean(0)
    for _ in range(max_iter):
        dist = (points - median).norm(dim=1).clamp_min(1e-8)
        weights = 1.0 / dist
        new = (weights[:, None] * points).sum(0) / weights.sum()
        if (new - median).norm() <= tol * median.norm().clamp_min(1e-8):
            return new
        median = new
    return median
