"""Optimal one-to-one matching of two sets of latents, and the scores built on it (PW-MCC).

Two dictionaries agree on a feature when some latent of one and some latent of the other point
the same way (decoder cosine) or fire on the same tokens (activation correlation). Pairing every
latent with its single best partner can pair many with one; the consistency literature (Song et
al., "Position: mechanistic interpretability should prioritize feature consistency in SAEs",
2025: PW-MCC) pairs them one-to-one, maximising the summed similarity (the assignment problem),
and reports the mean similarity of the pairs.

Two solvers, one result type:

- **exact**: the dense similarity matrix and `scipy.optimize.linear_sum_assignment`. Memory is
  ``n_a * n_b`` float64 and time about cubic, so it serves widths up to a few thousand.
- **sparse**: only the `k` most similar partners of every latent (both directions, found in
  blocks so the dense matrix never exists), a latent free to stay unmatched: the
  maximum-weight matching of that graph, solved exactly per connected component
  (`partial_matching.py`: dense assignment for small components, LAPJVsp on a rectangular
  graph with one stand-in per row for large ones). Optimal on the graph;
  against the full problem it comes with a certificate: no one-to-one matching can exceed the
  mean of every latent's best similarity (`upper_bound`), so ``upper_bound - pwmcc`` bounds
  how far from optimal it can be (zero gap = provably optimal). Latents that found no
  candidate partner, or only a poor one (below 0.3: no counterpart in the other dictionary),
  are then re-matched exactly among themselves with a dense assignment on that leftover block,
  when it fits.

Every reported similarity is recomputed in float64 for the pairs chosen, so a dictionary matched
with a permutation of itself scores exactly 1.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from sparselens.evaluation.candidates import decoder_candidates
from sparselens.evaluation.partial_matching import max_weight_matching

PairSimilarity = Callable[[np.ndarray, np.ndarray], np.ndarray]
"""Similarity of arbitrary pairs ``(rows, cols) -> (n_pairs,)`` float64."""
BlockSimilarity = Callable[[np.ndarray, np.ndarray], np.ndarray]
"""Similarity of every row with every column ``(rows, cols) -> (n_rows, n_cols)`` float64."""

EXACT_LIMIT = 4096 * 4096
"""Largest ``n_a * n_b`` solved densely with linear_sum_assignment (128 MiB of float64)."""
PAIR_CHUNK = 16384
"""Pairs whose cosine is computed at a time (two gathers of this many float64 rows)."""
REFINE_BELOW = 0.3
"""Pairs the sparse solver matched below this similarity are re-matched densely among
themselves (they are latents without a real counterpart)."""


@dataclass
class Matching:
    """A one-to-one matching between latents of A (`rows`) and latents of B (`cols`)."""

    rows: np.ndarray
    """int64 latent ids in A, ascending."""
    cols: np.ndarray
    """int64 latent ids in B matched to `rows`."""
    similarity: np.ndarray
    """float64 similarity of each matched pair (cosine or correlation)."""
    n_a: int
    n_b: int
    method: str
    """"exact" (dense assignment) or "sparse" (assignment on the top-k candidate graph)."""
    upper_bound: float
    """Mean over the smaller side of each latent's best similarity to any latent of the other
    side: no one-to-one matching scores more."""
    measure: str = "decoder_cosine"
    best_a: np.ndarray | None = None
    """``(n_a,)`` each A latent's best similarity to any B latent (many-to-one), if known."""
    best_b: np.ndarray | None = None
    """``(n_b,)`` each B latent's best similarity to any A latent, if known."""

    @property
    def pwmcc(self) -> float:
        """Mean similarity of the matched pairs (every latent of the smaller side is matched)."""
        return float(self.similarity.sum() / max(1, min(self.n_a, self.n_b)))

    @property
    def gap(self) -> float:
        """`upper_bound` minus `pwmcc`: how far from the true optimum this matching can be."""
        return max(0.0, self.upper_bound - self.pwmcc)

    def fraction_above(self, threshold: float) -> float:
        """Share of the smaller side matched with similarity at least `threshold`."""
        return float((self.similarity >= threshold).sum() / max(1, min(self.n_a, self.n_b)))

    def histogram(self, bins: int = 20, low: float = -1.0,
                  high: float = 1.0) -> tuple[list[int], list[float]]:
        """(counts, bin edges) of the matched similarities."""
        counts, edges = np.histogram(np.clip(self.similarity, low, high), bins=bins,
                                     range=(low, high))
        return counts.tolist(), edges.tolist()

    def partner_in_b(self) -> np.ndarray:
        """``(n_a,)`` the B latent matched to each A latent, -1 where unmatched."""
        out = np.full(self.n_a, -1, dtype=np.int64)
        out[self.rows] = self.cols
        return out

    def partner_in_a(self) -> np.ndarray:
        """``(n_b,)`` the A latent matched to each B latent, -1 where unmatched."""
        out = np.full(self.n_b, -1, dtype=np.int64)
        out[self.cols] = self.rows
        return out

    def summary(self, thresholds: tuple[float, ...] = (0.5, 0.7, 0.9)) -> dict[str, Any]:
        counts, edges = self.histogram()
        return {"measure": self.measure, "method": self.method, "n_a": self.n_a,
                "n_b": self.n_b, "n_matched": int(self.rows.size), "pwmcc": self.pwmcc,
                "upper_bound": self.upper_bound, "gap": self.gap,
                "fraction_above": {str(t): self.fraction_above(t) for t in thresholds},
                "histogram": {"counts": counts, "edges": edges}}


