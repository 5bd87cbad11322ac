"""SVCCA and linear CKA: invariances, agreement with definitions, the permutation baseline."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sparselens.comparison.universality import linear_cka, paired_space_similarity, svcca


def _rand(*shape: int, seed: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def test_cka_and_svcca_ignore_rotation_and_scale_of_either_space() -> None:
    x = _rand(300, 16, seed=0)
    rotation, _ = torch.linalg.qr(_rand(16, 16, seed=1))
    y = 3.0 * x @ rotation
    assert linear_cka(x, y) == pytest.approx(1.0, abs=1e-9)
    assert svcca(x, y) == pytest.approx(1.0, abs=1e-9)


def test_a_space_mapped_linearly_into_a_wider_one_keeps_svcca_near_one() -> None:
    x = _rand(400, 12, seed=2)
    y = x @ _rand(12, 30, seed=3)  # another model's width
    assert svcca(x, y) == pytest.approx(1.0, abs=1e-6)
    assert svcca(x, _rand(400, 30, seed=4)) < 0.3


def test_cka_matches_the_hsic_definition() -> None:
    x, y = _rand(50, 4, seed=5), _rand(50, 6, seed=6)
    h = np.eye(50) - 1.0 / 50
    kx, ky = x.double().numpy() @ x.double().numpy().T, y.double().numpy() @ y.double().numpy().T
    hsic = lambda a, b: np.trace(a @ h @ b @ h)  # noqa: E731
    assert linear_cka(x, y) == pytest.approx(hsic(kx, ky) / np.sqrt(hsic(kx, kx) * hsic(ky, ky)))


def test_paired_spaces_beat_the_permutation_baseline_and_random_pairs_do_not() -> None:
    w_a = _rand(200, 16, seed=7)
    w_b = w_a @ _rand(16, 24, seed=8) + 0.1 * _rand(200, 24, seed=9)
    pairs = np.arange(200)
    result = paired_space_similarity(w_a, w_b, pairs, pairs, n_permutations=30).summary()
    assert result["svcca"]["paired"] > 0.9 > result["svcca"]["random_mean"] + 0.3
    assert result["cka"]["p_value"] == pytest.approx(1 / 31)
    shuffled = np.random.default_rng(0).permutation(200)
    null = paired_space_similarity(w_a, w_b, pairs, shuffled, n_permutations=30).summary()
    assert null["cka"]["p_value"] > 0.05


def test_too_few_pairs_are_refused() -> None:
    with pytest.raises(ValueError, match="at least 3"):
        paired_space_similarity(_rand(5, 3, seed=0), _rand(5, 3, seed=1), [0, 1], [0, 1])


def test_the_fast_permutation_path_equals_the_definitions() -> None:
    w_a, w_b = _rand(60, 8, seed=10), _rand(60, 11, seed=11)
    pairs = np.arange(60)
    result = paired_space_similarity(w_a, w_b, pairs, pairs, n_permutations=3, seed=4)
    assert result.svcca == pytest.approx(svcca(w_a, w_b), abs=1e-9)
    assert result.cka == pytest.approx(linear_cka(w_a, w_b), abs=1e-9)
    order = torch.randperm(60, generator=torch.Generator().manual_seed(4))
    assert result.baseline_svcca[0] == pytest.approx(svcca(w_a, w_b[order]), abs=1e-9)
    assert result.baseline_cka[0] == pytest.approx(linear_cka(w_a, w_b[order]), abs=1e-9)


def test_svcca_says_plainly_when_fewer_pairs_than_directions_make_it_uninformative() -> None:
    """With fewer pairs than kept directions, random pairings score SVCCA about 1: the record
    and the console line say so, and the floor is a true lower bound of every pairing."""
    w_a, w_b = _rand(300, 64, seed=7), _rand(300, 64, seed=8)
    few = paired_space_similarity(w_a, w_b, np.arange(40), np.arange(40), n_permutations=10)
    assert few.dims[0] + few.dims[1] > 39 and few.svcca_floor > 0.5
    assert min(few.baseline_svcca) >= few.svcca_floor - 1e-9
    assert few.svcca >= few.svcca_floor - 1e-9
    assert "uninformative" in few.describe() and few.summary()["svcca_note"]
    many = paired_space_similarity(w_a, w_b, np.arange(300), np.arange(300), n_permutations=3)
    assert many.svcca_floor == 0 and many.svcca_note() is None
    assert "uninformative" not in many.describe()
