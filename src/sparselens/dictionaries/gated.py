"""Gated SAE (Rajamanoharan et al., "Improving Dictionary Learning with Gated Sparse
Autoencoders", 2024).

    π_gate(x) = W_gate (x - b_dec) + b_gate          W_gate = W_enc, b_gate = b_enc
    π_mag(x)  = W_mag (x - b_dec) + b_mag            W_mag[:, i] = exp(r_mag[i]) W_gate[:, i]
    f(x)      = 1[π_gate(x) > 0] ⊙ ReLU(π_mag(x))
    L = ||x - x̂(f)||² + λ ||ReLU(π_gate) ⊙ ||W_dec,i|| ||_1 + ||x - x̂_frozen(ReLU(π_gate))||²

The gate decides which latents fire and carries the sparsity penalty; the magnitude path
estimates how strongly, free of L1 shrinkage. x̂_frozen uses detached copies of W_dec and
b_dec, so the auxiliary term trains only the gate. The decoder rows have unit norm (the
decoder-norm factor in the penalty is then 1; it keeps the penalty honest if they do not).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from sparselens.dictionaries.base import StepContext, register
from sparselens.dictionaries.losses import l1_penalty, squared_error
from sparselens.dictionaries.penalized import PenalizedDictionary, PenaltyConfig


@register("gated")
class GatedSAE(PenalizedDictionary):
    """A binary gate and a weight-shared magnitude path."""

    config_class = PenaltyConfig
    cfg: PenaltyConfig

    def __init__(self, cfg: PenaltyConfig) -> None:
        super().__init__(cfg)
        self.r_mag = nn.Parameter(torch.zeros_like(self.b_enc))
        self.b_mag = nn.Parameter(torch.zeros_like(self.b_enc))

    def magnitude(self, gate_pre: Tensor) -> Tensor:
        """π_mag from π_gate: ``(x - b_dec) W_enc`` scaled per latent by exp(r_mag), + b_mag."""
        return (gate_pre - self.b_enc) * self.r_mag.exp() + self.b_mag

    def activation(self, pre: Tensor) -> Tensor:
        return (pre > 0).to(pre.dtype) * torch.relu(self.magnitude(pre))

    def loss_terms(self, x: Tensor, target: Tensor, pre: Tensor, codes: Tensor, recon: Tensor,
                   ctx: StepContext) -> dict[str, Tensor]:
        gate = torch.relu(pre)
        frozen = gate @ self.W_dec.detach() + self.b_dec.detach()
        return {"l1_gate": self.sparsity_coef(ctx) * l1_penalty(gate, self.W_dec),
                "aux_gate": squared_error(frozen, target)}
