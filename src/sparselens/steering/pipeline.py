"""The `sparselens steer` pipelines as library calls: resolve what to steer with, then show
one steer side by side or sweep it against the dense baseline."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from sparselens.steering.checks import (
    SteeringInputError,
    check_coefficients,
    check_latents,
    check_prompt_fits,
)
from sparselens.steering.concepts import (
    SWEEP_PROMPTS,
    contrast_prompts,
    latent_words,
    latents_for_concept,
)
from sparselens.steering.contrast import mean_difference_vector
from sparselens.steering.steer import SideBySide, Steer, latent_steer, side_by_side, vector_steer
from sparselens.steering.sweep import SweepResult, sweep


@dataclass
class SteerSpec:
    """What to steer toward: a latent of a dictionary, concept words, or both."""

    dictionary: str
    latent: int | None = None
    words: list[str] = field(default_factory=list)
    description: str | None = None

    def resolve(self, lens: Any) -> tuple[int, list[str], str]:
        """(latent, concept words, description); checks the latent first."""
        if self.latent is None:
            if not self.words:
                raise SteeringInputError("give --latent N or --concept-words WORD ...")
            latent = latents_for_concept(lens, self.dictionary, self.words)[0].latent
        else:
            check_latents(lens, self.dictionary, [self.latent])
            latent = self.latent
        words = list(self.words) or latent_words(lens, self.dictionary, latent)
        return latent, words, self.description or ", ".join(words)


RELATIVE_COEFS = (0.0, 1 / 128, 1 / 64, 1 / 32, 1 / 16, 1 / 8)
"""Default sweep, in units of the median activation norm at the dictionary's site."""


@torch.no_grad()
def typical_norm(lens: Any, name: str, prompts: Sequence[str]) -> float:
    """Median norm of dictionary `name`'s input activation over the prompts' ordinary tokens:
    the scale a steering coefficient is measured against (about 3,300 at gemma-3-270m's
    resid.6, about 6 in the tiny test model)."""
    enc = lens.encode(list(prompts), names=[name])
    acts = enc.activations[name].float()
    keep = ~enc.tokens.special
    if not keep.any():
        raise SteeringInputError("the prompts hold no ordinary tokens")
    return float(acts[keep].norm(dim=-1).median())


def run_side_by_side(lens: Any, spec: SteerSpec, coef: float, prompt: str,
                     max_new_tokens: int) -> SideBySide:
    check_coefficients([coef])
    check_prompt_fits(lens, prompt, max_new_tokens)
    latent, _, _ = spec.resolve(lens)
    result = side_by_side(lens, latent_steer(spec.dictionary, latent), coef, prompt,
                          max_new_tokens)
    result.site_norm = typical_norm(lens, spec.dictionary, [prompt])
    return result


def run_sweep(lens: Any, spec: SteerSpec, coefs: Sequence[float] | None,
              prompts: Sequence[str] | None, max_new_tokens: int, out: str | Path, *,
              dense: bool = True) -> tuple[SweepResult, tuple[Path, Path]]:
    """Sweep the latent (and the dense mean-difference vector of the concept's contrast prompts
    at the dictionary's hookpoint); write sweep.json and sweep.png to `out`. `coefs` None:
    `RELATIVE_COEFS` times the median activation norm on the prompts."""
    prompts = list(prompts or SWEEP_PROMPTS)
    if coefs is not None:
        check_coefficients(coefs)
    for prompt in prompts:
        check_prompt_fits(lens, prompt, max_new_tokens)
    latent, words, description = spec.resolve(lens)
    if coefs is None:
        norm = typical_norm(lens, spec.dictionary, prompts)
        coefs = [round(f * norm, 3) for f in RELATIVE_COEFS]
    steers: list[Steer] = [latent_steer(spec.dictionary, latent)]
    if dense:
        hookpoint = dense_hookpoint(lens, spec.dictionary)
        positive, negative = contrast_prompts(words)
        vector = mean_difference_vector(lens, hookpoint, positive, negative)
        steers.append(vector_steer(hookpoint, vector, label=f"dense mean-diff @ {hookpoint}"))
    result = sweep(lens, steers, coefs, prompts, description, max_new_tokens=max_new_tokens)
    return result, result.write(out)


def dense_hookpoint(lens: Any, name: str) -> str:
    """Where the dictionary writes (its target hookpoint for a transcoder)."""
    cfg = lens.dictionaries[name].cfg
    hookpoint = cfg.target_hookpoint or cfg.hookpoint
    if hookpoint is None:
        raise SteeringInputError(f"dictionary {name!r} does not record its hookpoint")
    return hookpoint
