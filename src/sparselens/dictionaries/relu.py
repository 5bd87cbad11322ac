"""ReLU SAEs trained with an L1 penalty.

``relu``: Bricken et al., "Towards Monosemanticity" (2023). ``f = ReLU(W_enc (x - b_dec) +
b_enc)``, loss ``||x - x̂||² + λ ||f||_1`` with unit-norm decoder rows (the gradient component
parallel to each row removed before the step, rows renormalised after it) and resampling of
dead latents at a few points of the run.

``relu_dn``: Anthropic's April 2024 update ("Circuits Updates — April 2024"). The decoder is
unconstrained and the penalty weighs each code by its decoder row norm, ``λ Σ_i |f_i|
||W_dec,i||``, which removes the incentive to shrink codes while growing the decoder. No
pre-encoder bias, decoder rows initialised with norm 0.1 and ``W_enc = W_dec^T``, λ warmed
up linearly over the first 5% of the steps. Gradient clipping (norm 1) is the trainer's
``optim.clip_grad_norm`` (default 1.0).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from sparselens.dictionaries.base import LossOutput, StepContext, register
from sparselens.dictionaries.init import resample_dead_latents
from sparselens.dictionaries.losses import l1_penalty
from sparselens.dictionaries.penalized import PenalizedDictionary, PenaltyConfig


@dataclass
class ReluConfig(PenaltyConfig):
    decoder_norm_penalty: bool = False
    """Weigh each code's |f_i| by its decoder row norm (relu_dn)."""
    resample_at: list[float] = field(default_factory=lambda: [0.25, 0.5, 0.75])
    """Fractions of the run at which dead latents are resampled (Towards Monosemanticity);
    empty disables resampling. Needs the trainer's dead mask."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if any(not 0.0 < f < 1.0 for f in self.resample_at):
            raise ValueError(f"resample_at holds fractions of the run in (0, 1), got "
                             f"{self.resample_at}")


@dataclass
class ReluDNConfig(ReluConfig):
    pre_encoder_bias: bool = False
    """Subtract b_dec from the input before encoding (the April update does not)."""
    unit_norm_decoder: bool = False
    """Keep decoder rows at unit norm (the April update leaves them free)."""
    decoder_norm_penalty: bool = True
    """Weigh each code's |f_i| by its decoder row norm."""
    sparsity_warmup: float = 0.05
    """Fraction of the run over which λ rises linearly from 0 (the update's 5%)."""
    resample_at: list[float] = field(default_factory=list)
    """Fractions of the run at which dead latents are resampled (the update does not)."""
    decoder_init_norm: float = 0.1
    """Norm of the initial decoder rows (the update's 0.1; W_enc starts as W_dec^T)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.decoder_init_norm > 0:
            raise ValueError(f"decoder_init_norm must be > 0, got {self.decoder_init_norm}")


@register("relu")
class ReluSAE(PenalizedDictionary):
    """ReLU codes, L1 penalty (optionally weighted by decoder norms)."""

    config_class = ReluConfig
    cfg: ReluConfig

    def resample_steps(self, total_steps: int) -> set[int]:
        return {round(f * total_steps) for f in self.cfg.resample_at}

    def training_loss(self, x: Tensor, target: Tensor | None = None,
                      ctx: StepContext | None = None) -> LossOutput:
        """Resample dead latents at the configured steps, before the forward pass."""
        if (ctx is not None and ctx.dead_mask is not None
                and ctx.step in self.resample_steps(ctx.total_steps)):
            resample_dead_latents(self, x, x if target is None else target, ctx.dead_mask)
        return super().training_loss(x, target, ctx)

    def loss_terms(self, x: Tensor, target: Tensor, pre: Tensor, codes: Tensor, recon: Tensor,
                   ctx: StepContext) -> dict[str, Tensor]:
        W = self.W_dec if self.cfg.decoder_norm_penalty else None
        return {"l1": self.sparsity_coef(ctx) * l1_penalty(codes, W)}


@register("relu_dn")
class ReluDNSAE(ReluSAE):
    """The April 2024 update: decoder-norm-weighted L1, free decoder, warmed-up λ."""

    config_class = ReluDNConfig
    cfg: ReluDNConfig

    def __init__(self, cfg: ReluDNConfig) -> None:
        super().__init__(cfg)
        with torch.no_grad():
            self.W_dec.mul_(cfg.decoder_init_norm)
            if cfg.d_in == cfg.d_out:
                self.W_enc.copy_(self.W_dec.T)
