"""Feature Choice and Mutual Choice SAEs (Ayonrinde, "Adaptive Sparse Allocation with Mutual
Choice & Feature Choice Sparse Autoencoders", 2024).

The paper frames sparsification as allocating a budget of ``k * B`` token-latent matches in a
batch of B tokens. TopK lets each token choose k latents ("token choice"). Mutual Choice
allocates the budget freely: the ``k * B`` largest activations of the batch (the same selection
as BatchTopK). Feature Choice lets each latent choose its tokens: latent i keeps its ``m_i``
largest activations in the batch. The capacities follow the Zipf-like distribution that
latent densities are observed to follow: expected densities ``ρ_i ∝ (i + 1)^-α``, capped at 1
and scaled so that ``Σ ρ_i = k`` (α = `zipf_exponent`; 0 gives uniform ``m = kB/n``), and
``m_i = max(1, round(ρ_i B))``.

``aux_zipf_loss`` generalises AuxK from dead to under-used latents: a latent whose running
firing rate falls below ``underuse_ratio`` of its expected Zipf density ρ_i (or that the
trainer reports dead) joins the auxiliary reconstruction of the residual. Our reading of the
paper: the exact threshold for "under-used" is ours to choose and is a config field.

Inference is per token, as for BatchTopK: thresholds estimated during training as running
averages of the smallest activation kept: one global threshold for Mutual Choice (shape
``()``), one per latent for Feature Choice (shape ``(n,)``; a latent that never fired in
training never fires at inference).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from sparselens.dictionaries.base import StepContext, register
from sparselens.dictionaries.batchtopk import BatchTopKConfig, BatchTopKSAE
from sparselens.dictionaries.thresholds import ema_update_, firing_rate, min_positive


@dataclass
class ChoiceConfig(BatchTopKConfig):
    zipf_exponent: float = 1.0
    """α of the Zipf prior on latent densities ρ_i ∝ (i+1)^-α (capacities of Feature Choice,
    reference of aux_zipf_loss); 0 means uniform."""
    underuse_ratio: float = 0.1
    """A latent firing less often than this fraction of its expected density is under-used
    and joins aux_zipf_loss (together with dead latents)."""
    density_decay: float = 0.99
    """Decay of the running firing rate of each latent."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.zipf_exponent >= 0:
            raise ValueError(f"zipf_exponent must be >= 0, got {self.zipf_exponent}")
        if not 0.0 <= self.underuse_ratio <= 1.0:
            raise ValueError(f"underuse_ratio must be in [0, 1], got {self.underuse_ratio}")
        if not 0.0 <= self.density_decay < 1.0:
            raise ValueError(f"density_decay must be in [0, 1), got {self.density_decay}")


def zipf_densities(n: int, k: float, exponent: float) -> Tensor:
    """Expected firing rates ``ρ_i = min(1, c (i + 1)^-α)`` with c chosen so ``Σ ρ_i = k``."""
    if not 0 < k <= n:
        raise ValueError(f"need 0 < k <= n, got k={k}, n={n}")
    weights = torch.arange(1, n + 1, dtype=torch.float64).pow(-exponent)
    capped = torch.zeros(n, dtype=torch.bool)
    while True:  # water-filling: latents capped at density 1 leave the rest to the others
        free = weights[~capped]
        scale = (k - capped.sum()) / free.sum()
        new_capped = capped | (weights * scale >= 1.0)
        if bool((new_capped == capped).all()):
            return torch.where(capped, torch.ones_like(weights), weights * scale).float()
        capped = new_capped


def feature_choice(pre: Tensor, capacities: Tensor) -> Tensor:
    """Each latent i keeps its ``capacities[i]`` largest ReLU activations over the batch."""
    acts = torch.relu(pre)
    m = capacities.clamp(max=acts.shape[0])
    values, indices = acts.topk(int(m.max()), dim=0)
    keep = torch.arange(values.shape[0], device=pre.device)[:, None] < m[None, :]
    return torch.zeros_like(acts).scatter(0, indices, values * keep.to(values.dtype))


class ChoiceSAE(BatchTopKSAE):
    """Shared by both Choice SAEs: Zipf densities, running firing rates, aux_zipf_loss."""

    config_class = ChoiceConfig
    cfg: ChoiceConfig

    def __init__(self, cfg: ChoiceConfig) -> None:
        super().__init__(cfg)
        expected = zipf_densities(cfg.n_latents, cfg.k, cfg.zipf_exponent)
        self.register_buffer("expected_density", expected, persistent=False)
        self.register_buffer("density", expected.clone())

    def training_codes(self, x: Tensor) -> tuple[Tensor, Tensor]:
        pre, codes = super().training_codes(x)
        ema_update_(self.density, firing_rate(codes.detach()), self.cfg.density_decay)
        return pre, codes

    def underused(self, ctx: StepContext) -> Tensor:
        """Dead latents and latents well below their expected density."""
        low = self.density < self.cfg.underuse_ratio * self.expected_density
        return low if ctx.dead_mask is None else low | ctx.dead_mask

    def loss_terms(self, x: Tensor, target: Tensor, pre: Tensor, codes: Tensor, recon: Tensor,
                   ctx: StepContext) -> dict[str, Tensor]:
        terms = self.auxk_terms(pre, target, recon, ctx, dead_mask=self.underused(ctx))
        return {"aux_zipf": terms["auxk"]} if terms else {}


@register("mutual_choice")
class MutualChoiceSAE(ChoiceSAE):
    """The ``k * B`` largest activations of the batch, with aux_zipf_loss."""


@register("feature_choice")
class FeatureChoiceSAE(ChoiceSAE):
    """Each latent keeps its m_i largest activations of the batch."""

    def threshold_shape(self) -> tuple[int, ...]:
        """One threshold per latent."""
        return (self.cfg.n_latents,)

    def capacities(self, batch_tokens: int) -> Tensor:
        return (self.expected_density * batch_tokens).round().long().clamp(min=1)

    def batch_select(self, pre: Tensor) -> Tensor:
        flat = pre.reshape(-1, pre.shape[-1])
        return feature_choice(flat, self.capacities(flat.shape[0])).view_as(pre)

    def observed_threshold(self, codes: Tensor) -> Tensor:
        return min_positive(codes.reshape(-1, codes.shape[-1]), dim=0)
