"""Dose-response of a steer: the probability of a token family as the coefficient grows.

The check behind "steering works": a latent whose logit lens points at a family of tokens
should raise that family's next-token probability monotonically with its coefficient, over a
range (far out, the activation leaves the model's operating range and anything can happen).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from sparselens.steering.checks import check_coefficients
from sparselens.steering.lens_access import prompt_ids
from sparselens.steering.steer import Steer, check_steer


@torch.no_grad()
def family_probability(lens: Any, steer: Steer, coefs: Sequence[float], prompts: Sequence[str],
                       tokens: Tensor | Sequence[int]) -> list[float]:
    """Mean over `prompts` of the total next-token probability of `tokens` at the prompt's
    last position, for each coefficient (0 runs with no edits)."""
    check_coefficients(coefs)
    check_steer(lens, steer)
    family = torch.as_tensor(tokens, dtype=torch.long)
    out = []
    for coef in coefs:
        edits = steer.edits(coef) if coef != 0 else []
        total = 0.0
        for prompt in prompts:
            logits = lens.forward(prompt_ids(lens, prompt), edits=edits).logits[0, -1].float()
            probs = torch.softmax(logits, dim=-1)
            total += float(probs[family.to(probs.device)].sum())
        out.append(total / len(prompts))
    return out


def is_monotonic(values: Sequence[float]) -> bool:
    """Strictly increasing."""
    return all(b > a for a, b in zip(values, values[1:]))
