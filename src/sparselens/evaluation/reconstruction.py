"""How well a dictionary reconstructs held-out activations, and how sparse its codes are.

Every metric is accumulated as float64 sums over batches, so the result is the same for any
batch size and exact for a stream of any length (no per-batch averages of averages).
Definitions, with x the target, x̂ the reconstruction, N tokens and x̄ the mean target over
the *whole* evaluation set:

- ``mse`` = (1/N) Σ ||x − x̂||²  (squared error norm per token, summed over dimensions)
- ``explained_variance`` = 1 − Σ ||x − x̂||² / Σ ||x − x̄||²;  ``fvu`` = 1 − explained_variance
- ``cosine_similarity`` = (1/N) Σ cos(x, x̂)
- ``relative_reconstruction_bias`` γ = Σ ||x̂||² / Σ x̂·x  (see `relative_bias`)
- ``l0`` = mean number of non-zero codes per token; ``l1`` = mean Σ |codes| per token
- ``latent_density`` = fraction of tokens on which each latent is non-zero;
  ``dead_fraction`` = share of latents with density 0, ``dense_fraction`` = share with
  density above ``dense_threshold``.
- ``fvu_above_one``: the reconstruction is worse than predicting the mean; ``warnings`` then
  says so in words (`fvu_warning`), and the CLI prints it as a WARNING line.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor

from sparselens.data.batch import ActivationBatch
from sparselens.data.sites import Sites
from sparselens.dictionaries.base import Dictionary


class ReconstructionStats:
    """Streaming sums behind `reconstruction_metrics` (float64, on the dictionary's device)."""

    def __init__(self, n_latents: int, d_out: int, device: torch.device) -> None:
        zeros = torch.zeros((), dtype=torch.float64, device=device)
        self.n_tokens = 0
        self.sq_error = zeros.clone()
        self.mean = torch.zeros(d_out, dtype=torch.float64, device=device)
        self.sq_deviation = zeros.clone()  # Σ ||x − x̄||², merged batch by batch (Chan et al.)
        self.cosine = zeros.clone()
        self.recon_sq = zeros.clone()
        self.recon_dot = zeros.clone()
        self.l0 = zeros.clone()
        self.l1 = zeros.clone()
        self.fires = torch.zeros(n_latents, dtype=torch.int64, device=device)

    def update(self, target: Tensor, recon: Tensor, codes: Tensor) -> None:
        x, x_hat = target.double(), recon.double()
        n = x.shape[0]
        self.sq_error += (x - x_hat).pow(2).sum()
        self._merge_moments(x)
        self.cosine += torch.nn.functional.cosine_similarity(x, x_hat, dim=-1, eps=1e-12).sum()
        self.recon_sq += x_hat.pow(2).sum()
        self.recon_dot += (x_hat * x).sum()
        active = codes != 0
        self.l0 += active.sum()
        self.l1 += codes.double().abs().sum()
        self.fires += active.sum(0)
        self.n_tokens += n

    def _merge_moments(self, x: Tensor) -> None:
        """Combine this batch's mean and squared deviation with the running ones, exactly."""
        n_a, n_b = self.n_tokens, x.shape[0]
        batch_mean = x.mean(0)
        batch_sq_dev = (x - batch_mean).pow(2).sum()
        delta = batch_mean - self.mean
        total = n_a + n_b
        self.mean += delta * (n_b / total)
        self.sq_deviation += batch_sq_dev + delta.pow(2).sum() * (n_a * n_b / total)

    def result(self, dense_threshold: float) -> dict[str, Any]:
        if self.n_tokens == 0:
            raise ValueError("no evaluation tokens: the held-out data is empty")
        n = self.n_tokens
        fvu = float(self.sq_error / self.sq_deviation.clamp_min(1e-300))
        density = self.fires.double() / n
        return {
            "n_tokens": n,
            "mse": float(self.sq_error) / n,
            "explained_variance": 1.0 - fvu,
            "fvu": fvu,
            "total_variance": float(self.sq_deviation) / n,
            "cosine_similarity": float(self.cosine) / n,
            "relative_reconstruction_bias": relative_bias(self.recon_sq, self.recon_dot),
            "l0": float(self.l0) / n,
            "l1": float(self.l1) / n,
            "dead_fraction": float((density == 0).double().mean()),
            "dense_fraction": float((density > dense_threshold).double().mean()),
            "dense_threshold": dense_threshold,
            "latent_density": density.cpu(),
            "fvu_above_one": fvu > 1.0,
            "warnings": [w for w in (fvu_warning(fvu),) if w],
        }


def fvu_warning(fvu: float) -> str | None:
    """The loud message for a dictionary that reconstructs worse than the mean (FVU > 1)."""
    if not fvu > 1.0:
        return None
    return (f"FVU {fvu:.3f} is above 1: this dictionary reconstructs the held-out activations "
            "worse than their mean does. Massive-norm tokens are the usual cause (see "
            "docs/dictionaries.md, 'Massive-activation tokens'); retrain with --max-norm-ratio "
            "or a per-token selection (topk), and do not use these codes as they are")


def relative_bias(recon_sq: Tensor, recon_dot: Tensor) -> float:
    """γ = argmin_γ E||x̂/γ − x||² (Rajamanoharan et al., "Gated SAEs", section 5).

    With u = 1/γ the objective u² E||x̂||² − 2u E[x̂·x] + E||x||² is a parabola in u, minimal
    at u = E[x̂·x] / E||x̂||², so γ = E||x̂||² / E[x̂·x]. γ = 1 means no systematic scale error;
    γ < 1 means reconstructions are shrunk (the L1 penalty's signature). Returns NaN when
    E[x̂·x] ≤ 0 (the reconstructions point away from the data; no positive γ exists).
    """
    dot = float(recon_dot)
    return float(recon_sq) / dot if dot > 0 else float("nan")


@torch.no_grad()
def reconstruction_metrics(dictionary: Dictionary, batches: Iterable[ActivationBatch],
                           hookpoint: str, target_hookpoint: str | None = None, *,
                           dense_threshold: float = 0.1,
                           max_tokens: int | None = None) -> dict[str, Any]:
    """Reconstruction and sparsity metrics on held-out `batches` (see the module docstring).

    Codes come from ``dictionary.encode`` and reconstructions from ``dictionary(x)``, so any
    variant (skip connections, transcoders) is measured through its public forward. The result
    holds floats plus ``latent_density``, a float64 CPU tensor ``(n_latents,)``.
    """
    if not 0.0 <= dense_threshold <= 1.0:
        raise ValueError(f"dense_threshold is a fraction of tokens in [0, 1], "
                         f"got {dense_threshold}")
    device = dictionary.W_dec.device
    stats = ReconstructionStats(dictionary.cfg.n_latents, int(dictionary.cfg.d_out), device)
    sites = Sites(hookpoint, target_hookpoint)
    with dictionary.evaluating():
        for index, batch in enumerate(batches):
            x = sites.inputs_for(dictionary, batch, index)
            target = sites.targets_for(dictionary, batch, index)
            if max_tokens is not None:
                x, target = x[: max_tokens - stats.n_tokens], target[: max_tokens - stats.n_tokens]
            stats.update(target, dictionary(x), dictionary.encode(x))
            if max_tokens is not None and stats.n_tokens >= max_tokens:
                break
    return stats.result(dense_threshold)
