"""JumpReLU SAE (Rajamanoharan et al., "Jumping Ahead: Improving Reconstruction Fidelity with
JumpReLU Sparse Autoencoders", 2024).

    π(x) = W_enc x + b_enc                 (no pre-encoder bias, as in the paper and Gemma Scope)
    f(x) = JumpReLU_θ(π(x)) = π(x) ⊙ H(π(x) - θ)
    L    = ||x - x̂||² + λ ||f(x)||_0,  ||f||_0 = Σ_i H(π_i(x) - θ_i)

θ (the Parameter ``threshold``, shape ``(n,)``) is trained directly and clamped at 0 after
each step. Its gradients are the paper's straight-through pseudo-derivatives with a rectangle
kernel of bandwidth ε, for both the activation and the Heaviside in the L0 (see `ste`);
nothing flows to π through the Heaviside. λ can be warmed up (Gemma Scope does). Optionally
(``target_l0``), the L0 term is replaced by ``λ (L0 / L0_target - 1)²`` on the batch mean L0,
as in later work; that is an option, not the paper's method.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from sparselens.dictionaries.base import StepContext, register
from sparselens.dictionaries.losses import target_l0_penalty
from sparselens.dictionaries.penalized import PenalizedDictionary, PenaltyConfig
from sparselens.dictionaries.ste import heaviside, jumprelu


@dataclass
class JumpReLUConfig(PenaltyConfig):
    pre_encoder_bias: bool = False
    """Subtract b_dec from the input before encoding (the paper does not)."""
    bandwidth: float = 1e-3
    """ε, the width of the rectangle kernel of the pseudo-derivatives (the paper's 0.001,
    relative to inputs normalised as the paper's)."""
    initial_threshold: float = 1e-3
    """Initial θ for every latent (the paper's 0.001)."""
    target_l0: float | None = None
    """Option: penalise (L0 / target_l0 - 1)^2 instead of L0 itself (not the paper's default)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.bandwidth > 0:
            raise ValueError(f"bandwidth must be > 0, got {self.bandwidth}")
        if not self.initial_threshold >= 0:
            raise ValueError(f"initial_threshold must be >= 0, got {self.initial_threshold}")
        if self.target_l0 is not None and not 0 < self.target_l0 <= self.n_latents:
            raise ValueError(f"target_l0 must be in (0, n_latents], got {self.target_l0}")


@register("jumprelu")
class JumpReLUSAE(PenalizedDictionary):
    """A learned threshold per latent; L0 penalty through straight-through estimators."""

    config_class = JumpReLUConfig
    cfg: JumpReLUConfig

    def __init__(self, cfg: JumpReLUConfig) -> None:
        super().__init__(cfg)
        self.threshold = nn.Parameter(torch.full_like(self.b_enc, cfg.initial_threshold))

    def activation(self, pre: Tensor) -> Tensor:
        return jumprelu(pre, self.threshold, self.cfg.bandwidth)

    def l0(self, pre: Tensor) -> Tensor:
        """Mean number of active latents per token, differentiable in θ."""
        return heaviside(pre, self.threshold, self.cfg.bandwidth).sum(-1).mean()

    def loss_terms(self, x: Tensor, target: Tensor, pre: Tensor, codes: Tensor, recon: Tensor,
                   ctx: StepContext) -> dict[str, Tensor]:
        l0 = self.l0(pre)
        if self.cfg.target_l0 is not None:
            return {"l0_target": self.sparsity_coef(ctx) * target_l0_penalty(l0,
                                                                            self.cfg.target_l0)}
        return {"l0": self.sparsity_coef(ctx) * l0}

    def after_optimizer_step(self, ctx: StepContext) -> None:
        super().after_optimizer_step(ctx)
        with torch.no_grad():
            self.threshold.clamp_(min=0.0)
