"""ITDA across layers and models: build one ITDA dictionary per (model, hookpoint) from the same
aligned text positions, then the Jaccard similarity of every pair against chance.

Leask et al. compare models by the Jaccard similarity of their ITDA atom *labels*: which text
positions each model found worth keeping. With two tokenizers, the labels are the shared token
boundaries (`alignment`): ``(text, character offset)``, the same for both models. Chance is not
zero: two dictionaries of ``n_a`` and ``n_b`` atoms drawn at random from the same ``N``
positions share about ``n_a n_b / N`` labels, so each Jaccard comes with the mean and spread of
`n_random` such random draws (the permutation baseline), and the ratio of the two.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from sparselens.comparison.alignment import AlignedActivations, aligned_activations
from sparselens.comparison.itda import ITDADictionary, build_itda
from sparselens.lens import Lens


@dataclass
class ITDAOptions:
    """How each ITDA dictionary is built and how its Jaccard is judged."""

    k: int = 40
    """Matching pursuit steps per activation."""
    threshold: float = 0.1
    """Relative squared error above which an activation becomes an atom."""
    batch_size: int = 256
    """Activations decomposed at once (all of a batch above the threshold join together)."""
    max_atoms: int | None = None
    """Stop growing a dictionary at this many atoms; None: no limit."""
    n_random: int = 200
    """Random label draws for the chance level of each Jaccard."""
    seed: int = 0
    """Seed of the random label draws."""


@dataclass
class ITDAResult:
    """ITDA dictionaries of several (model, hookpoint) sites on the same positions."""

    names: list[str]
    dictionaries: dict[str, ITDADictionary] = field(repr=False)
    seconds: dict[str, float]
    n_positions: int
    jaccard: np.ndarray
    random_mean: np.ndarray
    random_std: np.ndarray

    def record(self) -> dict[str, Any]:
        pairs = []
        for i, a in enumerate(self.names):
            for j in range(i + 1, len(self.names)):
                pairs.append({"a": a, "b": self.names[j], "jaccard": float(self.jaccard[i, j]),
                              "random_mean": float(self.random_mean[i, j]),
                              "random_std": float(self.random_std[i, j]),
                              "ratio_to_random": float(self.jaccard[i, j]
                                                       / max(self.random_mean[i, j], 1e-12))})
        return {"schema": "sparselens.itda", "schema_version": 1, "sites": self.names,
                "n_positions": self.n_positions,
                "atoms": {n: self.dictionaries[n].n_atoms for n in self.names},
                "seconds": self.seconds, "pairs": pairs}


def random_jaccard(n_a: int, n_b: int, n_pool: int, draws: int, seed: int = 0
                   ) -> tuple[float, float]:
    """Mean and std of the Jaccard of two random subsets of `n_a` and `n_b` of `n_pool` labels."""
    if draws < 1:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(draws):
        a = rng.choice(n_pool, size=min(n_a, n_pool), replace=False)
        b = rng.choice(n_pool, size=min(n_b, n_pool), replace=False)
        inter = np.intersect1d(a, b).size
        values.append(inter / (a.size + b.size - inter))
    return float(np.mean(values)), float(np.std(values))


def build_sites(aligned: AlignedActivations, options: ITDAOptions | None = None
                ) -> tuple[dict[str, ITDADictionary], dict[str, float]]:
    """One ITDA dictionary per site of `aligned` (named ``A:hookpoint`` and ``B:hookpoint``),
    each from the same positions in the same order, labelled (text, character offset)."""
    options = options or ITDAOptions()
    sites = {f"A:{hp}": x for hp, x in aligned.acts_a.items()}
    sites.update({f"B:{hp}": x for hp, x in aligned.acts_b.items()})
    out, seconds = {}, {}
    size = options.batch_size
    for name, x in sites.items():
        start = time.perf_counter()
        out[name] = build_itda(((x[i:i + size], aligned.doc[i:i + size],
                                 aligned.offset[i:i + size]) for i in range(0, x.shape[0], size)),
                               k=options.k, threshold=options.threshold,
                               max_atoms=options.max_atoms)
        seconds[name] = time.perf_counter() - start
    return out, seconds


@torch.no_grad()
def compare_itda(aligned: AlignedActivations, options: ITDAOptions | None = None) -> ITDAResult:
    """ITDA at every site of `aligned`, and the Jaccard of every pair with its chance level."""
    options = options or ITDAOptions()
    if aligned.n < 2:
        raise ValueError(f"only {aligned.n} aligned positions: ITDA needs more text")
    dictionaries, seconds = build_sites(aligned, options)
    names = list(dictionaries)
    n = len(names)
    jac, mean, std = np.eye(n), np.zeros((n, n)), np.zeros((n, n))
    for i in range(n):
        for j in range(i + 1, n):
            a, b = dictionaries[names[i]], dictionaries[names[j]]
            jac[i, j] = jac[j, i] = a.jaccard(b)
            m, s = random_jaccard(a.n_atoms, b.n_atoms, aligned.n, options.n_random,
                                  options.seed + i * n + j)
            mean[i, j] = mean[j, i] = m
            std[i, j] = std[j, i] = s
    return ITDAResult(names, dictionaries, seconds, aligned.n, jac, mean, std)


def run_itda(lens_a: Lens, hookpoints_a: Sequence[str], lens_b: Lens,
             hookpoints_b: Sequence[str], texts: Sequence[str], n_tokens: int = 4096,
             max_tokens: int = 128, pool: str = "last", options: ITDAOptions | None = None
             ) -> tuple[ITDAResult, AlignedActivations]:
    """Align two models (or one with itself: ``lens_b is lens_a``) over `texts`, then
    `compare_itda` at every hookpoint of both."""
    if lens_b is lens_a:
        # One model: its sites all live on side A; side B reads nothing new.
        hookpoints_a = list(dict.fromkeys([*hookpoints_a, *hookpoints_b]))
        hookpoints_b = []
    aligned = aligned_activations(lens_a, hookpoints_a, lens_b, hookpoints_b, texts,
                                  max_tokens=max_tokens, pool=pool, max_positions=n_tokens)
    return compare_itda(aligned, options), aligned
