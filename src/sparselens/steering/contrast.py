"""Directions from two prompt sets: what differs between "positive" and "negative" prompts.

- `contrast_latents`: the latents whose mean code differs most between the sets (a sparse,
  named answer to "which features carry this concept?").
- `mean_difference_vector`: contrastive activation addition (Rimsky et al. 2024; Turner et al.
  2023): the mean activation of the positive prompts minus that of the negative ones at one
  hookpoint, read at the last token (as the `steering-vectors` package does by default) or
  averaged over every token. It is the dense baseline a SAE latent is compared with.

Activations are read with `Lens.capture` (a forward that stops after the hookpoint). Each
prompt is run on its own, so padding never shifts a "last token"; special tokens (BOS)
never count in an "all tokens" mean.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import torch
from torch import Tensor

from sparselens.steering.checks import SteeringInputError, check_dictionary, check_hookpoint

Reduce = Literal["last", "all"]


def _reduce(acts: Tensor, special: Tensor, reduce: Reduce) -> Tensor:
    """``(L, d)`` activations of one prompt -> ``(d,)``."""
    if reduce == "last":
        return acts[-1]
    keep = ~special.bool().to(acts.device)
    if not keep.any():
        raise SteeringInputError("a prompt has no ordinary tokens to average over")
    return acts[keep].mean(dim=0)


def _check_sets(positive: Sequence[str], negative: Sequence[str], reduce: str) -> None:
    if not positive or not negative:
        raise SteeringInputError("give at least one positive and one negative prompt")
    if reduce not in ("last", "all"):
        raise SteeringInputError(f"reduce must be 'last' or 'all', got {reduce!r}")


@torch.no_grad()
def mean_activation(lens: Any, hookpoint: str, prompts: Sequence[str],
                    reduce: Reduce = "last") -> Tensor:
    """Mean activation ``(d,)`` over `prompts` at `hookpoint` (float32)."""
    check_hookpoint(lens, hookpoint)
    total = None
    for prompt in prompts:
        toks = lens.tokenize([prompt])
        acts = lens.capture(toks, [hookpoint])[hookpoint][0].float()
        vec = _reduce(acts, toks.special[0], reduce)
        total = vec if total is None else total + vec
    assert total is not None
    return total / len(prompts)


def mean_difference_vector(lens: Any, hookpoint: str, positive: Sequence[str],
                           negative: Sequence[str], reduce: Reduce = "last") -> Tensor:
    """Contrastive activation addition: mean(positive) - mean(negative) at `hookpoint`."""
    _check_sets(positive, negative, reduce)
    return (mean_activation(lens, hookpoint, positive, reduce)
            - mean_activation(lens, hookpoint, negative, reduce))


@torch.no_grad()
def mean_codes(lens: Any, name: str, prompts: Sequence[str], reduce: Reduce = "all") -> Tensor:
    """Mean dense code ``(n_latents,)`` of dictionary `name` over `prompts`."""
    total = None
    for prompt in prompts:
        enc = lens.encode([prompt])
        codes = enc.codes[name].dense()[0].float()
        vec = _reduce(codes, enc.tokens.special[0], reduce)
        total = vec if total is None else total + vec
    assert total is not None
    return total / len(prompts)


def contrast_latents(lens: Any, name: str, positive: Sequence[str], negative: Sequence[str], *,
                     top: int = 10, reduce: Reduce = "all") -> list[tuple[int, float]]:
    """The `top` latents of `name` by mean code difference (positive minus negative),
    largest first, as ``(latent, difference)``."""
    check_dictionary(lens, name)
    _check_sets(positive, negative, reduce)
    diff = mean_codes(lens, name, positive, reduce) - mean_codes(lens, name, negative, reduce)
    values, latents = diff.topk(min(top, diff.numel()))
    return [(int(j), float(v)) for j, v in zip(latents, values)]
