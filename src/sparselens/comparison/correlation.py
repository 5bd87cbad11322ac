"""Activation correlation between the latents of two dictionaries on the same tokens.

Decoder cosine only compares dictionaries that write into the same space. Correlating what the
latents *do* works for any pair read on a shared token grid: two hookpoints of one model, or
two models that tokenise the text alike (Lan et al., "Sparse autoencoders reveal universal
feature spaces across large language models", 2024, pair features this way).

Codes are sparse, so the Pearson correlation of latents i and j over N tokens is

    (C_ij / N - m_i m_j) / (s_i s_j),   C = A^T B (co-activation sums, sparse)

and only co-firing pairs can correlate positively: a pair that never fires together has the
small negative correlation ``-m_i m_j / (s_i s_j)``. The sparse product A^T B is all that is
ever built (scipy), never the dense ``n_a x n_b`` matrix.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from sparselens.evaluation.matching import (
    EXACT_LIMIT,
    BlockSimilarity,
    Matching,
    PairSimilarity,
    match_dense,
    match_graph,
)


def codes_matrix(codes: Any) -> Any:
    """A scipy CSR ``(n_tokens, n_latents)`` matrix from dense codes, sparse codes (anything
    with ``values``, ``indices`` ``(N, K)`` and ``n_latents``, like lens.SparseCodes) or a scipy
    sparse matrix."""
    from scipy.sparse import csr_matrix, issparse

    if issparse(codes):
        return csr_matrix(codes)

    if isinstance(codes, Tensor):
        dense = codes.detach().reshape(-1, codes.shape[-1]).float().cpu()
        rows, cols = dense.nonzero(as_tuple=True)
        return csr_matrix((dense[rows, cols].double().numpy(), (rows.numpy(), cols.numpy())),
                          shape=tuple(dense.shape))
    values = codes.values.detach().double().cpu()
    indices = codes.indices.detach().cpu()
    keep = values != 0
    rows = torch.arange(values.shape[0]).unsqueeze(1).expand_as(values)[keep]
    matrix = csr_matrix((values[keep].numpy(), (rows.numpy(), indices[keep].numpy())),
                        shape=(values.shape[0], int(codes.n_latents)))
    matrix.sum_duplicates()
    return matrix


@dataclass
class CorrelationStats:
    """Everything needed for the correlation of any pair, with the sparse co-activations."""

    co: Any
    """scipy CSR ``(n_a, n_b)``: summed products of activations over shared tokens."""
    mean_a: np.ndarray
    mean_b: np.ndarray
    std_a: np.ndarray
    std_b: np.ndarray
    n_tokens: int

    @functools.cached_property
    def _sorted_nonzeros(self) -> tuple[np.ndarray, np.ndarray]:
        """(sorted keys row * n_b + col, values) of the co-activation non-zeros."""
        coo = self.co.tocoo()
        keys = coo.row.astype(np.int64) * self.co.shape[1] + coo.col
        order = np.argsort(keys)
        return keys[order], coo.data[order]

    def co_values(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """Co-activation sums of the given pairs, by binary search in the sorted keys of the
        non-zeros (scipy's fancy indexing scans rows: far slower for millions of pairs)."""
        keys, values = self._sorted_nonzeros
        wanted = np.asarray(rows, np.int64) * self.co.shape[1] + np.asarray(cols, np.int64)
        if keys.size == 0:
            return np.zeros(wanted.size)
        at = np.searchsorted(keys, wanted).clip(max=keys.size - 1)
        return np.where(keys[at] == wanted, values[at], 0.0)

    def pairs(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """Pearson correlation of the given pairs (0 where a latent never varies)."""
        rows, cols = np.asarray(rows, np.int64), np.asarray(cols, np.int64)
        co = self.co_values(rows, cols)
        cov = co / self.n_tokens - self.mean_a[rows] * self.mean_b[cols]
        denom = self.std_a[rows] * self.std_b[cols]
        return np.where(denom > 0, cov / np.where(denom > 0, denom, 1.0), 0.0).clip(-1, 1)

    def block(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """Dense correlations of every row latent with every column latent."""
        co = self.co[rows][:, cols].toarray()
        cov = co / self.n_tokens - np.outer(self.mean_a[rows], self.mean_b[cols])
        denom = np.outer(self.std_a[rows], self.std_b[cols])
        return np.where(denom > 0, cov / np.where(denom > 0, denom, 1.0), 0.0).clip(-1, 1)

    def candidate_edges(self, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(rows, cols) of every latent's `k` most correlated co-firing partners (both ways),
        and each latent's best correlation (a non-co-firing partner's is about 0)."""
        coo = self.co.tocoo()
        r, c = coo.row.astype(np.int64), coo.col.astype(np.int64)
        corr = self.pairs(r, c)
        keep = np.zeros(r.size, dtype=bool)
        best_a = np.zeros(self.co.shape[0])
        best_b = np.zeros(self.co.shape[1])
        for group, best in ((r, best_a), (c, best_b)):
            order = np.lexsort((-corr, group))
            sorted_group = group[order]
            starts = np.searchsorted(sorted_group, sorted_group, side="left")
            rank = np.arange(order.size) - starts
            keep[order[rank < k]] = True
            np.maximum.at(best, group, corr)
        return r[keep], c[keep], best_a, best_b


def correlation_stats(codes_a: Any, codes_b: Any) -> CorrelationStats:
    """Co-activation sums and per-latent moments of two codes over the same tokens."""
    a, b = codes_matrix(codes_a), codes_matrix(codes_b)
    if a.shape[0] != b.shape[0]:
        raise ValueError(f"the codes cover different tokens ({a.shape[0]} vs {b.shape[0]} rows);"
                         " activation correlation needs both dictionaries read on the same "
                         "tokens (one cache with both hookpoints, or two models that tokenise "
                         "the text identically)")
    n = a.shape[0]
    if n < 2:
        raise ValueError("activation correlation needs at least 2 shared tokens")

    def moments(m: Any) -> tuple[np.ndarray, np.ndarray]:
        mean = np.asarray(m.sum(axis=0)).ravel() / n
        sq = np.asarray(m.multiply(m).sum(axis=0)).ravel() / n
        return mean, np.sqrt(np.maximum(sq - mean * mean, 0.0))

    mean_a, std_a = moments(a)
    mean_b, std_b = moments(b)
    co = (a.T @ b).tocsr()
    return CorrelationStats(co, mean_a, mean_b, std_a, std_b, n)


TIE_BREAK = 1e-9
"""Weight of the tie-break similarity added to correlations while solving (never reported)."""


def match_activations(codes_a: Any, codes_b: Any, k: int = 16,
                      exact_limit: int = EXACT_LIMIT,
                      tie_break: tuple[PairSimilarity, BlockSimilarity] | None = None
                      ) -> Matching:
    """Optimal one-to-one matching of latents by activation correlation on shared tokens.

    `tie_break` (pair and block similarity functions, e.g. decoder cosine) decides between
    matchings of equal correlation: latents that fire on exactly the same tokens with
    proportional values (a real SAE has pairs that fire once each, on the same token)
    correlate exactly 1 with each other's partners, and only another measure can tell which
    pairing is right. It is added with weight `TIE_BREAK` while solving, so it cannot move
    the summed correlation by more than ``TIE_BREAK * 2 * min(n_a, n_b)``; reported
    similarities and best partners are correlations only.
    """
    stats = correlation_stats(codes_a, codes_b)
    n_a, n_b = stats.co.shape
    pairs, block = stats.pairs, stats.block
    if tie_break is not None:
        def pairs(r: np.ndarray, c: np.ndarray) -> np.ndarray:
            return stats.pairs(r, c) + TIE_BREAK * tie_break[0](r, c)

        def block(r: np.ndarray, c: np.ndarray) -> np.ndarray:
            return stats.block(r, c) + TIE_BREAK * tie_break[1](r, c)
    if n_a * n_b <= exact_limit:
        ia, ib = np.arange(n_a), np.arange(n_b)
        result = match_dense(block(ia, ib), "activation_correlation")
        if tie_break is not None:
            result = match_dense_report(stats.block(ia, ib), result)
        return result
    rows, cols, best_a, best_b = stats.candidate_edges(k)
    result = match_graph(n_a, n_b, rows, cols, pairs, best_a, best_b,
                         "activation_correlation", block, exact_limit)
    result.similarity = stats.pairs(result.rows, result.cols)
    return result


def match_dense_report(similarity: np.ndarray, solved: Matching) -> Matching:
    """`solved` (pairs chosen on a perturbed matrix) scored on the plain `similarity`."""
    best_a, best_b = similarity.max(axis=1), similarity.max(axis=0)
    best = best_a if similarity.shape[0] <= similarity.shape[1] else best_b
    return Matching(solved.rows, solved.cols, similarity[solved.rows, solved.cols],
                    solved.n_a, solved.n_b, solved.method, float(best.mean()), solved.measure,
                    best_a, best_b)


def best_partners(codes_a: Any, codes_b: Any) -> tuple[np.ndarray, np.ndarray]:
    """Many-to-one pairing: for every latent of B its most correlated latent of A and that
    correlation (-1 / 0 for a latent of B that never co-fires with anything)."""
    stats = correlation_stats(codes_a, codes_b)
    coo = stats.co.tocoo()
    r, c = coo.row.astype(np.int64), coo.col.astype(np.int64)
    corr = stats.pairs(r, c)
    partner = np.full(stats.co.shape[1], -1, dtype=np.int64)
    best = np.zeros(stats.co.shape[1])
    order = np.lexsort((corr, c))  # per column, ascending: the last entry is the best
    last = np.r_[c[order][1:] != c[order][:-1], True] if order.size else np.zeros(0, bool)
    partner[c[order][last]] = r[order][last]
    best[c[order][last]] = corr[order][last]
    return partner, best
