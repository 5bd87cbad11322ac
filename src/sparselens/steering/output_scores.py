"""Output scores: does adding a latent move the model's next-token distribution toward the
tokens its decoder direction promotes? (Arad, Mueller and Belinkov 2025, "SAEs are good for
steering -- if you select the right features", section 3.)

For a latent j with logit-lens tokens T_j (the top-k tokens of its decoder row through the
final norm and unembedding, k = 20): run a neutral prompt ("From my experience,"), and at its
last position add ``amp_factor x (largest latent activation at that position)`` to latent j's
code, i.e. add that multiple of its decoder row to the activation, the error term untouched.
With p the next-token distribution after the edit and r the smallest rank (0 = most likely) of
any token of T_j under p::

    output_score = (1 - r / vocab_size) * max_{t in T_j} p(t)

High scores mark latents whose effect on the output is what their logit lens says: the ones
worth steering with. One forward per latent; pass a candidate list on large dictionaries.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from tqdm import tqdm

from sparselens.steering.checks import check_latents
from sparselens.steering.lens_access import model_of, prompt_ids
from sparselens.steering.logit_lens import logit_lens_top_tokens

NEUTRAL_PROMPT = "From my experience,"
AMP_FACTOR = 10.0
LOGIT_LENS_K = 20


@dataclass
class OutputScore:
    """One latent's output score and its two factors."""

    latent: int
    score: float
    rank_score: float
    """``1 - r / vocab`` for the best-ranked logit-lens token after the edit."""
    top_probability: float
    """Largest probability of a logit-lens token after the edit."""
    tokens: list[int]
    """The logit-lens tokens (best first)."""


def last_position_scale(lens: Any, name: str, ids: torch.Tensor) -> float:
    """The largest latent activation of dictionary `name` at the prompt's last position (the
    paper's unit of amplification); if nothing fires there, the largest over the prompt."""
    codes = lens.encode(ids).codes[name].dense()[0].float()
    top = float(codes[-1].max())
    return top if top > 0 else float(codes.max())


@torch.no_grad()
def output_scores(lens: Any, name: str, latents: Sequence[int], *,
                  prompt: str = NEUTRAL_PROMPT, amp_factor: float = AMP_FACTOR,
                  top_k: int = LOGIT_LENS_K, progress: bool = False) -> list[OutputScore]:
    """Output scores of `latents` of dictionary `name`, in the order given."""
    from sparselens.lens import AddLatent

    latents = [int(j) for j in latents]
    check_latents(lens, name, latents)
    dictionary = lens.dictionaries[name]
    tokens = logit_lens_top_tokens(model_of(lens), dictionary.W_dec.detach()[latents], top_k)
    ids = prompt_ids(lens, prompt)
    last = ids.shape[-1] - 1
    scale = last_position_scale(lens, name, ids)
    if scale <= 0:
        raise ValueError(f"no latent of {name!r} fires on the prompt {prompt!r}; the output "
                         "score's amplification is relative to the largest activation there: "
                         "choose another prompt")
    scores = []
    for latent, family in zip(tqdm(latents, disable=not progress, desc="output scores"), tokens):
        edit = AddLatent(name, latent=latent, coef=amp_factor * scale, positions=[last])
        logits = lens.forward(ids, edits=[edit]).logits[0, -1].float()
        probs = torch.softmax(logits, dim=-1)
        family_probs = probs[family.to(probs.device)]
        best_rank = int((probs > family_probs.max()).sum())
        rank_score = 1.0 - best_rank / probs.shape[-1]
        top_probability = float(family_probs.max())
        scores.append(OutputScore(latent, rank_score * top_probability, rank_score,
                                  top_probability, family.tolist()))
    return scores
