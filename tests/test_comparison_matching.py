"""Matching two dictionaries: exactness of both solvers, PW-MCC, activation correlation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sparselens.comparison.correlation import best_partners, codes_matrix, match_activations
from sparselens.evaluation.matching import match_decoders, match_dense, pwmcc, unit_rows


def _decoder(n: int, d: int, seed: int) -> torch.Tensor:
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed))


def test_permuted_self_scores_exactly_one_with_both_solvers() -> None:
    w = _decoder(300, 24, 0)
    perm = torch.randperm(300, generator=torch.Generator().manual_seed(1))
    for limit in (10**9, 0):  # dense exact, then the sparse solver
        m = match_decoders(w, w[perm], k=4, exact_limit=limit)
        assert m.method == ("exact" if limit else "sparse")
        assert m.pwmcc == 1.0
        assert m.fraction_above(0.999999) == 1.0
        assert (perm[torch.as_tensor(m.cols)] == torch.as_tensor(m.rows)).all()
        assert m.gap == 0.0


def test_sparse_solver_equals_dense_assignment_on_noisy_copies() -> None:
    """Noisy twins plus a fifth of latents without any counterpart (seeds that disagree)."""
    w = _decoder(400, 16, 2)
    perm = torch.randperm(400, generator=torch.Generator().manual_seed(0))
    noisy = w[perm] + 0.6 * _decoder(400, 16, 3)
    noisy[torch.arange(0, 400, 5)] = _decoder(80, 16, 4)
    dense = match_decoders(w, noisy, exact_limit=10**9)
    sparse = match_decoders(w, noisy, k=32, block=128, exact_limit=400 * 399)
    assert sparse.method == "sparse" and dense.method == "exact"
    assert dense.pwmcc < 0.9  # a real problem, not a trivial one
    assert sparse.pwmcc == pytest.approx(dense.pwmcc, abs=1e-9)
    assert sparse.upper_bound == pytest.approx(dense.upper_bound, abs=1e-6)
    assert sparse.pwmcc <= sparse.upper_bound + 1e-12


def test_dense_assignment_beats_greedy_and_matches_brute_force() -> None:
    sim = np.array([[0.9, 0.8, 0.0], [0.85, 0.1, 0.0], [0.0, 0.0, 0.5]])
    m = match_dense(sim)
    assert m.cols.tolist() == [1, 0, 2]  # greedy would pair 0-0 and lose
    assert m.pwmcc == pytest.approx((0.8 + 0.85 + 0.5) / 3)


def test_rectangular_matching_matches_every_latent_of_the_smaller_dictionary() -> None:
    small = _decoder(50, 12, 4)
    large = torch.cat([small, _decoder(150, 12, 5)])[torch.randperm(200)]
    for limit in (10**9, 0):
        m = match_decoders(small, large, k=3, exact_limit=limit)
        assert m.rows.tolist() == list(range(50)) and m.pwmcc == 1.0
        back = match_decoders(large, small, k=3, exact_limit=limit)
        assert back.cols.size == 50 and back.pwmcc == 1.0


def test_different_widths_are_refused_with_advice() -> None:
    with pytest.raises(ValueError, match="activation correlation"):
        match_decoders(_decoder(10, 8, 0), _decoder(10, 9, 0))


def test_unit_rows_and_pwmcc_helper() -> None:
    w = _decoder(20, 5, 6) * 7
    assert torch.allclose(unit_rows(w).norm(dim=1), torch.ones(20))
    assert pwmcc(w, w) == 1.0


def _sparse_codes(n_tokens: int, n_latents: int, seed: int, density: float = 0.05):
    gen = torch.Generator().manual_seed(seed)
    mask = torch.rand(n_tokens, n_latents, generator=gen) < density
    return torch.rand(n_tokens, n_latents, generator=gen) * mask


def test_activation_matching_recovers_a_permutation_with_both_solvers() -> None:
    codes = _sparse_codes(3000, 120, 7)
    perm = torch.randperm(120, generator=torch.Generator().manual_seed(8))
    for limit in (10**9, 0):
        m = match_activations(codes, codes[:, perm], k=4, exact_limit=limit)
        assert (perm[torch.as_tensor(m.cols)] == torch.as_tensor(m.rows)).all()
        assert m.similarity == pytest.approx(np.ones(120))


def test_permuted_self_with_dead_latents_matches_every_live_latent_to_its_twin() -> None:
    """Latents that never fire have no candidate partner. The sparse solver must not force
    them onto some column (a fallback edge (i, i) did, pushing that column's true twin aside:
    a real 8,192-latent SAE with 15% dead scored 0.81 against its permutation, bound 0.85)."""
    codes = _sparse_codes(3000, 120, 11)
    codes[:, ::3] = 0  # a third of the latents dead
    perm = torch.randperm(120, generator=torch.Generator().manual_seed(12))
    live = codes.abs().sum(0) > 0
    for limit in (0, 100 * 100):  # leftovers paired in order; leftovers re-matched densely
        m = match_activations(codes, codes[:, perm], k=4, exact_limit=limit)
        assert m.method == "sparse"
        twins = perm[torch.as_tensor(m.cols)] == torch.as_tensor(m.rows)
        assert twins[live[torch.as_tensor(m.rows)]].all()
        assert m.pwmcc == pytest.approx(live.float().mean().item())
        assert m.pwmcc == pytest.approx(m.upper_bound)


def test_correlation_equals_numpy_corrcoef() -> None:
    a, b = _sparse_codes(500, 6, 9, 0.3), _sparse_codes(500, 5, 10, 0.3)
    b[:, 2] = a[:, 4] * 2 + b[:, 2] * 0.1
    m = match_activations(a, b)
    full = np.corrcoef(a.T.numpy(), b.T.numpy())[:6, 6:]
    assert m.similarity == pytest.approx(full[m.rows, m.cols], abs=1e-9)
    assert (4, 2) in set(zip(m.rows.tolist(), m.cols.tolist()))
    partner, best = best_partners(a, b)
    assert partner[2] == 4 and best[2] == pytest.approx(full[4, 2], abs=1e-9)


def test_sparse_codes_objects_are_accepted() -> None:
    from types import SimpleNamespace

    dense = _sparse_codes(40, 10, 11, 0.2)
    k = int((dense != 0).sum(1).max())
    values, indices = dense.topk(k, dim=1)
    sparse = SimpleNamespace(values=values, indices=indices, n_latents=10)
    assert (codes_matrix(sparse).toarray() == codes_matrix(dense).toarray()).all()


def test_codes_on_different_tokens_are_refused() -> None:
    with pytest.raises(ValueError, match="same tokens"):
        match_activations(torch.rand(10, 3), torch.rand(11, 3))


def test_a_tie_break_pairs_latents_that_fire_on_the_same_single_token() -> None:
    """Latents firing once each, on the same token, correlate exactly 1 with each other's
    twins: correlation alone cannot pair them right, decoder cosine as a tie-break does, and
    the reported similarities stay correlations."""
    from sparselens.evaluation.matching import cosine_block, cosine_pairs

    codes = _sparse_codes(3000, 120, 13)
    codes[:, :12] = 0
    for pair in range(6):  # latents 2p and 2p + 1 fire once, on token p
        codes[pair, 2 * pair] = 1.0
        codes[pair, 2 * pair + 1] = 2.0
    perm = torch.randperm(120, generator=torch.Generator().manual_seed(14))
    w = _decoder(120, 16, 15)
    tie_break = (cosine_pairs(w, w[perm]), cosine_block(w, w[perm]))
    for limit in (10**9, 0):
        plain = match_activations(codes, codes[:, perm], k=4, exact_limit=limit)
        m = match_activations(codes, codes[:, perm], k=4, exact_limit=limit,
                              tie_break=tie_break)
        assert (perm[torch.as_tensor(m.cols)] == torch.as_tensor(m.rows)).all()
        assert m.pwmcc == pytest.approx(1.0) and m.pwmcc == pytest.approx(plain.pwmcc)
        assert m.similarity.max() <= 1.0 and m.upper_bound == pytest.approx(1.0)
