"""PolySAE (Koromilas et al., "PolySAE: Modeling Feature Interactions in Sparse Autoencoders
via Polynomial Decoding", 2026).

The encoder is a TopK SAE's (linear, k per token: the features stay readable); the decoder
adds pairwise and triple interactions of the active features through low-rank factors on a
shared projection:

    a_o = z U_o   (o = 1, 2, 3; U_o is n x R with orthonormal columns)
    x̂ = b_dec + z W_dec + λ₂ (a₁ ⊙ a₂) C₂ᵀ + λ₃ (a₁ ⊙ a₂ ⊙ a₃) C₃ᵀ

U₁ is shared by both interaction orders; C₂, C₃ are d x R; λ₂, λ₃ learned scalars. By default
(`homogeneous`) the pairwise term is divided by ||z|| and the triple term by ||z||², so the
decoder scales linearly with the codes: a stabiliser against massive-norm tokens, not in the
paper (``homogeneous=False`` is the paper's polynomial). After
every optimizer step each U_o is retracted to orthonormal columns (QR with a positive
diagonal), as in the paper. *Deviations*: the linear term is the usual unit-norm decoder
W_dec (the paper factorises it too, as U₁ C₁ᵀ, with rank up to d: the same function class);
C₂, C₃ start at zero, so training starts from a TopK SAE and the interactions grow from there.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from sparselens.dictionaries.base import register
from sparselens.dictionaries.topk import TopKBase, TopKConfig


@dataclass
class PolyConfig(TopKConfig):
    interaction_rank: int | None = None
    """R, the rank of the shared projection used by the pairwise and triple terms; None: 16
    (or min(n_latents, d_out) if smaller)."""
    homogeneous: bool = True
    """Divide the pairwise term by ||z|| and the triple term by ||z||², so the decoder scales
    linearly with the codes (our stabiliser, not the paper's: with the paper's raw cubic, a
    massive-norm token, whose codes are 10x the usual, gets a 1000x triple term and FVU above 1
    on gemma-3-270m). False: the paper's polynomial exactly."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.interaction_rank is None:
            self.interaction_rank = min(16, self.n_latents, self.d_out)
        if not 0 < self.interaction_rank <= min(self.n_latents, self.d_out):
            raise ValueError(f"interaction_rank must be in 1..min(n_latents, d_out), got "
                             f"{self.interaction_rank}")


def orthonormal_columns(u: Tensor) -> Tensor:
    """Q of a reduced QR of `u` with the signs chosen so that R has a positive diagonal."""
    q, r = torch.linalg.qr(u.float())
    signs = torch.sign(torch.diagonal(r))
    return (q * torch.where(signs == 0, torch.ones_like(signs), signs)).to(u.dtype)


@register("polysae")
class PolySAE(TopKBase):
    """TopK encoder, polynomial (order 3, low-rank) decoder."""

    config_class = PolyConfig
    cfg: PolyConfig

    def __init__(self, cfg: PolyConfig) -> None:
        super().__init__(cfg)
        n, r, d = cfg.n_latents, cfg.interaction_rank, cfg.d_out
        assert r is not None and d is not None
        dtype = self.W_dec.dtype
        self.U = nn.Parameter(torch.stack([orthonormal_columns(torch.randn(n, r, dtype=dtype))
                                           for _ in range(3)]))
        self.C = nn.Parameter(torch.zeros(2, d, r, dtype=dtype))
        self.lambdas = nn.Parameter(torch.ones(2, dtype=dtype))

    def interactions(self, codes: Tensor) -> Tensor:
        """``λ₂ (a₁ ⊙ a₂) C₂ᵀ + λ₃ (a₁ ⊙ a₂ ⊙ a₃) C₃ᵀ`` for codes ``(..., n)``."""
        a1, a2, a3 = (codes @ u for u in self.U)
        pair, triple = a1 * a2, a1 * a2 * a3
        if self.cfg.homogeneous:
            norm = codes.norm(dim=-1, keepdim=True).clamp_min(1e-6)
            pair, triple = pair / norm, triple / norm.square()
        return self.lambdas[0] * (pair @ self.C[0].T) + self.lambdas[1] * (triple @ self.C[1].T)

    def decode_scaled(self, codes: Tensor) -> Tensor:
        return codes @ self.W_dec + self.b_dec + self.interactions(codes)

    def scale_decoder_(self, factor: float) -> None:
        self.W_dec.mul_(factor)
        self.C.mul_(factor)

    def after_optimizer_step(self, ctx) -> None:
        super().after_optimizer_step(ctx)
        with torch.no_grad():
            for u in self.U:
                u.copy_(orthonormal_columns(u))
