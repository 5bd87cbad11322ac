"""Steer a generation and show it beside the unedited one: the Python side of `sparselens steer`.

A `Steer` turns a coefficient into edits, so a SAE latent and a dense vector sweep the same
way: `latent_steer` adds a decoder row (unit norm in sparselens dictionaries) times the
coefficient; `vector_steer` adds a dense vector, scaled to unit norm by default so that the two
share a coefficient scale.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from sparselens.steering.checks import (
    check_coefficients,
    check_hookpoint,
    check_latents,
    check_prompt_fits,
)
from sparselens.steering.lens_access import generate


@dataclass
class Steer:
    """A named way to steer: ``edits(coef)`` gives the edits for one coefficient."""

    label: str
    edits: Callable[[float], list]


def latent_steer(name: str, latent: int, positions: Sequence[int] | None = None) -> Steer:
    """Add latent `latent` of dictionary `name` (its decoder row times the coefficient)."""
    from sparselens.lens import AddLatent

    return Steer(f"{name}:{latent}", lambda coef: [AddLatent(name, latent=latent, coef=coef,
                                                              positions=positions)])


def vector_steer(hookpoint: str, vector: Tensor, *, unit_norm: bool = True,
                 label: str = "dense", positions: Sequence[int] | None = None) -> Steer:
    """Add `vector` at `hookpoint` times the coefficient (scaled to unit norm first unless
    `unit_norm` is False)."""
    from sparselens.lens import AddVector

    vec = vector.detach().float()
    if unit_norm:
        norm = float(vec.norm())
        if norm == 0:
            raise ValueError("the steering vector is zero (the two prompt sets gave the same "
                             "activations); use prompts that differ in the concept")
        vec = vec / norm
    return Steer(label, lambda coef: [AddVector(hookpoint, vec, coef=coef,
                                                positions=positions)])


def check_steer(lens: Any, steer: Steer) -> None:
    """The edits a steer makes name attached dictionaries, real latents and real hookpoints."""
    for edit in steer.edits(1.0):
        if hasattr(edit, "latent"):
            check_latents(lens, edit.dictionary, [edit.latent])
        if hasattr(edit, "hookpoint"):
            check_hookpoint(lens, edit.hookpoint)


@dataclass
class SideBySide:
    """An unedited and a steered continuation of one prompt."""

    prompt: str
    label: str
    coef: float
    unedited: str
    steered: str
    site_norm: float | None = None
    """Median activation norm at the steered site on the prompt (the coefficient's scale)."""

    def format(self) -> str:
        scale = (f" (median activation norm there: {self.site_norm:.4g})"
                 if self.site_norm is not None else "")
        return (f"prompt: {self.prompt!r}{scale}\n\n"
                f"--- unedited ---\n{self.prompt}{self.unedited}\n\n"
                f"--- steered ({self.label}, coef {self.coef:g}) ---\n"
                f"{self.prompt}{self.steered}\n")


@torch.no_grad()
def side_by_side(lens: Any, steer: Steer, coef: float, prompt: str,
                 max_new_tokens: int = 40) -> SideBySide:
    """Greedy continuations of `prompt` without and with the steer; every input is checked
    before the first token is generated."""
    check_coefficients([coef])
    check_steer(lens, steer)
    check_prompt_fits(lens, prompt, max_new_tokens)
    unedited, _ = generate(lens, prompt, [], max_new_tokens)
    steered, _ = generate(lens, prompt, steer.edits(coef), max_new_tokens)
    return SideBySide(prompt, steer.label, coef, unedited, steered)
