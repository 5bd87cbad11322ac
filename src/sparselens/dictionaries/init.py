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


@torch.no_grad()
def kmeans(points: Tensor, n_clusters: int, n_iter: int = 10, seed: int = 0) -> Tensor:
    """Lloyd's k-means with k-means++ seeding: ``(n_clusters, d)`` centroids.

    The archetypal SAE builds its atoms from such centroids of the data (Fel et al. use
    k-means centroids of the training activations as the candidate points C).
    """
    n = points.shape[0]
    if points.ndim != 2 or n < n_clusters:
        raise ValueError(f"k-means with {n_clusters} clusters needs at least that many points, "
                         f"got a tensor of shape {tuple(points.shape)}; sample more tokens for "
                         "initialisation or ask for fewer candidates")
    gen = torch.Generator(device=points.device).manual_seed(seed)
    first = torch.randint(n, (1,), generator=gen, device=points.device)
    centroids = [points[first]]
    nearest = (points - centroids[0]).pow(2).sum(-1)
    for _ in range(1, n_clusters):
        probs = nearest / nearest.sum() if nearest.sum() > 0 else torch.full_like(nearest, 1 / n)
        pick = torch.multinomial(probs, 1, generator=gen)
        centroids.append(points[pick])
        nearest = torch.minimum(nearest, (points - points[pick]).pow(2).sum(-1))
    centers = torch.cat(centroids)
    for _ in range(n_iter):
        assign = torch.cdist(points, centers).argmin(1)
        sums = torch.zeros_like(centers).index_add_(0, assign, points)
        counts = torch.bincount(assign, minlength=n_clusters).to(points.dtype)
        filled = counts > 0  # an empty cluster keeps its centroid
        centers[filled] = sums[filled] / counts[filled, None]
    return centers


@torch.no_grad()
def resample_dead_latents(model, x: Tensor, target: Tensor, dead_mask: Tensor,
                          encoder_scale: float = 0.2) -> int:
    """Towards Monosemanticity's resampling of dead latents; returns how many were resampled.

    Tokens are drawn with probability proportional to their squared reconstruction loss. For
    each dead latent the decoder row becomes the normalised target of a drawn token,
    the encoder column the same direction scaled to `encoder_scale` times the mean encoder norm
    of the live latents, and its encoder bias 0. The paper also resets the Adam moments of
    these weights; a latent that has been dead for the whole dead window received exactly zero
    gradient all that time, so its moments have already decayed towards zero.
    """
    dead = dead_mask.nonzero().squeeze(-1)
    if dead.numel() == 0:
        return 0
    _, codes = model.encode_scaled(x)
    loss = (model.decode_scaled(codes) - target).pow(2).sum(-1)
    probs = loss.pow(2).float()
    if not bool(probs.sum() > 0):
        return 0
    picks = torch.multinomial(probs / probs.sum(), dead.numel(), replacement=True)
    alive = ~dead_mask
    enc_norm = model.W_enc[:, alive].norm(dim=0).mean() if bool(alive.any()) else 1.0
    model.W_dec[dead] = _unit_rows(target[picks]).to(model.W_dec.dtype)
    model.W_enc[:, dead] = (_unit_rows(x[picks]) * enc_norm * encoder_scale).T.to(
        model.W_enc.dtype)
    model.b_enc[dead] = 0.0
    return int(dead.numel())


def _unit_rows(rows: Tensor) -> Tensor:
    return rows / rows.norm(dim=-1, keepdim=True).clamp_min(1e-8)
