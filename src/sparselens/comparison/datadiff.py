"""Dataset diffing and interpretable embeddings with a dictionary's latents.

Jiang, Sun, Dunlap, Smith and Nanda, "Interpretable embeddings with sparse autoencoders: a data
analysis toolkit" (2025): a document's embedding is its latents' activations pooled over its
tokens (max-pooling here), so each dimension is a feature a person can read. With it:

- **diffing**: which latents fire in a larger share of corpus A's documents than of B's. Each
  latent gets a 2x2 table (documents of A / B where it fires or not) and a two-sided Fisher
  exact test; the p-values of all latents that fire anywhere are corrected for multiple
  testing with Benjamini-Hochberg (false discovery rate). The ranking is by the difference in
  document frequency among the significant latents.
- **clustering**: k-means on the unit-normalised binary embeddings (which latents fire), each
  cluster described by the latents most over-represented in it.
- **retrieval**: the documents where a latent (or a sum of latents) is strongest.

A corpus too small for any latent to reach significance is refused with the numbers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch


@dataclass
class DocumentEmbeddings:
    """Pooled latent activations of documents: a scipy CSR ``(n_docs, n_latents)``."""

    matrix: Any
    n_tokens: np.ndarray
    """Tokens each document contributed."""
    texts: list[str] = field(default_factory=list)
    """The documents (for showing retrieved ones); may be empty."""

    @property
    def n_docs(self) -> int:
        return int(self.matrix.shape[0])

    @property
    def n_latents(self) -> int:
        return int(self.matrix.shape[1])

    def fires(self) -> Any:
        """Binary CSR: latent fired somewhere in the document."""
        out = self.matrix.copy()
        out.data = (out.data != 0).astype(np.float64)
        out.eliminate_zeros()
        return out

    def frequency(self) -> np.ndarray:
        """``(n_latents,)`` share of documents in which each latent fires."""
        return np.asarray(self.fires().sum(axis=0)).ravel() / max(1, self.n_docs)


DocCodes = torch.Tensor | tuple[torch.Tensor, torch.Tensor]
"""One document's codes: dense ``(n_tokens, n_latents)``, or sparse ``(values, indices)`` of
shape ``(n_tokens, K)`` with 0 values as padding (as `lens.SparseCodes` holds them)."""


def pool_document(codes: DocCodes, n_latents: int, pool: str = "max"
                  ) -> tuple[np.ndarray, np.ndarray, int]:
    """(latent ids, pooled values, n_tokens) of one document, touching only non-zero codes."""
    if isinstance(codes, torch.Tensor):
        dense = codes.detach().reshape(-1, n_latents)
        n_tokens = dense.shape[0]
        rows, latents = dense.nonzero(as_tuple=True)
        values = dense[rows, latents].float()
    else:
        vals, idx = codes
        n_tokens = vals.shape[0]
        keep = vals != 0
        values, latents = vals[keep].float(), idx[keep].long()
    ids, inverse = torch.unique(latents, return_inverse=True)
    init = torch.full((ids.numel(),), float("-inf") if pool == "max" else 0.0)
    reduce = "amax" if pool == "max" else "sum"
    pooled = init.scatter_reduce(0, inverse, values, reduce=reduce, include_self=pool != "max")
    if pool == "mean":
        pooled = pooled / max(1, n_tokens)
    return ids.numpy(), pooled.double().numpy(), n_tokens


def embed(doc_codes: list[DocCodes], n_latents: int, pool: str = "max",
          texts: list[str] | None = None) -> DocumentEmbeddings:
    """Pool the per-token codes of each document into one row: ``max`` (default: the
    strongest activation anywhere in it), ``mean`` over its tokens, or ``sum``."""
    from scipy.sparse import csr_matrix

    if pool not in ("max", "mean", "sum"):
        raise ValueError(f"pool must be max, mean or sum, got {pool!r}")
    pieces = [pool_document(codes, n_latents, pool) for codes in doc_codes]
    indptr = np.cumsum([0] + [ids.size for ids, _, _ in pieces])
    indices = np.concatenate([ids for ids, _, _ in pieces]) if pieces else np.zeros(0, int)
    data = np.concatenate([vals for _, vals, _ in pieces]) if pieces else np.zeros(0)
    matrix = csr_matrix((data, indices, indptr), shape=(len(pieces), n_latents))
    matrix.eliminate_zeros()
    return DocumentEmbeddings(matrix, np.asarray([n for _, _, n in pieces]), list(texts or []))


def _fisher_two_sided(a: int, n_a: int, b: int, n_b: int) -> float:
    from scipy.stats import fisher_exact

    return float(fisher_exact([[a, n_a - a], [b, n_b - b]]).pvalue)


def smallest_p_value(n_a: int, n_b: int) -> float:
    """The smallest p-value any latent can reach: firing in every document of one corpus and in
    none of the other."""
    return _fisher_two_sided(n_a, n_a, 0, n_b)


def benjamini_hochberg(p: np.ndarray) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values (q-values) of independent or positively dependent
    tests: ``q_(i) = min_{j >= i} p_(j) m / j``."""
    p = np.asarray(p, dtype=np.float64)
    m = p.size
    if m == 0:
        return p
    order = np.argsort(p)
    scaled = p[order] * m / np.arange(1, m + 1)
    q = np.minimum.accumulate(scaled[::-1])[::-1].clip(0, 1)
    out = np.empty(m)
    out[order] = q
    return out


