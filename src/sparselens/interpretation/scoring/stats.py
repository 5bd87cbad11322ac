"""The statistics the scores are read with: AUROC, balanced accuracy, and a percentile
bootstrap interval for a mean (over latents)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.stats import rankdata


def auroc(scores: Sequence[float], labels: Sequence[int]) -> float | None:
    """Area under the ROC curve (Mann-Whitney, ties count half); None without both classes."""
    s, y = np.asarray(scores, dtype=float), np.asarray(labels, dtype=bool)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return None
    ranks = rankdata(s)
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def balanced_accuracy(probabilities: Sequence[float], labels: Sequence[int],
                      threshold: float = 0.5) -> float | None:
    """Mean of the true-positive and true-negative rates of ``p > threshold``."""
    p, y = np.asarray(probabilities, dtype=float), np.asarray(labels, dtype=bool)
    if y.all() or (~y).all():
        return None
    said = p > threshold
    return float(((said & y).sum() / y.sum() + (~said & ~y).sum() / (~y).sum()) / 2)


def bootstrap_mean(values: Sequence[float], n_resamples: int = 2000, level: float = 0.95,
                   seed: int = 0) -> dict[str, float | int | None]:
    """Mean of `values` and its percentile bootstrap interval."""
    v = np.asarray([x for x in values if x is not None and np.isfinite(x)], dtype=float)
    if v.size == 0:
        return {"mean": None, "low": None, "high": None, "n": 0}
    rng = np.random.default_rng(seed)
    means = v[rng.integers(0, v.size, size=(n_resamples, v.size))].mean(axis=1)
    tail = (1 - level) / 2
    return {"mean": float(v.mean()), "low": float(np.quantile(means, tail)),
            "high": float(np.quantile(means, 1 - tail)), "n": int(v.size)}