def unit_rows(w: Tensor) -> Tensor:
    """Rows scaled to unit norm (zero rows stay zero), float32 (or float64 if given) on the
    same device."""
    w = w.detach() if w.dtype == torch.float64 else w.detach().float()
    return w / torch.linalg.vector_norm(w, dim=1, keepdim=True).clamp_min(1e-12)


def cosine_pairs(a: Tensor, b: Tensor) -> PairSimilarity:
    """Exact float64 cosine of chosen row pairs of `a` and `b`.

    ``dot / sqrt(|a|^2 |b|^2)``: for identical rows the square root of the rounded square is
    exact, so a row against itself gives exactly 1.
    """
    a64, b64 = a.detach().double().cpu(), b.detach().double().cpu()
    sq_a, sq_b = (a64 * a64).sum(1), (b64 * b64).sum(1)

    def similarity(rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        out = np.empty(len(rows))
        for start in range(0, len(rows), PAIR_CHUNK):  # bounded memory for millions of pairs
            r = torch.as_tensor(rows[start:start + PAIR_CHUNK])
            c = torch.as_tensor(cols[start:start + PAIR_CHUNK])
            dots = torch.linalg.vecdot(a64[r], b64[c])
            norms = torch.sqrt(sq_a[r] * sq_b[c])
            out[start:start + PAIR_CHUNK] = torch.where(
                norms > 0, dots / norms.clamp_min(1e-300), torch.zeros_like(dots)).clamp(-1, 1)
        return out

    return similarity


def cosine_block(a: Tensor, b: Tensor) -> BlockSimilarity:
    """Dense float64 cosines between chosen rows of `a` and chosen rows of `b`."""

    def block(rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        ua = unit_rows(a[torch.as_tensor(rows)].double()).double().cpu()
        ub = unit_rows(b[torch.as_tensor(cols)].double()).double().cpu()
        return (ua @ ub.T).numpy()

    return block


def match_dense(similarity: Tensor | np.ndarray, measure: str = "similarity") -> Matching:
    """Exact optimal matching of a dense ``(n_a, n_b)`` similarity matrix."""
    from scipy.optimize import linear_sum_assignment

    sim = np.asarray(similarity.detach().cpu().double() if isinstance(similarity, Tensor)
                     else similarity, dtype=np.float64)
    rows, cols = linear_sum_assignment(sim, maximize=True)
    best_a, best_b = sim.max(axis=1), sim.max(axis=0)
    best = best_a if sim.shape[0] <= sim.shape[1] else best_b
    return Matching(rows.astype(np.int64), cols.astype(np.int64), sim[rows, cols],
                    sim.shape[0], sim.shape[1], "exact", float(best.mean()), measure,
                    best_a, best_b)


def match_graph(n_a: int, n_b: int, rows: np.ndarray, cols: np.ndarray,
                pair_similarity: PairSimilarity, best_a: np.ndarray, best_b: np.ndarray,
                measure: str, block_similarity: BlockSimilarity | None = None,
                exact_limit: int = EXACT_LIMIT, refine_below: float = REFINE_BELOW) -> Matching:
    """Optimal matching restricted to the candidate edges (`rows`, `cols`), where a latent may
    also stay unmatched: the maximum-weight matching of the candidate graph weighted by
    similarity (`partial_matching.max_weight_matching`; a pair of negative similarity is
    worth less than leaving both latents to the leftovers, whose pairs score about 0);
    similarities from `pair_similarity`.

    Latents left unmatched or matched below `refine_below` (typically those with no
    counterpart at all, whose best assignment uses edges far down their candidate lists) are
    then re-matched exactly among themselves with `block_similarity` (dense assignment on the
    leftover rows and columns, if that block fits in `exact_limit`), which can only raise the
    total; if it does not fit, the unmatched ones are paired in index order. `best_a` /
    `best_b` are each latent's best similarity over *all* partners (for the bound).
    """
    from scipy.optimize import linear_sum_assignment

    candidates = np.unique(np.asarray(rows, np.int64) * n_b + np.asarray(cols, np.int64))
    r, c = candidates // n_b, candidates % n_b
    match_r, match_c = max_weight_matching(n_a, n_b, r, c, pair_similarity(r, c))
    kept = np.ones(match_r.size, bool)
    if block_similarity is not None:
        kept = np.isin(match_r * n_b + match_c, candidates)
        kept &= pair_similarity(match_r, match_c) >= refine_below
    free_r = np.setdiff1d(np.arange(n_a), match_r[kept])
    free_c = np.setdiff1d(np.arange(n_b), match_c[kept])
    if (block_similarity is not None and min(free_r.size, free_c.size) > 0
            and free_r.size * free_c.size <= exact_limit):
        sub_r, sub_c = linear_sum_assignment(block_similarity(free_r, free_c), maximize=True)
        match_r = np.concatenate([match_r[kept], free_r[sub_r]])
        match_c = np.concatenate([match_c[kept], free_c[sub_c]])
    else:
        free_r = np.setdiff1d(np.arange(n_a), match_r)
        free_c = np.setdiff1d(np.arange(n_b), match_c)
        m = min(free_r.size, free_c.size)
        match_r = np.concatenate([match_r, free_r[:m]])
        match_c = np.concatenate([match_c, free_c[:m]])
    order = np.argsort(match_r)
    match_r, match_c = match_r[order], match_c[order]
    best = best_a if n_a <= n_b else best_b
    return Matching(match_r, match_c, pair_similarity(match_r, match_c), n_a, n_b, "sparse",
                    float(np.mean(best)), measure, best_a, best_b)


def match_decoders(w_a: Tensor, w_b: Tensor, k: int = 16, exact_limit: int = EXACT_LIMIT,
                   block: int = 1024) -> Matching:
    """Optimal one-to-one matching of decoder directions (rows of ``W_dec``) by cosine.

    Dense and exact while ``n_a * n_b <= exact_limit``; above it, the sparse solver on each
    latent's `k` nearest partners (see the module docstring for the certificate).
    """
    if w_a.ndim != 2 or w_b.ndim != 2:
        raise ValueError("decoders must be (n_latents, d) matrices")
    if w_a.shape[1] != w_b.shape[1]:
        raise ValueError(f"the decoders live in different spaces (width {w_a.shape[1]} vs "
                         f"{w_b.shape[1]}), so their cosines mean nothing; match these "
                         "dictionaries by activation correlation on shared tokens instead")
    a, b = unit_rows(w_a), unit_rows(w_b)
    if a.shape[0] * b.shape[0] <= exact_limit:
        sim = a.double() @ b.double().T
        result = match_dense(sim, "decoder_cosine")
        result.similarity = cosine_pairs(w_a, w_b)(result.rows, result.cols)
        return result
    rows, cols, best_a, best_b = decoder_candidates(a, b, k, block)
    return match_graph(a.shape[0], b.shape[0], rows, cols, cosine_pairs(w_a, w_b), best_a,
                       best_b, "decoder_cosine", cosine_block(w_a, w_b), exact_limit)


def pwmcc(w_a: Tensor, w_b: Tensor, **options: Any) -> float:
    """PW-MCC of two decoders (Song et al. 2025): mean decoder cosine of the optimal
    one-to-one matching. `options` go to `match_decoders`."""
    return match_decoders(w_a, w_b, **options).pwmcc
