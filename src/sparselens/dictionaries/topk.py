"""TopK SAE (Gao et al., "Scaling and evaluating sparse autoencoders")."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from sparselens.dictionaries.base import (
    Dictionary,
    DictionaryConfig,
    StepContext,
    register,
)
from sparselens.dictionaries.losses import auxk_loss


@dataclass
class TopKConfig(DictionaryConfig):
    k: int = 32
    """Active latents per token."""
    k_aux: int | None = None
    """Dead latents used by the AuxK loss; None means d_in // 2 (the paper's choice)."""
    aux_coef: float = 1 / 32
    """Weight of the AuxK loss (the paper's 1/32)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0 < self.k <= self.n_latents:
            raise ValueError(f"k must be in 1..n_latents ({self.n_latents}), got {self.k}")


@register("topk")
class TopKSAE(Dictionary):
    """Keep the k largest pre-activations (after ReLU) of every token, zero the rest."""

    config_class = TopKConfig
    cfg: TopKConfig

    def select(self, pre: Tensor) -> tuple[Tensor, Tensor]:
        """(values, indices) of the active latents, ``(..., k)`` each."""
        values, indices = pre.topk(self.cfg.k, dim=-1, sorted=False)
        return torch.relu(values), indices

    def activation(self, pre: Tensor) -> Tensor:
        values, indices = self.select(pre)
        return torch.zeros_like(pre).scatter_(-1, indices, values)

    def loss_terms(self, x: Tensor, target: Tensor, pre: Tensor, codes: Tensor, recon: Tensor,
                   ctx: StepContext) -> dict[str, Tensor]:
        k_aux = self.cfg.k_aux if self.cfg.k_aux is not None else self.cfg.d_in // 2
        aux = auxk_loss(pre, target - recon, self.W_dec, ctx.dead_mask, k_aux)
        return {"auxk": self.cfg.aux_coef * aux}
