"""The unit that flows from data sources (activation cache, live model) into training,
evaluation and interpretation."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

SOURCE_SEPARATOR = "+"
"""Joins source names into the name of their side-by-side stack (``a+b``): crosscoders and
multi-layer SAEs read several aligned hookpoints as one ``(B, n_sources * width)`` input.
`join_sources` and `split_sources` are the only places that build or parse such names."""


def join_sources(sources: Sequence[str]) -> str:
    """The name of the flattened stack of `sources` (``a+b``), as it appears in batches."""
    for name in sources:
        if SOURCE_SEPARATOR in name:
            raise ValueError(f"source name {name!r} contains {SOURCE_SEPARATOR!r}, which joins "
                             "source names; rename the hookpoint")
    return SOURCE_SEPARATOR.join(sources)


def split_sources(name: str) -> list[str]:
    """The sources of a stacked name: ``"a+b" -> ["a", "b"]``; ``"a" -> ["a"]``."""
    return name.split(SOURCE_SEPARATOR)


LABEL_SEPARATOR = "/"
"""Joins a model's label and a hookpoint (``base/resid.6``) when several models are read on
the same tokens; `labelled_name` and `split_label` build and parse such names."""


def labelled_name(label: str | None, name: str) -> str:
    """The site name of hookpoint `name` of the model labelled `label` (None: the only model)."""
    if label is None:
        return name
    if not label or LABEL_SEPARATOR in label:
        raise ValueError(f"model label {label!r} must be non-empty and contain no "
                         f"{LABEL_SEPARATOR!r}")
    return f"{label}{LABEL_SEPARATOR}{name}"


def split_label(name: str) -> tuple[str | None, str]:
    """``"base/resid.6" -> ("base", "resid.6")``; ``"resid.6" -> (None, "resid.6")``."""
    label, sep, rest = name.partition(LABEL_SEPARATOR)
    return (label, rest) if sep else (None, name)


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


def stack_acts(batch: ActivationBatch, names: Sequence[str]) -> ActivationBatch:
    """`batch` with exactly `names`: a stacked name (``a+b``) gets its sources side by side.

    Every source must be in the batch, and the sources of one stack must share a width."""
    acts = {}
    for name in names:
        if name in batch.acts:
            acts[name] = batch.acts[name]
            continue
        parts = split_sources(name)
        missing = [p for p in parts if p not in batch.acts]
        if missing:
            raise ValueError(f"the batch has no activations for {missing}; it has "
                             f"{sorted(batch.acts)}")
        widths = {p: int(batch.acts[p].shape[-1]) for p in parts}
        if len(set(widths.values())) != 1:
            raise ValueError(f"sources to stack must have one width, got {widths}")
        acts[name] = torch.cat([batch.acts[p] for p in parts], dim=-1)
    return ActivationBatch(acts=acts, token_ids=batch.token_ids, seq_ids=batch.seq_ids,
                           positions=batch.positions)
