"""The few things steering reads from a `Lens` beyond its documented calls, in one place."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn


def model_of(lens: Any) -> nn.Module:
    """The `nn.Module` under the lens (for the logit lens and for capturing dense activations:
    neither installs an edit)."""
    model = lens.model
    return model.model if hasattr(model, "tokenizer") else model


def tokenizer_of(lens: Any) -> Any:
    tokenizer = getattr(lens, "tokenizer", None)
    return tokenizer if tokenizer is not None else lens.model.tokenizer


def prompt_ids(lens: Any, text: str) -> Tensor:
    """Token ids ``(1, L)`` of one prompt, tokenised as the lens does for generation."""
    return lens.tokenize([text]).ids


def context_length(model: nn.Module) -> int | None:
    """The longest sequence the model accepts, from its config (None when it does not say)."""
    config = getattr(model, "config", None)
    for key in ("max_position_embeddings", "n_positions", "max_sequence_length"):
        value = getattr(config, key, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def device_of(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def generate(lens: Any, prompt: str, edits: list, max_new_tokens: int) -> tuple[str, Tensor]:
    """Greedy continuation of `prompt` under `edits`: (continuation text, its token ids)."""
    gen = lens.generate(prompt, max_new_tokens=max_new_tokens, edits=edits, do_sample=False)
    return gen.text, gen.new_ids
