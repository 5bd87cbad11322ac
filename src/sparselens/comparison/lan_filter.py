"""Lan et al.'s filtering of latent pairs before SVCCA/CKA: drop what is not a concept.

Lan et al. ("Sparse autoencoders reveal universal feature spaces across large language models",
2024) compare paired feature spaces only after removing pairs that say little about concepts:
pairs whose activation correlation is low, and latents that are mostly *token detectors*
(their top activations sit on one and the same token) or fire mostly on *non-semantic* tokens
(whitespace, punctuation, special tokens). Such latents pair up trivially across any two
models that share a vocabulary and inflate the similarity.

Here both filters read a latent's `top` strongest activations on the shared tokens: the share
of the most common token among them, and the share of non-semantic tokens (no letter or digit
in their text). A latent over `max_share` on either is dropped, and a pair is dropped when
either of its latents is. The thresholds are options (our defaults, not the paper's numbers).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np


def is_semantic(text: str) -> bool:
    """A token carries meaning when its text has a letter or a digit."""
    return any(ch.isalnum() for ch in text)


def semantic_rows(tokenizer: Any, ids: Sequence[int] | np.ndarray) -> np.ndarray:
    """Per token id of `ids`: does its decoded text carry meaning (special tokens: no)."""
    from sparselens.data.chunking import special_token_ids

    ids = np.asarray(ids, dtype=np.int64)
    specials = set(special_token_ids(tokenizer))
    known = {int(i): int(i) not in specials and is_semantic(tokenizer.decode([int(i)]))
             for i in np.unique(ids)}
    return np.array([known[int(i)] for i in ids], dtype=bool)


@dataclass
class TokenProfile:
    """Per latent: share of its top activations on its most common token, and on
    non-semantic tokens (NaN for a latent that never fired)."""

    top_token_share: np.ndarray
    nonsemantic_share: np.ndarray

    def keep(self, max_share: float) -> np.ndarray:
        """Latents that are neither token detectors nor non-semantic (never-fired kept)."""
        bad = (self.top_token_share > max_share) | (self.nonsemantic_share > max_share)
        return ~bad


def token_profile(codes: Any, token_ids: np.ndarray, semantic: np.ndarray,
                  top: int = 20) -> TokenProfile:
    """Profiles of every latent of a scipy sparse ``(N, n_latents)`` code matrix whose rows are
    the tokens `token_ids` ``(N,)``; `semantic` ``(N,)`` says which rows' tokens carry
    meaning."""
    csc = codes.tocsc()
    n = csc.shape[1]
    top_share = np.full(n, np.nan)
    nonsem = np.full(n, np.nan)
    token_ids, semantic = np.asarray(token_ids), np.asarray(semantic, dtype=bool)
    for j in range(n):
        lo, hi = csc.indptr[j], csc.indptr[j + 1]
        if hi == lo:
            continue
        values, rows = csc.data[lo:hi], csc.indices[lo:hi]
        best = rows[np.argsort(-values, kind="stable")[:top]]
        tokens = token_ids[best]
        top_share[j] = np.unique(tokens, return_counts=True)[1].max() / tokens.size
        nonsem[j] = 1.0 - semantic[best].mean()
    return TokenProfile(top_share, nonsem)


@dataclass
class PairFilter:
    """What the Lan et al. filters removed from the activation-matched pairs."""

    n_matched: int
    n_low_correlation: int
    n_token_filtered: int
    n_kept: int

    def to_dict(self) -> dict[str, int]:
        return dict(vars(self))


def filter_pairs(rows: np.ndarray, cols: np.ndarray, correlation: np.ndarray,
                 min_correlation: float, keep_a: np.ndarray | None = None,
                 keep_b: np.ndarray | None = None) -> tuple[np.ndarray, PairFilter]:
    """Mask of the pairs kept: correlation at least `min_correlation`, and both latents kept
    by their token profiles (when given)."""
    ok = np.asarray(correlation) >= min_correlation
    low = int((~ok).sum())
    token_ok = np.ones_like(ok)
    if keep_a is not None:
        token_ok &= keep_a[rows]
    if keep_b is not None:
        token_ok &= keep_b[cols]
    kept = ok & token_ok
    return kept, PairFilter(int(ok.size), low, int((ok & ~token_ok).sum()), int(kept.sum()))
