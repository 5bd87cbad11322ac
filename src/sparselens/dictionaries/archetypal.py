"""Archetypal and relaxed archetypal SAE (Fel et al., "Archetypal SAE: Adaptive and Stable
Dictionary Learning for Concept Extraction in Large Vision Models", 2025).

Free decoder atoms drift between runs. Here each atom is tied to the data: a convex
combination of fixed candidate points C (k-means centroids of the training activations,
the buffer ``candidates``), plus a small relaxation Λ (RA-SAE), times a learned positive scale:

    D = exp(log_scale) · (W C + Λ),   W ≥ 0, W 1 = 1,   ||Λ_i||_2 ≤ δ

W (``mixing``) is kept row-stochastic by projection after every optimizer step (ReLU, then
rows renormalised) and Λ (``relaxation``) by clipping its rows to norm δ; δ = 0 gives the
strict A-SAE. Codes are TopK, with AuxK, as in the paper. The decoder bias ``b_dec`` is kept
(our addition; the candidates are centroids of ``x - b_dec``). The output scale folds into
``log_scale``; ``W_dec`` is computed (and cached at inference).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from sparselens.dictionaries.base import StepContext, register
from sparselens.dictionaries.init import kmeans
from sparselens.dictionaries.topk import TopKBase, TopKConfig


@dataclass
class ArchetypalConfig(TopKConfig):
    unit_norm_decoder: bool = False
    """Archetypal atoms are constrained by the data's convex hull, not by their norm."""
    n_candidates: int | None = None
    """Number of candidate points C (k-means centroids of the data); None means n_latents."""
    delta: float = 1.0
    """δ, the bound on each relaxation row's norm (scaled input units); 0 is the strict A-SAE."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.unit_norm_decoder:
            raise ValueError("the archetypal decoder lives in the data's convex hull; "
                             "set unit_norm_decoder=False")
        if self.n_candidates is None:
            self.n_candidates = self.n_latents
        if self.n_candidates <= 0:
            raise ValueError(f"n_candidates must be positive, got {self.n_candidates}")
        if not self.delta >= 0:
            raise ValueError(f"delta must be >= 0, got {self.delta}")


@register("archetypal")
class ArchetypalSAE(TopKBase):
    """TopK codes over atoms that are (relaxed) convex combinations of data points."""

    config_class = ArchetypalConfig
    cfg: ArchetypalConfig

    def __init__(self, cfg: ArchetypalConfig) -> None:
        super().__init__(cfg)
        n_cand = cfg.n_candidates
        assert n_cand is not None
        random_atoms = self._parameters.pop("W_dec").detach()  # replaced by the property
        points = torch.randn(n_cand, random_atoms.shape[1], dtype=random_atoms.dtype)
        self.register_buffer("candidates", points / points.norm(dim=1, keepdim=True))
        # Atom i starts as candidate i (mod the number of candidates).
        mixing = torch.zeros(cfg.n_latents, n_cand, dtype=random_atoms.dtype)
        mixing[torch.arange(cfg.n_latents), torch.arange(cfg.n_latents) % n_cand] = 1.0
        self.mixing = nn.Parameter(mixing)
        self.relaxation = nn.Parameter(torch.zeros_like(random_atoms))
        self.log_scale = nn.Parameter(torch.zeros((), dtype=random_atoms.dtype))
        self._cache: tuple[tuple, Tensor] | None = None
        self.tie_encoder()

    @property
    def W_dec(self) -> Tensor:  # type: ignore[override]
        """``exp(log_scale) (W C + Λ)``; cached while gradients are off and nothing changed."""
        sources = (self.mixing, self.candidates, self.relaxation, self.log_scale)
        if torch.is_grad_enabled():
            return self._compose()
        key = tuple((t.data_ptr(), t._version, t.device) for t in sources)
        if self._cache is None or self._cache[0] != key:
            self._cache = (key, self._compose())
        return self._cache[1]

    def _compose(self) -> Tensor:
        return self.log_scale.exp() * (self.mixing @ self.candidates + self.relaxation)

    @torch.no_grad()
    def tie_encoder(self) -> None:
        """Encoder columns ``D_i / ||D_i||²``, so a code times its atom is the projection of the
        input on that atom."""
        atoms = self.W_dec
        if self.cfg.d_in == atoms.shape[1]:
            self.W_enc.copy_((atoms / atoms.pow(2).sum(dim=1, keepdim=True).clamp_min(1e-8)).T)

    @torch.no_grad()
    def initialize_from_data(self, x: Tensor, target: Tensor | None = None) -> None:
        """b_dec = geometric median; candidates = k-means centroids of the centred targets."""
        super().initialize_from_data(x, target)
        target = x if target is None else target
        n_cand = self.cfg.n_candidates
        assert n_cand is not None
        centroids = kmeans(target.float() - self.b_dec.float(), n_cand)
        self.candidates.copy_(centroids.to(self.candidates.dtype))
        self.tie_encoder()

    @torch.no_grad()
    def project(self) -> None:
        """W onto row-stochastic matrices, Λ rows into the δ-ball."""
        mixing = torch.relu(self.mixing)
        sums = mixing.sum(dim=1, keepdim=True)
        uniform = torch.full_like(mixing, 1.0 / mixing.shape[1])
        self.mixing.copy_(torch.where(sums > 0, mixing / sums.clamp_min(1e-12), uniform))
        norms = self.relaxation.norm(dim=1, keepdim=True)
        self.relaxation.mul_((self.cfg.delta / norms.clamp_min(1e-12)).clamp(max=1.0))

    def after_optimizer_step(self, ctx: StepContext) -> None:
        super().after_optimizer_step(ctx)
        self.project()

    def scale_decoder_(self, factor: float) -> None:
        self.log_scale.add_(math.log(factor))
