"""The few things steering reads from a `Lens` beyond encode/forward/generate, in one place."""

from __future__ import annotations

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
