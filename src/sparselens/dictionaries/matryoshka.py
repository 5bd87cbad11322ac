"""Matryoshka BatchTopK SAE (Bussmann, Nabeshima, Karvonen and Nanda, "Learning Multi-Level
Features with Matryoshka Sparse Autoencoders", 2025).

The latents are split into consecutive groups; every prefix made of whole groups must
reconstruct the input on its own. The loss is the paper's sum over prefixes m in M:

    L = Σ_m ||x - (f(x)[:m] W_dec[:m] + b_dec)||² + α L_aux

with f chosen by BatchTopK over the whole dictionary (and the BatchTopK threshold at
inference). Early latents are pushed to carry general features, later ones the refinements,
which counters feature absorption. ``group_sizes`` is in the saved config.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from sparselens.dictionaries.base import StepContext, register
from sparselens.dictionaries.batchtopk import BatchTopKConfig, BatchTopKSAE
from sparselens.dictionaries.losses import prefix_partials, squared_error

DEFAULT_NESTING = 16
"""Without explicit group sizes, the prefixes are n/16, n/8, n/4, n/2 and n."""


@dataclass
class MatryoshkaConfig(BatchTopKConfig):
    group_sizes: list[int] | None = None
    """Sizes of the consecutive latent groups (sum = n_latents); the prefixes made of whole
    groups each get a reconstruction loss. None: groups n/16, n/16, n/8, n/4, n/2."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.group_sizes is None:
            n = self.n_latents
            if n % DEFAULT_NESTING:
                raise ValueError(f"n_latents={n} is not divisible by {DEFAULT_NESTING}; pass "
                                 "group_sizes explicitly (positive integers summing to n_latents)")
            self.group_sizes = [n // 16, n // 16, n // 8, n // 4, n // 2]
        sizes = list(self.group_sizes)
        if not sizes or any(not isinstance(s, int) or s <= 0 for s in sizes):
            raise ValueError(f"group_sizes must be positive integers, got {self.group_sizes!r}")
        if sum(sizes) != self.n_latents:
            raise ValueError(f"group_sizes {sizes} sum to {sum(sizes)}, but n_latents is "
                             f"{self.n_latents}; make them add up")
        self.group_sizes = sizes


@register("matryoshka")
class MatryoshkaSAE(BatchTopKSAE):
    """BatchTopK whose nested prefixes each reconstruct the input."""

    config_class = MatryoshkaConfig
    cfg: MatryoshkaConfig

    def loss_terms(self, x: Tensor, target: Tensor, pre: Tensor, codes: Tensor, recon: Tensor,
                   ctx: StepContext) -> dict[str, Tensor]:
        """The base loss already holds the full dictionary's error (the last prefix); add one
        term per proper prefix, plus AuxK."""
        sizes = self.cfg.group_sizes
        assert sizes is not None
        inner = sum(sizes[:-1])
        terms: dict[str, Tensor] = {}
        if inner:
            partials = prefix_partials(codes[..., :inner], self.W_dec[:inner], sizes[:-1])
            skip = self.skip(x)
            offset = self.b_dec if skip is None else self.b_dec + skip
            prefix = 0
            for size, partial in zip(sizes[:-1], partials):
                prefix += size
                terms[f"mse_prefix_{prefix}"] = squared_error(partial + offset, target)
        return {**terms, **self.auxk_terms(pre, target, recon, ctx)}
