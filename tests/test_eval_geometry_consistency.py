"""Feature geometry and seed consistency on dictionaries whose answers are known."""

from __future__ import annotations

import math

import pytest
import torch

from sparselens.evaluation.consistency import consistency_metrics, pairwise_consistency
from sparselens.evaluation.geometry import decoder_orthogonality, geometry_metrics
from sparselens.lens.codes import SparseCodes


def test_orthogonal_decoder_and_duplicates() -> None:
    eye = torch.eye(8)
    result = decoder_orthogonality(eye, block=3)
    assert result["max_abs_cos"] == pytest.approx(0.0, abs=1e-7)
    assert result["mean_abs_cos"] == pytest.approx(0.0, abs=1e-7)
    dup = torch.cat([eye, -2 * eye[:1]])  # a negated copy of row 0: |cos| = 1
    result = decoder_orthogonality(dup, block=4)
    assert result["max_abs_cos"] == pytest.approx(1.0)
    assert result["mean_abs_cos"] == pytest.approx(2 / (9 * 8))


def test_random_decoder_matches_the_random_baseline() -> None:
    w = torch.randn(512, 256, generator=torch.Generator().manual_seed(0))
    result = decoder_orthogonality(w, block=100)
    assert result["mean_abs_cos"] == pytest.approx(result["random_mean_abs_cos"], rel=0.05)


def test_density_from_sparse_and_dense_agree() -> None:
    dense = torch.zeros(10, 4)
    dense[:5, 0] = 1.0      # latent 0 fires on half the tokens
    dense[:, 1] = 2.0       # latent 1 on all (dense), latent 2 and 3 dead
    a = geometry_metrics(torch.randn(4, 3), dense, dense_threshold=0.6)
    b = geometry_metrics(torch.randn(4, 3), SparseCodes.from_dense(dense), dense_threshold=0.6)
    for result in (a, b):
        assert result["dead_fraction"] == 0.5
        assert result["dense_fraction"] == 0.25
        assert sum(result["log10_density_histogram"]["counts"]) == 2
        assert result["log10_density_histogram"]["dead"] == 2
    with pytest.raises(ValueError, match="another dictionary"):
        geometry_metrics(torch.randn(5, 3), dense)


def test_dictionary_against_its_permutation_is_exactly_consistent() -> None:
    w = torch.randn(64, 16, generator=torch.Generator().manual_seed(1))
    permuted = 3.0 * w[torch.randperm(64)]
    result = consistency_metrics(w, permuted)
    assert result["pw_mcc"] == pytest.approx(1.0, abs=1e-6)
    assert result["fraction_matched"] == 1.0


def test_independent_dictionaries_are_inconsistent_and_pairs_average() -> None:
    gen = torch.Generator().manual_seed(2)
    a, b = torch.randn(64, 32, generator=gen), torch.randn(64, 32, generator=gen)
    result = consistency_metrics(a, b)
    assert 0.0 < result["pw_mcc"] < 0.5
    assert result["fraction_matched"] == 0.0
    half = torch.cat([a[:32], b[32:]])  # shares half its latents with a
    both = pairwise_consistency({"a": a, "b": b, "half": half})
    assert len(both["pairs"]) == 3
    pair = next(p for p in both["pairs"] if p["b"] == "half" and p["a"] == "a")
    assert pair["fraction_matched"] == pytest.approx(0.5)
    assert math.isfinite(both["mean_pw_mcc"])
    with pytest.raises(ValueError, match="different spaces"):
        consistency_metrics(a, torch.randn(64, 8))