@dataclass
class LatentDiff:
    """One latent's document frequencies in A and B and its test."""

    latent: int
    docs_a: int
    docs_b: int
    freq_a: float
    freq_b: float
    p_value: float
    q_value: float
    n_docs_a: int
    n_docs_b: int
    explanation: str | None = None

    @property
    def difference(self) -> float:
        return self.freq_a - self.freq_b

    def to_dict(self) -> dict[str, Any]:
        return {"latent": self.latent, "docs_a": self.docs_a, "docs_b": self.docs_b,
                "freq_a": self.freq_a, "freq_b": self.freq_b, "difference": self.difference,
                "log2_odds": log2_odds(self.docs_a, self.n_docs_a, self.docs_b, self.n_docs_b),
                "p_value": self.p_value, "q_value": self.q_value,
                "explanation": self.explanation}


@dataclass
class CorpusDiff:
    """Latents tested between two corpora, and those significant at false discovery rate
    `alpha`, each direction ordered by the size of the frequency difference."""

    n_docs_a: int
    n_docs_b: int
    alpha: float
    tested: list[LatentDiff]

    def significant(self, direction: str = "a") -> list[LatentDiff]:
        """Latents significantly more frequent in A (``"a"``) or in B (``"b"``)."""
        sign = 1 if direction == "a" else -1
        found = [d for d in self.tested if d.q_value <= self.alpha and sign * d.difference > 0]
        return sorted(found, key=lambda d: (-sign * d.difference, d.p_value))

    def summary(self, top: int = 50) -> dict[str, Any]:
        return {"n_docs_a": self.n_docs_a, "n_docs_b": self.n_docs_b, "alpha": self.alpha,
                "test": "two-sided Fisher exact per latent, Benjamini-Hochberg FDR",
                "n_tested": len(self.tested),
                "n_significant_a": len(self.significant("a")),
                "n_significant_b": len(self.significant("b")),
                "more_in_a": [d.to_dict() for d in self.significant("a")[:top]],
                "more_in_b": [d.to_dict() for d in self.significant("b")[:top]]}


def diff_corpora(emb_a: DocumentEmbeddings, emb_b: DocumentEmbeddings, alpha: float = 0.05,
                 explanations: dict[int, str] | None = None) -> CorpusDiff:
    """Test every latent that fires in some document for a frequency difference between A and
    B (Fisher exact, Benjamini-Hochberg at `alpha`)."""
    if emb_a.n_latents != emb_b.n_latents:
        raise ValueError("the two corpora were encoded with different dictionaries "
                         f"({emb_a.n_latents} vs {emb_b.n_latents} latents)")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    n_a, n_b = emb_a.n_docs, emb_b.n_docs
    if min(n_a, n_b) == 0 or smallest_p_value(n_a, n_b) > alpha:
        need = documents_needed(alpha)
        raise ValueError(f"the corpora are too small for a significance test: with {n_a} and "
                         f"{n_b} documents not even a latent that fires in every document of "
                         f"one and none of the other reaches p <= {alpha}; give at least {need} "
                         "documents per corpus (more to find anything after the correction for "
                         "testing every latent)")
    count_a = np.asarray(emb_a.fires().sum(axis=0)).ravel().astype(np.int64)
    count_b = np.asarray(emb_b.fires().sum(axis=0)).ravel().astype(np.int64)
    latents = np.flatnonzero(count_a + count_b)
    p = np.array([_fisher_two_sided(int(count_a[j]), n_a, int(count_b[j]), n_b)
                  for j in latents])
    q = benjamini_hochberg(p)
    names = explanations or {}
    tested = [LatentDiff(int(j), int(count_a[j]), int(count_b[j]), count_a[j] / n_a,
                         count_b[j] / n_b, float(pj), float(qj), n_a, n_b, names.get(int(j)))
              for j, pj, qj in zip(latents, p, q)]
    return CorpusDiff(n_a, n_b, alpha, tested)


