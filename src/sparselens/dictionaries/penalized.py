"""What the penalty-trained variants share: a sparsity coefficient with a linear warm-up.

ReLU (L1), decoder-norm L1, Gated, JumpReLU (L0) and p-annealing are sparse because a penalty
on the codes is added to the reconstruction error, not because a selection is imposed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from sparselens.dictionaries.base import Dictionary, DictionaryConfig, StepContext
from sparselens.dictionaries.schedules import warmup_factor


@dataclass
class PenaltyConfig(DictionaryConfig):
    sparsity_coef: float = 1e-3
    """λ, the weight of the sparsity penalty (its scale depends on the input normalisation)."""
    sparsity_warmup: float = 0.0
    """Fraction of the run over which λ rises linearly from 0 (0: full λ from the start)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if not (math.isfinite(self.sparsity_coef) and self.sparsity_coef >= 0):
            raise ValueError(f"sparsity_coef must be a finite number >= 0, got "
                             f"{self.sparsity_coef!r}")
        if not 0.0 <= self.sparsity_warmup <= 1.0:
            raise ValueError("sparsity_warmup is a fraction of the run, in [0, 1]; got "
                             f"{self.sparsity_warmup}")


class PenalizedDictionary(Dictionary):
    """A dictionary trained with a warmed-up sparsity penalty."""

    cfg: PenaltyConfig

    def sparsity_coef(self, ctx: StepContext) -> float:
        """λ at this step of training."""
        return self.cfg.sparsity_coef * warmup_factor(ctx.progress, self.cfg.sparsity_warmup)
