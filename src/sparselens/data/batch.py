"""The unit that flows from data sources (activation cache, live model) into training,
evaluation and interpretation."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

SOURCE_SEPARATOR = "+"
"""Joins source names into the name of their side-by-side stack (``a+b``): crosscoders and
multi-layer SAEs read several aligned hookpoints as one ``(B, n_sources * width)`` input."""


@dataclass
class ActivationBatch:
    """Rows of activations aligned across hookpoints, with where each row came from.

    Row i of every tensor describes the same token: ``acts[h][i]`` is the activation at
    hookpoint h, ``token_ids[i]`` the token, ``seq_ids[i]`` the chunk (sequence) it belongs to
    and ``positions[i]`` its position in that chunk.
    """

    acts: dict[str, Tensor]
    """Hookpoint name -> ``(B, width)`` activations."""
    token_ids: Tensor
    """``(B,)`` int64."""
    seq_ids: Tensor
    """``(B,)`` int64."""
    positions: Tensor
    """``(B,)`` int64."""

    def __len__(self) -> int:
        return int(self.token_ids.shape[0])

    def to(self, device: str | torch.device, dtype: torch.dtype | None = None) -> ActivationBatch:
        return ActivationBatch(
            acts={k: v.to(device=device, dtype=dtype or v.dtype) for k, v in self.acts.items()},
            token_ids=self.token_ids.to(device), seq_ids=self.seq_ids.to(device),
            positions=self.positions.to(device))


def stack_acts(batch: ActivationBatch, names: list[str]) -> ActivationBatch:
    """`batch` with exactly `names`: a stacked name (``a+b``) gets its sources side by side."""
    acts = {name: batch.acts[name] if SOURCE_SEPARATOR not in name else
            torch.cat([batch.acts[part] for part in name.split(SOURCE_SEPARATOR)], dim=-1)
            for name in names}
    return ActivationBatch(acts=acts, token_ids=batch.token_ids, seq_ids=batch.seq_ids,
                           positions=batch.positions)
