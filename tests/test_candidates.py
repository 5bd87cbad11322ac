"""The candidate search of the sparse matcher: bfloat16 scores within their proven error bound,
and the bfloat16 search (rescored exactly) giving exact best similarities or upper bounds."""

from __future__ import annotations

import numpy as np
import torch

from sparselens.evaluation.candidates import (
    bfloat16_error_bound,
    decoder_candidates,
    top_candidates,
)
from sparselens.evaluation.matching import match_decoders, unit_rows


def _twins(n: int, d: int, seed: int, fresh_share: float = 0.2
           ) -> tuple[torch.Tensor, torch.Tensor]:
    """Unit rows A, and B a noisy permutation of A with a share of its rows fresh."""
    gen = torch.Generator().manual_seed(seed)
    a = unit_rows(torch.randn(n, d, generator=gen))
    b = a[torch.randperm(n, generator=gen)] + 0.03 * torch.randn(n, d, generator=gen)
    fresh = torch.rand(n, generator=gen) < fresh_share
    b[fresh] = torch.randn(int(fresh.sum()), d, generator=gen)
    return a, unit_rows(b)


def test_bfloat16_scores_stay_within_the_error_bound() -> None:
    """Random rows, and rows sharing a large common direction (scores near 1, where the
    rounding of the result is largest)."""
    gen = torch.Generator().manual_seed(0)
    for d, n_a, n_b in ((64, 300, 400), (640, 300, 400), (640, 1024, 2048)):  # + a search tile
        common = torch.randn(d, generator=gen)
        for shift in (0.0, 5.0):
            a = unit_rows(torch.randn(n_a, d, generator=gen) + shift * common)
            b = unit_rows(torch.randn(n_b, d, generator=gen) + shift * common)
            approx = (a.bfloat16() @ b.bfloat16().T).double()
            error = (approx - a.double() @ b.double().T).abs().max().item()
            assert error <= bfloat16_error_bound(d)
            assert error > 1e-4  # bfloat16 really was used


def test_bfloat16_search_gives_exact_best_or_an_upper_bound() -> None:
    a, b = _twins(600, 48, 1)
    exact = a.double() @ b.double().T
    rows, cols, best_a, best_b = decoder_candidates(a, b, k=4, block=128, bfloat16=True)
    assert (best_a >= exact.max(1).values.numpy() - 1e-12).all()
    assert (best_b >= exact.max(0).values.numpy() - 1e-12).all()
    ref_rows, ref_cols, ref_a, ref_b = decoder_candidates(a, b, k=4, block=128, bfloat16=False)
    twin = ref_a > 0.9  # a real counterpart: far above the rest, so known exactly
    assert twin.mean() > 0.7
    assert np.abs(best_a[twin] - exact.max(1).values.numpy()[twin]).max() < 1e-12
    assert abs(ref_a - exact.max(1).values.numpy()).max() < 1e-5  # float32 path
    # each latent's best partner is among its candidates, as with float32
    edges = set(zip(rows.tolist(), cols.tolist()))
    argmax = exact.argmax(1).numpy()
    assert all((i, int(argmax[i])) in edges for i in np.flatnonzero(twin))


def test_ties_beyond_the_margin_give_an_upper_bound() -> None:
    """One latent of A with 60 partners within bfloat16 resolution of each other: its true best
    may fall outside the bfloat16 top (k + margin), and its reported best must still bound it."""
    gen = torch.Generator().manual_seed(2)
    d = 64
    target = unit_rows(torch.randn(1, d, generator=gen))
    other = unit_rows(torch.randn(1, d, generator=gen))
    other = unit_rows(other - (other @ target.T) * target)
    spread = torch.linspace(0, 0.002, 60).unsqueeze(1)
    b = unit_rows((0.6 + spread) * target + 0.8 * other
                  + 1e-4 * torch.randn(60, d, generator=gen))
    b = torch.cat([b, unit_rows(torch.randn(40, d, generator=gen))])
    a = torch.cat([target, unit_rows(torch.randn(20, d, generator=gen))])
    _, _, best_a, _ = decoder_candidates(a, b, k=2, bfloat16=True)
    exact = (a[0].double() @ b.double().T).max().item()
    assert best_a[0] > exact  # the bound, not a rescored candidate (the case under test)
    assert best_a[0] < exact + 2 * bfloat16_error_bound(d)


def test_top_candidates_returns_float32_values_for_bfloat16_inputs() -> None:
    a, b = _twins(50, 16, 3)
    row_val, _, col_val, _ = top_candidates(a.bfloat16(), b.bfloat16(), 3, block=16)
    assert row_val.dtype == col_val.dtype == torch.float32


def test_sparse_matching_with_the_bfloat16_search_is_the_dense_optimum(monkeypatch) -> None:
    """Noisy twins (no fresh rows): the sparse solver with the bfloat16 search (what hardware
    with native bfloat16 runs; the test suite turns it off by default) finds the dense optimum
    and the same bound (rescored in float64, where the float32 search is off by ~1e-7)."""
    monkeypatch.setattr("sparselens.evaluation.candidates.use_bfloat16", lambda device: True)
    a, b = _twins(500, 32, 4, fresh_share=0.0)
    full = match_decoders(a, b, exact_limit=10**9)
    sparse = match_decoders(a, b, k=8, exact_limit=499 * 500)
    assert sparse.method == "sparse"
    assert abs(sparse.pwmcc - full.pwmcc) < 1e-9
    assert abs(sparse.upper_bound - full.upper_bound) < 1e-12


def test_top_candidates_equal_a_full_top_k_per_row_and_column() -> None:
    """Blocks small enough that the later ones merge only the entries above the running
    k-th best (the sorted merge), and ties broken either way give the same values."""
    a, b = _twins(700, 24, 5)
    full = a @ b.T
    for block in (700, 64, 16):
        row_val, row_idx, col_val, col_idx = top_candidates(a, b, 5, block)
        assert torch.allclose(row_val, full.topk(5, dim=1).values, atol=1e-6)
        assert torch.allclose(col_val, full.topk(5, dim=0).values, atol=1e-6)
        assert torch.allclose(full.gather(1, row_idx), row_val, atol=1e-6)
        assert torch.allclose(full.gather(0, col_idx), col_val, atol=1e-6)
        assert (col_idx.sort(0).values.diff(dim=0) > 0).all()  # k distinct rows per column
