"""KronSAE (Kurochkin et al., "Kronecker Factorization Improves Efficiency and Interpretability
of Sparse Autoencoders", 2025).

The latent space is factorised into h heads; head g has m "base" and n "composition"
pre-activations, each an ordinary affine projection of the input,

    p = (x - b_dec) W_p + b_p   (B, h, m)      q = (x - b_dec) W_q + b_q   (B, h, n)
    z_{g,i,j} = mAND(p_{g,i}, q_{g,j}) = sqrt(p_{g,i} q_{g,j}) if both > 0, else 0

so the F = h·m·n latents are the Kronecker (outer) products of the two small codes, with an
AND: a latent fires only when both of its factors do. TopK (k per token) and a linear decoder
follow, as in a TopK SAE (AuxK included). The encoder GEMM costs h(m+n)·d per token instead of
F·d: with the defaults m = 4, n = 64 that is (m+n)/(m·n) = 27% of a TopK encoder.
*Reading of the paper*: the square root keeps z on the scale of its factors (the paper's
"magnitude-preserving" AND), computed as sqrt(p)·sqrt(q) on the factors. Inference (`encode`)
never forms the F latents: `top_latents` picks the k largest from h·m·min(k, n) candidates.
*Ours*: decoder atoms start along w_p + w_q of their two factors (TopK's tied start has no
analogue here).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from sparselens.dictionaries.base import register
from sparselens.dictionaries.topk import TopKBase, TopKConfig


@dataclass
class KronConfig(TopKConfig):
    base: int = 4
    """m, the base pre-activations per head."""
    compose: int | None = None
    """n, the composition pre-activations per head; heads h = n_latents / (m n). None: the
    largest divisor of n_latents / m up to 64 that leaves at least `min_heads` heads (or, for
    tiny widths, at most m): 64 from 4096 latents on, 4 at 256."""
    min_heads: int = 16
    """Fewest heads the default `compose` leaves. A token's non-zero latents number
    Σ_g (#p_g > 0)(#q_g > 0): with one head (256 latents, n = 64) a token with one positive
    base has at most n, with none it has 0, and L0 fell to 7-17 of k = 32 in 16 steps."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.compose is None and self.base > 0 and self.n_latents % self.base == 0:
            per_base = self.n_latents // self.base
            self.compose = max(c for c in range(1, 65) if per_base % c == 0
                               and (per_base // c >= self.min_heads or c <= self.base))
        if self.min_heads < 1:
            raise ValueError(f"min_heads must be >= 1, got {self.min_heads}")
        if (self.base <= 0 or self.compose is None or self.compose <= 0
                or self.n_latents % (self.base * self.compose)):
            raise ValueError(f"n_latents ({self.n_latents}) must be a multiple of base x "
                             f"compose ({self.base} x {self.compose}): heads = n_latents / "
                             "(base compose)")

    @property
    def heads(self) -> int:
        assert self.compose is not None
        return self.n_latents // (self.base * self.compose)


def root(t: Tensor) -> Tensor:
    """sqrt(t) where t > 0, else 0 (the gradient is taken where t > 1e-12 only, so it stays
    finite at the edge)."""
    return torch.where(t > 0, t.clamp_min(1e-12).sqrt(), torch.zeros((), dtype=t.dtype,
                                                                        device=t.device))


def mand(p: Tensor, q: Tensor) -> Tensor:
    """``(..., h, m) x (..., h, n) -> (..., h, m, n)``: sqrt(p q) where both are positive.

    Computed as the outer product ``root(p) ⊗ root(q)`` (equal: sqrt(p q) = sqrt(p) sqrt(q),
    and a non-positive factor zeroes the product): the square roots run on the h(m+n) small
    factors and the F latents cost one multiply each, instead of several passes over F."""
    return root(p).unsqueeze(-1) * root(q).unsqueeze(-2)


@register("kronsae")
class KronSAE(TopKBase):
    """TopK over mAND-composed latents of a Kronecker-factorised encoder."""

    config_class = KronConfig
    cfg: KronConfig

    def __init__(self, cfg: KronConfig) -> None:
        super().__init__(cfg)
        del self.W_enc  # the dense F x d encoder is replaced by two small projections
        h, m, d = cfg.heads, cfg.base, cfg.d_in
        n = cfg.compose
        assert n is not None
        dtype = self.W_dec.dtype
        self.W_p = nn.Parameter(torch.randn(d, h * m, dtype=dtype) / d ** 0.5)
        self.W_q = nn.Parameter(torch.randn(d, h * n, dtype=dtype) / d ** 0.5)
        self.b_p = nn.Parameter(torch.zeros(h * m, dtype=dtype))
        self.b_q = nn.Parameter(torch.zeros(h * n, dtype=dtype))
        del self.b_enc
        if cfg.d_out == cfg.d_in:  # an autoencoder; a transcoder keeps the random atoms
            with torch.no_grad():
                self.W_dec.copy_(self.composed_directions())

    def composed_directions(self) -> Tensor:
        """Unit ``(F, d)`` rows along ``w_p + w_q`` of each latent's two factors: the decoder's
        initial atoms (a latent fires when the input points along both; the analogue of TopK's
        tied initialisation, W_dec = W_encᵀ)."""
        h, m, n = self.cfg.heads, self.cfg.base, self.cfg.compose
        assert n is not None
        wp = self.W_p.T.reshape(h, m, 1, -1)
        wq = self.W_q.T.reshape(h, 1, n, -1)
        rows = (wp + wq).reshape(self.cfg.n_latents, -1)
        return rows / rows.norm(dim=-1, keepdim=True).clamp_min(1e-8)

    def factors(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """The base and composition pre-activations, ``(..., h, m)`` and ``(..., h, n)``."""
        c = self.centre(x)
        h = self.cfg.heads
        p = (c @ self.W_p + self.b_p).unflatten(-1, (h, self.cfg.base))
        q = (c @ self.W_q + self.b_q).unflatten(-1, (h, -1))
        return p, q

    def pre_acts(self, x: Tensor) -> Tensor:
        """The F mAND latents (before TopK), ordered head, base, composition."""
        return mand(*self.factors(x)).flatten(-3)

    def top_latents(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """The k largest mAND latents of scaled input ``(B, d)`` as (values, latent indices),
        ``(B, k)`` each, without forming all F of them: within a head, latent (g, i, j) is
        root(p_gi) root(q_gj), so for every (g, i) only the r = min(k, n) largest root(q_g·)
        can be among the k largest; the top-k runs over h·m·r candidates (F·r/n). Exact: the
        same values as TopK over `pre_acts` (indices may differ only between equal values)."""
        p, q = self.factors(x)
        h, m, n, k = self.cfg.heads, self.cfg.base, self.cfg.compose, self.cfg.k
        assert n is not None
        r = min(k, n)
        qv, qi = root(q).topk(r, dim=-1, sorted=False)                 # (B, h, r)
        candidates = root(p).unsqueeze(-1) * qv.unsqueeze(-2)           # (B, h, m, r)
        values, flat = candidates.flatten(-3).topk(min(k, h * m * r), dim=-1, sorted=False)
        head, rest = flat // (m * r), flat % (m * r)
        base, slot = rest // r, rest % r
        compose = qi.flatten(-2).gather(-1, head * r + slot)
        return values, head * (m * n) + base * n + compose

    def encode(self, x: Tensor) -> Tensor:
        """Dense codes ``(..., n_latents)`` through `top_latents` (the cheap inference path;
        training keeps the dense `pre_acts`, which AuxK needs for the dead latents)."""
        xs = self.scale_input(x)
        flat = xs.reshape(-1, xs.shape[-1])
        values, indices = self.top_latents(flat)
        codes = flat.new_zeros(flat.shape[0], self.cfg.n_latents).scatter_(-1, indices, values)
        return codes.reshape(*xs.shape[:-1], self.cfg.n_latents)

    def scale_encoder_(self, factor: float) -> None:
        self.W_p.mul_(factor)
        self.W_q.mul_(factor)
