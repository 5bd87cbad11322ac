"""Maximum-weight partial matching (a node may stay unmatched) against exhaustive search and
against a dense assignment, through every path of the solver (single edges, dense components,
the sparse rectangular graph)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment

from sparselens.evaluation.partial_matching import max_weight_matching


def _random_graph(n_rows: int, n_cols: int, density: float, seed: int
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Distinct edges with weights in [-1, 1] (some negative); some nodes without edges."""
    rng = np.random.default_rng(seed)
    mask = rng.random((n_rows, n_cols)) < density
    mask[rng.random(n_rows) < 0.2] = False  # rows without edges (dead latents)
    mask[:, rng.random(n_cols) < 0.2] = False
    rows, cols = np.nonzero(mask)
    return rows, cols, rng.uniform(-1, 1, rows.size)


def _brute_force(n_rows: int, n_cols: int, rows: np.ndarray, cols: np.ndarray,
                 weight: np.ndarray) -> float:
    """Best total over every partial matching (each row: a column or none)."""
    w = {(int(r), int(c)): float(x) for r, c, x in zip(rows, cols, weight, strict=True)}
    best = 0.0
    for choice in itertools.product([None, *range(n_cols)], repeat=n_rows):
        taken = [c for c in choice if c is not None]
        if len(taken) != len(set(taken)):
            continue
        pairs = [(r, c) for r, c in enumerate(choice) if c is not None]
        if all(p in w for p in pairs):
            best = max(best, sum(w[p] for p in pairs))
    return best


def _total(rows, cols, weight, match_r, match_c) -> float:
    w = {(int(r), int(c)): float(x) for r, c, x in zip(rows, cols, weight, strict=True)}
    assert len(set(match_r.tolist())) == match_r.size  # one-to-one
    assert len(set(match_c.tolist())) == match_c.size
    return sum(w[(int(r), int(c))] for r, c in zip(match_r, match_c, strict=True))


@pytest.mark.parametrize("seed", range(40))
def test_equals_exhaustive_search_on_small_graphs(seed: int) -> None:
    rng = np.random.default_rng(100 + seed)
    n_rows, n_cols = int(rng.integers(1, 6)), int(rng.integers(1, 6))
    rows, cols, weight = _random_graph(n_rows, n_cols, 0.5, seed)
    best = _brute_force(n_rows, n_cols, rows, cols, weight)
    for cells in (0, 10**6):  # the sparse rectangular graph, then dense blocks
        match_r, match_c = max_weight_matching(n_rows, n_cols, rows, cols, weight, cells)
        assert _total(rows, cols, weight, match_r, match_c) == pytest.approx(best, abs=1e-12)
        assert np.all(np.diff(match_r) > 0)


@pytest.mark.parametrize("shape", [(60, 80), (90, 50), (70, 70)])
def test_equals_a_dense_assignment_on_larger_graphs(shape: tuple[int, int]) -> None:
    """A missing edge is worth 0 like an unmatched node, so the dense assignment of the
    zero-filled, negative-clipped matrix is the partial-matching optimum."""
    n_rows, n_cols = shape
    for seed, density in ((1, 0.02), (2, 0.05), (3, 0.3)):  # many components, then one
        rows, cols, weight = _random_graph(n_rows, n_cols, density, seed)
        dense = np.zeros(shape)
        dense[rows, cols] = np.maximum(weight, 0)
        best = dense[linear_sum_assignment(dense, maximize=True)].sum()
        for cells in (0, 400, 10**6):
            match_r, match_c = max_weight_matching(n_rows, n_cols, rows, cols, weight, cells)
            total = _total(rows, cols, weight, match_r, match_c)
            assert total == pytest.approx(best, abs=1e-9)


def test_negative_edges_and_isolated_nodes_stay_unmatched() -> None:
    rows, cols = np.array([0, 1, 2, 2]), np.array([0, 1, 1, 2])
    weight = np.array([0.9, -0.2, 0.5, 0.4])
    match_r, match_c = max_weight_matching(4, 4, rows, cols, weight)
    assert list(zip(match_r.tolist(), match_c.tolist())) == [(0, 0), (2, 1)]
    empty = max_weight_matching(3, 3, np.array([0]), np.array([0]), np.array([-0.5]))
    assert empty[0].size == 0 and empty[1].size == 0
