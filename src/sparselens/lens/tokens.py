"""Text (or token ids) in, a padded token grid out, with the positions nothing should touch."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor

from sparselens.data.chunking import special_token_ids

Inputs = str | Sequence[str] | Tensor


@dataclass
class Tokens:
    """A ``(B, L)`` grid of token ids."""

    ids: Tensor
    """int64 token ids."""
    attention_mask: Tensor
    """1 on real tokens, 0 on padding."""
    special: Tensor
    """True on special tokens (BOS, EOS) and padding: dictionaries leave these alone."""

    @property
    def shape(self) -> tuple[int, int]:
        return (int(self.ids.shape[0]), int(self.ids.shape[1]))

    def to(self, device: str | torch.device) -> Tokens:
        return Tokens(self.ids.to(device), self.attention_mask.to(device), self.special.to(device))


def context_length(model: Any) -> int | None:
    """The longest sequence the model's position encoding takes, if its config says."""
    config = getattr(model, "config", None)
    config = getattr(config, "text_config", None) or config
    value = getattr(config, "max_position_embeddings", None)
    return int(value) if value else None


def pad_id(tokenizer: Any) -> int:
    for token_id in (tokenizer.pad_token_id, tokenizer.eos_token_id, 0):
        if token_id is not None:
            return int(token_id)
    return 0


def padded_grid(tokenizer: Any, rows: Sequence[Sequence[int]],
                padding_side: Literal["left", "right"] = "right") -> Tokens:
    """Token-id rows padded into one grid, `special` set on the tokenizer's special tokens and
    on the padding (what every caller that already holds token ids needs)."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id(tokenizer), dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, row in enumerate(rows):
        span = slice(width - len(row), width) if padding_side == "left" else slice(0, len(row))
        ids[i, span] = torch.tensor(list(row), dtype=torch.long)
        mask[i, span] = 1
    specials = torch.tensor(special_token_ids(tokenizer), dtype=torch.long)
    return Tokens(ids, mask, torch.isin(ids, specials) | (mask == 0))


def tokenize(tokenizer: Any, inputs: Inputs | Tokens, *, context: int | None,
             padding_side: Literal["left", "right"] = "right",
             max_length: int | None = None, truncate: bool = False) -> Tokens:
    """Token grid for a text, a list of texts, or ids ``(L,)``/``(B, L)``.

    Texts longer than `max_length` (default: the model's context) are an error, not silently
    cut: a truncated prompt changes what the model computes. `truncate=True` keeps the first
    `max_length` tokens of each text instead (corpus snippets, not prompts).
    """
    limit = max_length or context
    if isinstance(inputs, Tokens):
        return inputs
    specials = torch.tensor(special_token_ids(tokenizer), dtype=torch.long)
    if isinstance(inputs, Tensor):
        ids = inputs.long()
        if ids.ndim == 1:
            ids = ids[None]
        if ids.ndim != 2:
            raise ValueError(f"token ids must be (L,) or (B, L), got shape {tuple(inputs.shape)}")
        if truncate and limit is not None:
            ids = ids[:, :limit]
        mask = torch.ones_like(ids)
    else:
        texts = [inputs] if isinstance(inputs, str) else list(inputs)
        if not texts or not all(isinstance(t, str) for t in texts):
            raise ValueError("give a text, a non-empty list of texts, or a tensor of token ids")
        rows = [tokenizer(t)["input_ids"] for t in texts]
        if truncate and limit is not None:
            rows = [r[:limit] for r in rows]
        if any(len(r) == 0 for r in rows):
            raise ValueError("a text tokenized to no tokens; give non-empty text")
        grid = padded_grid(tokenizer, rows, padding_side)
        ids, mask = grid.ids, grid.attention_mask
    if limit is not None and ids.shape[1] > limit:
        raise ValueError(f"the input is {ids.shape[1]} tokens long, more than the "
                         f"{'max_length' if max_length else 'model context'} of {limit}; "
                         "shorten the text or split it into pieces")
    special = torch.isin(ids, specials) | (mask == 0)
    return Tokens(ids=ids, attention_mask=mask, special=special)
