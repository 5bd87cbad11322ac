"""A concept given as words, turned into what steering needs: a description to score
generations against, contrast prompts for the dense baseline, and the latents that carry it.

Contrast prompts put each concept word and each neutral word in the same template, so the
two sets differ only in the word and the mean difference at the last token is the concept's
direction (the usual contrastive-activation-addition construction).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sparselens.steering.checks import SteeringInputError
from sparselens.steering.contrast import contrast_latents
from sparselens.steering.lens_access import model_of, tokenizer_of
from sparselens.steering.logit_lens import logit_lens_top_tokens
from sparselens.steering.output_scores import output_scores

TEMPLATES = ("Let me tell you about {}", "I keep thinking of {}", "The topic is {}")
NEUTRAL_WORDS = ("things", "something", "this", "stuff", "it", "that", "everything", "them")
SWEEP_PROMPTS = ("From my experience,", "I think that", "The best thing about today is",
                 "Here is a short story:", "My friend told me")


def contrast_prompts(words: Sequence[str]) -> tuple[list[str], list[str]]:
    """(positive, negative) prompts: every template with every concept word, and with every
    neutral word."""
    words = [w.strip() for w in words if w.strip()]
    if not words:
        raise SteeringInputError("give at least one concept word")
    positive = [t.format(w) for t in TEMPLATES for w in words]
    negative = [t.format(w) for t in TEMPLATES for w in NEUTRAL_WORDS]
    return positive, negative


def latent_words(lens: Any, name: str, latent: int, k: int = 10) -> list[str]:
    """A latent's logit-lens tokens as text (its description when none is given)."""
    ids = logit_lens_top_tokens(model_of(lens), lens.dictionaries[name].W_dec.detach()[[latent]],
                                k)[0]
    tokenizer = tokenizer_of(lens)
    words = [tokenizer.decode([int(t)]).strip() for t in ids]
    return [w for w in words if w]


@dataclass
class RankedLatent:
    latent: int
    code_difference: float
    output_score: float


def latents_for_concept(lens: Any, name: str, words: Sequence[str], *, candidates: int = 10,
                        ) -> list[RankedLatent]:
    """Latents carrying a concept given as words: the `candidates` latents with the largest
    mean code difference between the concept's and neutral contrast prompts, re-ranked by
    output score (Arad et al.: a latent that fires on the concept need not write it)."""
    positive, negative = contrast_prompts(words)
    contrast = contrast_latents(lens, name, positive, negative, top=candidates, reduce="last")
    contrast = [(j, d) for j, d in contrast if d > 0]
    if not contrast:
        raise SteeringInputError(f"no latent of {name!r} fires more on {list(words)} than on "
                                 "neutral words; try other words or another dictionary")
    scores = output_scores(lens, name, [j for j, _ in contrast])
    ranked = [RankedLatent(j, d, s.score) for (j, d), s in zip(contrast, scores)]
    return sorted(ranked, key=lambda r: r.output_score, reverse=True)
