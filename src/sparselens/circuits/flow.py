"""Feature flow: following a latent through the layers without data (Balagansky et al.,
"Analyze feature flow to enhance interpretation and steering in language models", 2025;
"Mechanistic permutability: match features across layers", 2024).

Between dictionaries at consecutive sites, every latent of the later one is matched to the
latent of the earlier one whose decoder direction (``by="decoder"``) is closest in cosine, or
whose decoder direction is closest to the later latent's encoder direction (``by="encoder"``:
what the later latent reads). A latent whose best cosine is below a threshold has no
predecessor: it is born at that layer. Chaining the matches gives a flow graph; `trace` follows
one latent backward and forward. `activation_agreement` checks the matches on real tokens:
matched pairs should fire together far more than random pairs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from sparselens.dictionaries.base import Dictionary

BLOCK = 4096
"""Rows of the cosine matrix formed at a time: 65,536 x 65,536 never materialises."""


def _unit(rows: Tensor) -> Tensor:
    rows = rows.detach().float()
    return rows / rows.norm(dim=-1, keepdim=True).clamp_min(1e-12)


@dataclass
class FlowStep:
    """Matches from the dictionary at `index` to the one at `index - 1`."""

    index: int
    predecessor: Tensor
    """``(n_latents of this dictionary,)`` best match in the previous one."""
    cosine: Tensor
    """Its cosine."""


def best_matches(earlier: Dictionary, later: Dictionary,
                 by: Literal["decoder", "encoder"] = "decoder") -> tuple[Tensor, Tensor]:
    """For each latent of `later`: (index of the closest latent of `earlier`, cosine)."""
    if earlier.cfg.d_out != (later.cfg.d_out if by == "decoder" else later.cfg.d_in):
        raise ValueError(f"cannot compare directions of widths {earlier.cfg.d_out} and "
                         f"{later.cfg.d_out if by == 'decoder' else later.cfg.d_in}: feature "
                         "flow needs dictionaries on the same residual width")
    if by not in ("decoder", "encoder"):
        raise ValueError(f"match by 'decoder' or 'encoder', got {by!r}")
    source = _unit(earlier.W_dec)
    target = _unit(later.W_dec if by == "decoder" else later.W_enc.T)
    best, cosine = [], []
    for start in range(0, target.shape[0], BLOCK):
        sims = target[start:start + BLOCK] @ source.T
        value, index = sims.max(dim=1)
        best.append(index)
        cosine.append(value)
    return torch.cat(best), torch.cat(cosine)


def flow(dictionaries: list[Dictionary], by: Literal["decoder", "encoder"] = "decoder"
         ) -> list[FlowStep]:
    """Matches between each consecutive pair, in the order given."""
    if len(dictionaries) < 2:
        raise ValueError("feature flow needs at least two dictionaries, in layer order")
    return [FlowStep(i, *best_matches(dictionaries[i - 1], dictionaries[i], by))
            for i in range(1, len(dictionaries))]


def trace(steps: list[FlowStep], index: int, latent: int, threshold: float = 0.5
          ) -> list[tuple[int, int, float]]:
    """``(dictionary index, latent, cosine to the previous)`` along the flow through one latent:
    back through predecessors while the cosine stays above `threshold`, then forward through the
    successor with the highest cosine."""
    path = [(index, latent, float("nan"))]
    i, j = index, latent
    while i > 0:
        step = steps[i - 1]
        cos = float(step.cosine[j])
        if cos < threshold:
            break
        path[0] = (path[0][0], path[0][1], cos)
        j, i = int(step.predecessor[j]), i - 1
        path.insert(0, (i, j, float("nan")))
    i, j = index, latent
    while i < len(steps):
        step = steps[i]
        candidates = ((step.predecessor == j) & (step.cosine >= threshold)).nonzero().flatten()
        if len(candidates) == 0:
            break
        best = candidates[step.cosine[candidates].argmax()]
        i, j = i + 1, int(best)
        path.append((i, j, float(step.cosine[best])))
    return path


def activation_agreement(earlier_codes: Tensor, later_codes: Tensor, step: FlowStep,
                         threshold: float = 0.5, seed: int = 0) -> dict[str, float]:
    """Mean Pearson correlation over tokens of matched pairs (cosine >= threshold) against the
    same number of random pairs; codes are dense ``(tokens, n_latents)`` on the same tokens."""
    matched = (step.cosine >= threshold).nonzero().flatten()
    if len(matched) == 0:
        raise ValueError(f"no matches above cosine {threshold}; lower the threshold")
    generator = torch.Generator().manual_seed(seed)
    random_earlier = torch.randint(earlier_codes.shape[1], (len(matched),), generator=generator)

    def mean_corr(a: Tensor, b: Tensor) -> float:
        a = a - a.mean(0)
        b = b - b.mean(0)
        denominator = (a.norm(dim=0) * b.norm(dim=0))
        alive = denominator > 0
        return float(((a * b).sum(0)[alive] / denominator[alive]).mean()) if alive.any() else 0.0

    later = later_codes[:, matched].double()
    return {"matched": mean_corr(earlier_codes[:, step.predecessor[matched]].double(), later),
            "random": mean_corr(earlier_codes[:, random_earlier].double(), later),
            "n_matched": len(matched)}
