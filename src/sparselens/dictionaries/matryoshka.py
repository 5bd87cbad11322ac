"""Matryoshka BatchTopK SAE (Bussmann, Nabeshima, Karvonen and Nanda, "Learning Multi-Level
Features with Matryoshka Sparse Autoencoders", 2025).

The latents are split into consecutive groups; every prefix made of whole groups must
reconstruct the input on its own. The loss is the paper's sum over prefixes m in M:

    L = Σ_m ||x - (f(x)[:m] W_dec[:m] + b_dec)||² + α L_aux

with f chosen by BatchTopK over the whole dictionary (and the BatchTopK threshold at
inference). Early latents are pushed to carry general features, later ones the refinements,
which counters feature absorption. ``group_sizes`` is in the saved config.

Training runs through BatchTopK's sparse kernel; each proper prefix is decoded from the kept
entries whose latent lies inside it (`sparse_loss_terms`), the dense `loss_terms` being the
reference.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from sparselens.dictionaries import kernels
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
    kernel_selection = "batch"

    def prefix_ends(self) -> list[int]:
        """End of every proper prefix (the full dictionary is the base loss's ``mse``)."""
        sizes = self.cfg.group_sizes
        assert sizes is not None
        return [sum(sizes[:j + 1]) for j in range(len(sizes) - 1)]

    def decoder_offset(self, x: Tensor) -> Tensor:
        """What every prefix's decode adds: ``b_dec`` and the skip path, if any."""
        skip = self.skip(x)
        return self.b_dec if skip is None else self.b_dec + skip

    def loss_terms(self, x: Tensor, target: Tensor, pre: Tensor, codes: Tensor, recon: Tensor,
                   ctx: StepContext) -> dict[str, Tensor]:
        """The base loss already holds the full dictionary's error (the last prefix); add one
        term per proper prefix, plus AuxK."""
        sizes = self.cfg.group_sizes
        assert sizes is not None
        terms: dict[str, Tensor] = {}
        ends = self.prefix_ends()
        if ends:
            partials = prefix_partials(codes[..., :ends[-1]], self.W_dec[:ends[-1]], sizes[:-1])
            offset = self.decoder_offset(x)
            for end, partial in zip(ends, partials):
                terms[f"mse_prefix_{end}"] = squared_error(partial + offset, target)
        return {**terms, **self.auxk_terms(pre, target, recon, ctx)}

    def sparse_loss_terms(self, x: Tensor, target: Tensor, fast: kernels.SparseForward,
                          recon: Tensor, ctx: StepContext) -> dict[str, Tensor]:
        """`loss_terms` from the kept entries: a prefix's decode is the sparse decode of the
        entries whose latent lies inside it (the others' codes set to zero, which adds exact
        zeros and passes no gradient), so no dense ``(B, n)`` matrix is built."""
        terms: dict[str, Tensor] = {}
        offset = self.decoder_offset(x)
        with torch.autocast(x.device.type, enabled=False):
            for end in self.prefix_ends():
                inside = torch.where(fast.indices < end, fast.codes, 0.0)
                partial = kernels.sparse_decode(inside, fast.pattern, self.W_dec)
                terms[f"mse_prefix_{end}"] = squared_error(partial + offset, target)
        return {**terms, **self.dead_auxk_terms(x, target, recon, ctx)}
