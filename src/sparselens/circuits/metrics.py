"""What a circuit explains: a scalar computed from the logits of one prompt.

A metric is a function ``(logits (B, L, vocab), ids (B, L)) -> (B,)`` so the same metric
serves a batch of copies of the prompt (one backward per row in `graph`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

MetricFn = Callable[[Tensor, Tensor], Tensor]


@dataclass(frozen=True)
class Metric:
    """A named scalar of the logits at the last position."""

    name: str
    fn: MetricFn
    token_ids: tuple[int, ...] = ()

    def __call__(self, logits: Tensor, ids: Tensor) -> Tensor:
        return self.fn(logits, ids)


def single_token(tokenizer: Any, text: str) -> int:
    """The one token `text` encodes to (without special tokens), or a clear error."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if len(ids) != 1:
        pieces = [tokenizer.decode([i]) for i in ids]
        raise ValueError(f"target {text!r} is {len(ids)} tokens ({pieces}); a circuit target must "
                         "be a single token: pick one of those pieces (often with its leading "
                         "space, e.g. ' Paris')")
    return int(ids[0])


def logit(tokenizer: Any, target: str) -> Metric:
    """The logit of `target` at the last position."""
    token = single_token(tokenizer, target)
    return Metric(f"logit({target!r})", lambda lg, ids: lg[:, -1, token].float(), (token,))


def logit_diff(tokenizer: Any, target: str, contrast: str) -> Metric:
    """``logit(target) - logit(contrast)`` at the last position."""
    a, b = single_token(tokenizer, target), single_token(tokenizer, contrast)
    return Metric(f"logit({target!r}) - logit({contrast!r})",
                  lambda lg, ids: (lg[:, -1, a] - lg[:, -1, b]).float(), (a, b))


def loss() -> Metric:
    """Mean next-token cross-entropy over the prompt."""

    def fn(lg: Tensor, ids: Tensor) -> Tensor:
        log_probs = torch.log_softmax(lg[:, :-1].float(), dim=-1)
        return -log_probs.gather(-1, ids[:, 1:, None]).squeeze(-1).mean(-1)

    return Metric("loss", fn)
