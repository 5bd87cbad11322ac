"""p-annealing (Karvonen et al., "Measuring Progress in Dictionary Learning for Language Model
Interpretability with Board Game Models", 2024).

A ReLU SAE whose penalty is ``λ_p Σ_i |f_i|^p``. Training starts at p = 1 (the convex L1) and
p is lowered in ``n_p_steps`` discrete steps to ``p_end`` between ``anneal_start`` and the end of
the run, approaching the L0 that L1 only stands in for. At each change of p the coefficient is
rescaled on the current batch so the penalty's value is continuous:

    λ_new = λ_old · Σ|f|^{p_old} / Σ|f|^{p_new}

The current p and λ_p are buffers (saved, so a resumed run continues the same schedule).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from sparselens.dictionaries.base import StepContext, register
from sparselens.dictionaries.losses import lp_penalty
from sparselens.dictionaries.relu import ReluConfig, ReluSAE
from sparselens.dictionaries.schedules import stepped_anneal


@dataclass
class PAnnealConfig(ReluConfig):
    p_start: float = 1.0
    """Initial exponent p of the penalty (1 = L1)."""
    p_end: float = 0.2
    """Final exponent p."""
    anneal_start: float = 0.1
    """Fraction of the run after which p starts to decrease."""
    n_p_steps: int = 10
    """Number of discrete decreases of p (the coefficient is rescaled at each)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0.0 < self.p_end <= self.p_start <= 1.0:
            raise ValueError(f"need 0 < p_end <= p_start <= 1, got p_start={self.p_start}, "
                             f"p_end={self.p_end}")
        if not 0.0 <= self.anneal_start < 1.0:
            raise ValueError(f"anneal_start must be in [0, 1), got {self.anneal_start}")
        if self.n_p_steps < 1:
            raise ValueError(f"n_p_steps must be >= 1, got {self.n_p_steps}")


@register("p_anneal")
class PAnnealSAE(ReluSAE):
    """ReLU SAE with an Lp^p penalty whose p is annealed and whose λ is kept continuous."""

    config_class = PAnnealConfig
    cfg: PAnnealConfig

    def __init__(self, cfg: PAnnealConfig) -> None:
        super().__init__(cfg)
        self.register_buffer("p", torch.tensor(float(cfg.p_start)))
        self.register_buffer("lp_coef", torch.tensor(float(cfg.sparsity_coef)))

    def scheduled_p(self, progress: float) -> float:
        cfg = self.cfg
        return stepped_anneal(progress, cfg.p_start, cfg.p_end, cfg.anneal_start, cfg.n_p_steps)

    @torch.no_grad()
    def update_p(self, codes: Tensor, progress: float) -> None:
        """Move to the scheduled p, rescaling λ so the penalty is unchanged on this batch."""
        p_old, p_new = float(self.p), self.scheduled_p(progress)
        if math.isclose(p_old, p_new):
            return
        old, new = lp_penalty(codes, p_old), lp_penalty(codes, p_new)
        if bool(new > 0) and bool(old > 0):
            self.lp_coef.mul_(old / new)
        self.p.fill_(p_new)

    def loss_terms(self, x: Tensor, target: Tensor, pre: Tensor, codes: Tensor, recon: Tensor,
                   ctx: StepContext) -> dict[str, Tensor]:
        if self.cfg.decoder_norm_penalty:
            codes = codes * self.W_dec.norm(dim=-1)
        self.update_p(codes, ctx.progress)
        warm = self.sparsity_coef(ctx) / self.cfg.sparsity_coef if self.cfg.sparsity_coef else 0.0
        return {"lp": self.lp_coef * warm * lp_penalty(codes, float(self.p))}
