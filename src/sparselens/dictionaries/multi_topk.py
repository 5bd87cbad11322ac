"""Multi-TopK SAE (Gao et al., "Scaling and evaluating sparse autoencoders", section 5.3).

A TopK SAE trained with the sum of two TopK losses, ``L(k) + L(k')/8`` with ``k' = 4k``, so
that the same dictionary reconstructs well at the trained k and degrades gracefully when more
latents are allowed (progressive codes). Inference uses k, like TopK.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from sparselens.dictionaries.base import StepContext, register
from sparselens.dictionaries.losses import squared_error
from sparselens.dictionaries.topk import TopKBase, TopKConfig


@dataclass
class MultiTopKConfig(TopKConfig):
    multi_k_factor: int = 4
    """k' = multi_k_factor * k for the extra loss (the paper's 4)."""
    multi_coef: float = 1 / 8
    """Weight of the extra loss at k' (the paper's 1/8)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.multi_k_factor < 1:
            raise ValueError(f"multi_k_factor must be >= 1, got {self.multi_k_factor}")
        if not self.multi_coef >= 0:
            raise ValueError(f"multi_coef must be >= 0, got {self.multi_coef}")

    @property
    def k_multi(self) -> int:
        return min(self.n_latents, self.multi_k_factor * self.k)


@register("multi_topk")
class MultiTopKSAE(TopKBase):
    """TopK plus a weighted reconstruction loss at a larger k."""

    config_class = MultiTopKConfig
    cfg: MultiTopKConfig

    def loss_terms(self, x: Tensor, target: Tensor, pre: Tensor, codes: Tensor, recon: Tensor,
                   ctx: StepContext) -> dict[str, Tensor]:
        values, indices = pre.topk(self.cfg.k_multi, dim=-1, sorted=False)
        wide = torch.zeros_like(pre).scatter(-1, indices, torch.relu(values))
        wide_recon = recon + (wide - codes) @ self.W_dec
        return {"mse_multi_k": self.cfg.multi_coef * squared_error(wide_recon, target),
                **self.auxk_terms(pre, target, recon, ctx)}
