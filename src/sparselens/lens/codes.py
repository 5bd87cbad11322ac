"""Sparse codes: which latents fire on each token, and how strongly, without the dense matrix.

A dictionary with 65,536 latents and an L0 of 50 has 1,300 times more zeros than values, so
everything that consumes codes (the example store, probes, the viewer, steering) takes them in
this form, as sparsify passes them: ``values`` and ``indices`` of shape ``(N, K)`` over
``N = prod(shape)`` tokens, K the largest number of active latents on any token. Rows with fewer
active latents are padded with value 0 (the index of a padding slot means nothing).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class SparseCodes:
    """Per-token sparse codes over a token grid of `shape` (e.g. ``(batch, length)``)."""

    values: Tensor
    """``(N, K)`` activations; 0 marks a padding slot."""
    indices: Tensor
    """``(N, K)`` int64 latent ids."""
    n_latents: int
    """Width of the dictionary the codes belong to."""
    shape: tuple[int, ...]
    """Token grid; ``N == prod(shape)``."""

    def __post_init__(self) -> None:
        n = math.prod(self.shape)
        if self.values.shape != self.indices.shape or self.values.ndim != 2:
            raise ValueError(f"values {tuple(self.values.shape)} and indices "
                             f"{tuple(self.indices.shape)} must be the same (N, K) shape")
        if self.values.shape[0] != n:
            raise ValueError(f"{self.values.shape[0]} rows of codes do not fill a token grid of "
                             f"shape {self.shape} ({n} tokens)")

    @classmethod
    def from_dense(cls, dense: Tensor) -> SparseCodes:
        """Keep the non-zero entries of ``(*shape, n_latents)`` codes."""
        shape, n_latents = tuple(dense.shape[:-1]), dense.shape[-1]
        flat = dense.detach().reshape(-1, n_latents)
        k = int((flat != 0).sum(dim=1).max()) if flat.numel() else 0
        if k == 0:
            empty = flat.new_zeros((flat.shape[0], 0))
            return cls(empty, empty.long(), n_latents, shape)
        top = flat.abs().topk(k, dim=1, sorted=False).indices
        values = flat.gather(1, top)
        order = values.abs().argsort(dim=1, descending=True)  # strongest first, padding last
        return cls(values.gather(1, order), top.gather(1, order), n_latents, shape)

    @property
    def n_tokens(self) -> int:
        return self.values.shape[0]

    def dense(self) -> Tensor:
        """Codes as a dense ``(*shape, n_latents)`` tensor."""
        out = self.values.new_zeros((self.n_tokens, self.n_latents))
        out.scatter_add_(1, self.indices, self.values)  # padding slots add zeros
        return out.reshape(*self.shape, self.n_latents)

    def latent(self, latent: int) -> Tensor:
        """Activation of one latent on every token, shape `shape`."""
        if not 0 <= latent < self.n_latents:
            raise IndexError(f"latent {latent} out of range: the dictionary has {self.n_latents} "
                             f"latents (0..{self.n_latents - 1})")
        hit = (self.indices == latent) & (self.values != 0)
        return (self.values * hit).sum(dim=1).reshape(self.shape)

    def l0(self) -> Tensor:
        """Number of active latents on every token, shape `shape`."""
        return (self.values != 0).sum(dim=1).reshape(self.shape)

    def select(self, mask: Tensor) -> SparseCodes:
        """The tokens where a `shape`-shaped bool mask is true, as a flat grid ``(M,)``."""
        if tuple(mask.shape) != self.shape:
            raise ValueError(f"mask of shape {tuple(mask.shape)} does not match codes of shape "
                             f"{self.shape}")
        rows = mask.reshape(-1).to(self.values.device)
        values = self.values[rows]
        return SparseCodes(values, self.indices[rows], self.n_latents, (values.shape[0],))

    def to(self, device: str | torch.device) -> SparseCodes:
        return SparseCodes(self.values.to(device), self.indices.to(device), self.n_latents,
                           self.shape)

    @staticmethod
    def cat(parts: Sequence[SparseCodes]) -> SparseCodes:
        """Concatenate along tokens into a flat grid (K becomes the largest of the parts)."""
        if not parts:
            raise ValueError("nothing to concatenate")
        widths = {p.n_latents for p in parts}
        if len(widths) != 1:
            raise ValueError(f"codes of dictionaries of different widths {sorted(widths)} cannot "
                             "be concatenated")
        k = max(p.values.shape[1] for p in parts)

        def pad(t: Tensor) -> Tensor:
            return torch.nn.functional.pad(t, (0, k - t.shape[1]))

        values = torch.cat([pad(p.values) for p in parts])
        indices = torch.cat([pad(p.indices) for p in parts])
        return SparseCodes(values, indices, widths.pop(), (values.shape[0],))
