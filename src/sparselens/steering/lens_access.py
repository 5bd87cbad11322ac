"""The few things steering reads from a `Lens` beyond encode/forward/generate, in one place."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import Tensor, nn


def model_of(lens: Any) -> nn.Module:
    """The `nn.Module` under the lens (for the logit lens and for capturing dense activations:
    neither edits the forward pass)."""
    return lens.model


def tokenizer_of(lens: Any) -> Any:
    return lens.tokenizer


def prompt_ids(lens: Any, text: str) -> Tensor:
    """Token ids ``(1, L)`` of one prompt, tokenised as the lens does for generation."""
    return lens.tokenize([text]).ids


def context_length(lens: Any) -> int | None:
    """The longest sequence the model accepts (None when its config does not say)."""
    return lens.context


def generate(lens: Any, prompt: str, edits: list, max_new_tokens: int) -> tuple[str, Tensor]:
    """Greedy continuation of `prompt` under `edits`: (continuation text, its token ids)."""
    gen = lens.generate(prompt, max_new_tokens=max_new_tokens, edits=edits, do_sample=False)
    return gen.texts[0], gen.ids[0, gen.prompt_length:].cpu()


def truncated_tokens(lens: Any, texts: Sequence[str], max_length: int | None) -> Any:
    """The token grid of `texts` (right-padded), each cut to its first `max_length` tokens:
    corpus snippets for scoring and ablation, where `Lens.tokenize` would refuse a long text
    rather than cut it."""
    import torch

    from sparselens.lens import Tokens
    from sparselens.lens.tokens import pad_id

    if max_length is None:
        return lens.tokenize(list(texts))
    rows = [lens.tokenizer(t)["input_ids"][:max_length] for t in texts]
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id(lens.tokenizer), dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, row in enumerate(rows):
        ids[i, :len(row)] = torch.tensor(row, dtype=torch.long)
        mask[i, :len(row)] = 1
    grid = lens.tokenize(ids)          # marks the special tokens the lens knows
    mask = mask.to(grid.ids.device)
    return Tokens(grid.ids, mask, grid.special | (mask == 0))
