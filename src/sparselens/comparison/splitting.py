"""Many-to-one matches: which latents of a small dictionary split into several of a large one.

A wider dictionary trained on the same activations often replaces one general latent ("a
number") by a family of specific ones ("a year", "a price", ...): feature splitting (Bricken et
al. 2023, "Towards monosemanticity"). In decoder space the parent direction is then close to a
non-negative combination of its children's directions, while no single child is as close.

For every latent of the small dictionary this finds that combination by greedy non-negative
orthogonal matching pursuit over the large dictionary's unit decoder rows: start from the
`candidates` nearest rows (by cosine, found in blocks), add the row most aligned with what is
still unexplained, refit the weights with non-negative least squares, stop at `max_children` or
when a new row no longer helps. A latent is reported as split when the combination's cosine
clears `min_cosine` and beats the best single row by at least `min_gain`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import Tensor

from sparselens.evaluation.candidates import top_candidates
from sparselens.evaluation.matching import unit_rows


@dataclass
class SplitFit:
    """The best sparse non-negative combination of large-dictionary rows for one latent."""

    latent: int
    """Latent of the small dictionary."""
    children: list[int]
    """Latents of the large dictionary, in the order pursuit chose them."""
    weights: list[float]
    """Non-negative weight of each child (unit directions)."""
    cosine: float
    """Cosine between the latent's direction and the combination."""
    single_cosine: float
    """Cosine with its single nearest large-dictionary latent."""

    @property
    def gain(self) -> float:
        return self.cosine - self.single_cosine

    def to_dict(self) -> dict:
        return asdict(self) | {"gain": self.gain}


def _pursue(target: np.ndarray, atoms: np.ndarray, max_children: int,
            tolerance: float) -> tuple[list[int], np.ndarray, float]:
    """Greedy NNLS pursuit of unit `target` over unit rows `atoms` ``(m, d)``; returns (chosen
    rows, weights, cosine of the fit)."""
    from scipy.optimize import nnls

    chosen: list[int] = []
    weights = np.zeros(0)
    residual, cosine = target.copy(), 0.0
    for _ in range(max_children):
        scores = atoms @ residual
        scores[chosen] = -np.inf
        best = int(np.argmax(scores))
        if scores[best] <= tolerance:
            break
        trial = [*chosen, best]
        trial_weights, _ = nnls(atoms[trial].T, target)
        fit = trial_weights @ atoms[trial]
        norm = float(np.linalg.norm(fit))
        trial_cosine = float(fit @ target / norm) if norm > 0 else 0.0
        if chosen and trial_cosine <= cosine + tolerance:
            break
        chosen, weights, cosine = trial, trial_weights, trial_cosine
        residual = target - fit
    keep = weights > 0
    return [c for c, k in zip(chosen, keep) if k], weights[keep], cosine


@torch.no_grad()
def fit_splits(w_small: Tensor, w_large: Tensor, max_children: int = 4, candidates: int = 32,
               latents: Tensor | None = None, tolerance: float = 1e-3) -> list[SplitFit]:
    """A `SplitFit` for every latent of the small dictionary (or only `latents`)."""
    if w_small.shape[1] != w_large.shape[1]:
        raise ValueError(f"the decoders have widths {w_small.shape[1]} and {w_large.shape[1]}: "
                         "feature splitting compares directions in one space")
    if max_children < 1:
        raise ValueError(f"max_children must be at least 1, got {max_children}")
    small, large = unit_rows(w_small), unit_rows(w_large)
    ids = torch.arange(small.shape[0]) if latents is None else torch.as_tensor(latents).long()
    row_val, row_idx, _, _ = top_candidates(small[ids], large, candidates)
    small64, large64 = small.double().numpy(), large.double().numpy()
    fits = []
    for row, latent in enumerate(ids.tolist()):
        pool = row_idx[row].numpy()
        chosen, weights, cosine = _pursue(small64[latent], large64[pool], max_children,
                                          tolerance)
        fits.append(SplitFit(latent, [int(pool[c]) for c in chosen],
                             [float(w) for w in weights], cosine, float(row_val[row, 0])))
    return fits


def feature_splits(w_small: Tensor, w_large: Tensor, min_cosine: float = 0.8,
                   min_gain: float = 0.05, **options) -> list[SplitFit]:
    """The latents of the small dictionary that split: two or more children whose combination
    reaches `min_cosine` and beats the single best child by `min_gain`; strongest gain first."""
    fits = fit_splits(w_small, w_large, **options)
    found = [f for f in fits
             if len(f.children) >= 2 and f.cosine >= min_cosine and f.gain >= min_gain]
    return sorted(found, key=lambda f: -f.gain)
