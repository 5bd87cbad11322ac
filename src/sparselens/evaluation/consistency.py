"""Consistency across seeds: do two dictionaries trained alike find the same features?

Song et al. (2025, "Position: Mechanistic Interpretability Should Prioritize Feature
Consistency in SAEs") propose the pairwise dictionary mean correlation coefficient (PW-MCC):
match the latents of two dictionaries one-to-one so that the summed cosine similarity of their
decoder directions is maximal (the Hungarian algorithm, `scipy.optimize.linear_sum_assignment`),
then average the matched cosines. We also report the fraction of matched pairs above 0.7
cosine (the paper's threshold for a consistently learned feature).

Cosines are signed: a latent and its negation are different features for non-negative codes.
With different widths, the smaller dictionary's latents are all matched (the assignment is
rectangular) and the mean runs over them.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from sparselens.evaluation.matching import Matching
from sparselens.evaluation.matching import match_decoders as match


def match_decoders(a: Tensor, b: Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Optimal one-to-one matching of decoder rows: ``(rows of a, rows of b, cosines)``
    (`evaluation.matching`, shared with `sparselens compare`)."""
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"decoders of width {a.shape[1]} and {b.shape[1]} live in different "
                         "spaces: compare dictionaries trained on the same hookpoint")
    matching: Matching = match(a.detach().float().cpu(), b.detach().float().cpu())
    return matching.rows, matching.cols, matching.similarity


def consistency_metrics(a: Tensor, b: Tensor, *, threshold: float = 0.7) -> dict[str, Any]:
    """PW-MCC and the fraction matched above `threshold` between decoders `a` and `b`."""
    _, _, matched = match_decoders(a, b)
    return {"pw_mcc": float(matched.mean()),
            "fraction_matched": float((matched > threshold).mean()),
            "match_threshold": threshold, "n_matched": int(matched.size),
            "matched_cosine_quantiles": {str(q): float(np.quantile(matched, q))
                                         for q in (0.1, 0.25, 0.5, 0.75, 0.9)}}


def pairwise_consistency(decoders: dict[str, Tensor], *,
                         threshold: float = 0.7) -> dict[str, Any]:
    """Consistency of every pair among several seeds, plus the mean PW-MCC over pairs."""
    names = list(decoders)
    if len(names) < 2:
        raise ValueError("consistency needs at least two dictionaries (different seeds)")
    pairs = [{"a": x, "b": y, **consistency_metrics(decoders[x], decoders[y],
                                                     threshold=threshold)}
             for i, x in enumerate(names) for y in names[i + 1:]]
    return {"pairs": pairs,
            "mean_pw_mcc": float(torch.tensor([p["pw_mcc"] for p in pairs]).mean()),
            "mean_fraction_matched": float(torch.tensor(
                [p["fraction_matched"] for p in pairs]).mean())}
