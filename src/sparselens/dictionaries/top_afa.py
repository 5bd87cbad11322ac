"""Top-AFA SAE (Lee, Davies, Canby and Hockenmaier, "Evaluating and Designing Sparse
Autoencoders by Approximating Quasi-Orthogonality", 2025).

If the decoder atoms are nearly orthogonal unit vectors, the norm of the code vector
approximates the norm of the (centred) input it reconstructs: the approximate feature
activation ``AFA(x) = ||x - b_dec||_2``. Top-AFA has no fixed k: per token, latents are ranked
by their contribution ``f_i ||W_dec,i||`` and the prefix of the ranking whose norm
``sqrt(Σ_{j≤k} (f_j ||W_dec,j||)²)`` is nearest to the AFA is kept (the authors' released
training code; ``selection="reach"`` keeps instead the shortest prefix whose norm reaches
the AFA). The AFA loss ``(||f||_2 - AFA)²`` is added with weight `afa_coef`, with AuxK for dead
latents. Weighting codes by decoder norms makes the rule unit-free, so folding input scales
into the weights leaves codes unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from sparselens.dictionaries.base import StepContext, register
from sparselens.dictionaries.losses import norm_matching_loss
from sparselens.dictionaries.topk import AuxKConfig, AuxKDictionary


@dataclass
class TopAFAConfig(AuxKConfig):
    afa_coef: float = 1 / 32
    """Weight of the AFA (norm-matching) loss; the paper sweeps it."""
    selection: Literal["nearest", "reach"] = "nearest"
    """nearest: the prefix whose norm is closest to the AFA (the authors' code); reach: the
    shortest prefix whose norm is at least the AFA."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.afa_coef >= 0:
            raise ValueError(f"afa_coef must be >= 0, got {self.afa_coef}")
        if self.selection not in ("nearest", "reach"):
            raise ValueError(f"selection must be 'nearest' or 'reach', got {self.selection!r}")
        if self.input_scale != self.output_scale:
            raise ValueError("top_afa compares code norms with input norms, so it needs "
                             "input_scale == output_scale (an autoencoder)")


def afa_prefix_mask(contributions: Tensor, afa: Tensor, selection: str) -> Tensor:
    """Bool mask of the kept latents: the top-ranked prefix chosen by `selection`.

    ``contributions`` are non-negative ``(B, n)``; ``afa`` is ``(B,)``.
    """
    ranked, order = contributions.sort(dim=-1, descending=True)
    prefix_norm = ranked.pow(2).cumsum(-1).sqrt()
    if selection == "nearest":
        count = (prefix_norm - afa[..., None]).abs().argmin(-1) + 1
    else:
        reached = prefix_norm >= afa[..., None]
        last = torch.full_like(afa, contributions.shape[-1], dtype=torch.long)
        count = torch.where(reached.any(-1), reached.int().argmax(-1) + 1, last)
    ranks = torch.arange(contributions.shape[-1], device=contributions.device)
    keep_sorted = ranks < count[..., None]
    return torch.zeros_like(keep_sorted).scatter(-1, order, keep_sorted)


@register("top_afa")
class TopAFASAE(AuxKDictionary):
    """A per-token number of latents, chosen so the code norm matches the input norm."""

    config_class = TopAFAConfig
    cfg: TopAFAConfig

    def encode_scaled(self, x: Tensor) -> tuple[Tensor, Tensor]:
        pre = self.pre_acts(x)
        acts = torch.relu(pre)
        with torch.no_grad():
            contributions = acts * self.W_dec.norm(dim=-1)
            keep = afa_prefix_mask(contributions, self.centre(x).norm(dim=-1), self.cfg.selection)
        return pre, acts * keep.to(acts.dtype)

    def loss_terms(self, x: Tensor, target: Tensor, pre: Tensor, codes: Tensor, recon: Tensor,
                   ctx: StepContext) -> dict[str, Tensor]:
        code_norm = (codes * self.W_dec.norm(dim=-1)).norm(dim=-1)
        afa = norm_matching_loss(code_norm, self.centre(x).norm(dim=-1).detach())
        return {"afa": self.cfg.afa_coef * afa, **self.auxk_terms(pre, target, recon, ctx)}