@dataclass
class Clustering:
    labels: np.ndarray
    """``(n_docs,)`` cluster of each document."""
    top_latents: list[list[int]]
    """Per cluster, the latents most over-represented in it (frequency inside minus outside)."""

    def summary(self, explanations: dict[int, str] | None = None) -> list[dict[str, Any]]:
        names = explanations or {}
        return [{"cluster": c, "n_docs": int((self.labels == c).sum()),
                 "top_latents": [{"latent": j, "explanation": names.get(j)} for j in latents]}
                for c, latents in enumerate(self.top_latents)]


def cluster_documents(emb: DocumentEmbeddings, n_clusters: int, seed: int = 0,
                      iterations: int = 50, n_top: int = 5) -> Clustering:
    """k-means (k-means++ start) on unit-normalised binary embeddings."""
    if not 1 <= n_clusters <= emb.n_docs:
        raise ValueError(f"n_clusters must be between 1 and the {emb.n_docs} documents, got "
                         f"{n_clusters}")
    fires = emb.fires()
    used = np.flatnonzero(np.asarray(fires.sum(axis=0)).ravel())
    x = torch.as_tensor(fires[:, used].toarray(), dtype=torch.float32)
    x = x / x.norm(dim=1, keepdim=True).clamp_min(1e-12)
    gen = torch.Generator().manual_seed(seed)
    centres = x[torch.randint(x.shape[0], (1,), generator=gen)]
    while centres.shape[0] < n_clusters:
        dist = torch.cdist(x, centres).min(dim=1).values.pow(2)
        weights = dist if dist.sum() > 0 else torch.ones_like(dist)
        centres = torch.cat([centres, x[torch.multinomial(weights, 1, generator=gen)]])
    labels = torch.zeros(x.shape[0], dtype=torch.long)
    for _ in range(iterations):
        new = torch.cdist(x, centres).argmin(dim=1)
        if torch.equal(new, labels) and _ > 0:
            break
        labels = new
        for c in range(n_clusters):
            members = x[labels == c]
            if members.shape[0]:
                centres[c] = members.mean(0)
    binary = (x > 0).float()
    tops = []
    for c in range(n_clusters):
        inside = labels == c
        score = binary[inside].mean(0) - (binary[~inside].mean(0) if (~inside).any() else 0)
        k = min(n_top, score.shape[0])
        tops.append([int(used[j]) for j in score.topk(k).indices.tolist()])
    return Clustering(labels.numpy(), tops)


def retrieve(emb: DocumentEmbeddings, latents: int | list[int], n: int = 10
             ) -> list[tuple[int, float]]:
    """The `n` documents where the latents' summed pooled activation is largest, with it."""
    ids = [latents] if isinstance(latents, int) else list(latents)
    if any(not 0 <= j < emb.n_latents for j in ids):
        raise ValueError(f"latents must be in 0..{emb.n_latents - 1}, got {ids}")
    score = np.asarray(emb.matrix[:, ids].sum(axis=1)).ravel()
    order = np.argsort(-score, kind="stable")[:n]
    return [(int(i), float(score[i])) for i in order if score[i] > 0]


def documents_needed(alpha: float = 0.05) -> int:
    """Documents per corpus (balanced) below which nothing can be significant at `alpha`."""
    return next(n for n in range(1, 1000) if smallest_p_value(n, n) <= alpha)


def log2_odds(a: int, n_a: int, b: int, n_b: int) -> float:
    """Log2 odds ratio with a 0.5 continuity correction (an effect size to show beside p)."""
    return math.log2(((a + 0.5) / (n_a - a + 0.5)) / ((b + 0.5) / (n_b - b + 0.5)))
