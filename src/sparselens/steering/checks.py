"""Checks on a steering request, run before any generation starts: a mistake costs a message,
not minutes of generation followed by a stack trace."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from sparselens.models.hookpoints import resolve
from sparselens.steering.lens_access import context_length, model_of, prompt_ids


class SteeringInputError(ValueError):
    """A steering request that cannot run; the message says what to change."""


def check_dictionary(lens: Any, name: str) -> None:
    if name not in lens.dictionaries:
        raise SteeringInputError(f"no dictionary named {name!r} is attached; attached: "
                                 f"{sorted(lens.dictionaries)}")


def check_latents(lens: Any, name: str, latents: Sequence[int]) -> None:
    """Every latent is an index of dictionary `name`."""
    check_dictionary(lens, name)
    n = lens.dictionaries[name].cfg.n_latents
    bad = [j for j in latents if not isinstance(j, int) or not 0 <= j < n]
    if bad:
        raise SteeringInputError(f"unknown latent(s) {bad[:5]} for dictionary {name!r}: it has "
                                 f"{n} latents, numbered 0..{n - 1}")


def check_coefficients(coefs: Sequence[float]) -> None:
    bad = [c for c in coefs if not isinstance(c, (int, float)) or not math.isfinite(c)]
    if bad:
        raise SteeringInputError(f"steering coefficients must be finite numbers, got {bad}")


def check_hookpoint(lens: Any, hookpoint: str) -> None:
    """The model has `hookpoint` and it resolves to exactly one place."""
    try:
        found = resolve(model_of(lens), hookpoint)
    except ValueError as err:
        raise SteeringInputError(str(err)) from None
    if len(found) != 1:
        raise SteeringInputError(f"hookpoint {hookpoint!r} names {len(found)} places; a steering "
                                 "vector goes to one (give a layer, not a wildcard)")


def check_prompt_fits(lens: Any, prompt: str, max_new_tokens: int) -> int:
    """The prompt plus `max_new_tokens` fits in the model's context; returns the prompt's length
    in tokens."""
    if not prompt:
        raise SteeringInputError("the prompt is empty; give --prompt TEXT")
    if max_new_tokens < 1:
        raise SteeringInputError(f"max_new_tokens must be at least 1, got {max_new_tokens}")
    n = int(prompt_ids(lens, prompt).shape[-1])
    limit = context_length(lens)
    if limit is not None and n + max_new_tokens > limit:
        raise SteeringInputError(
            f"the prompt has {n} tokens and {max_new_tokens} new ones are asked for, but the "
            f"model's context holds {limit}; shorten the prompt or lower max_new_tokens")
    return n
