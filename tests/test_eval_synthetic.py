"""Synthetic ground truth: the generator keeps its promises and the scores are exact."""

from __future__ import annotations

import itertools

import pytest
import torch

from sparselens.evaluation.synthetic import (
    SyntheticConfig,
    SyntheticFeatures,
    hierarchy_absorption,
    recovery_metrics,
    score_synthetic,
    train_synthetic,
)

SMALL = SyntheticConfig(d_model=16, n_features=40, mean_active=2.0, n_correlated_pairs=4,
                        n_parents=2, children_per_parent=2, child_probability=0.5)


def test_generator_frequencies_hierarchy_and_correlation() -> None:
    features = SyntheticFeatures(SyntheticConfig())
    x, coef = features.sample(50_000, torch.Generator().manual_seed(1))
    active = coef != 0
    assert x.shape == (50_000, 64)
    assert torch.allclose(x.double(), coef.double() @ features.directions, atol=1e-4)
    independent = features.probs > 0
    measured = active.double().mean(0)
    assert torch.allclose(measured[independent], features.probs[independent], atol=0.006)
    assert abs(active.sum(1).double().mean().item() - features.expected_l0) < 0.05
    for parent, kids in zip(features.parents, features.children):
        assert not (active[:, kids].any(1) & ~active[:, parent]).any(), "child without parent"
        assert int(active[:, kids].sum(1).max()) <= 1
    a, b = features.pairs[0]
    joint = (active[:, a] & active[:, b]).double().mean()
    assert joint > 1.5 * measured[a] * measured[b], "pairs must fire together more than chance"


def test_batches_resume_exactly() -> None:
    features = SyntheticFeatures(SMALL)
    full = list(itertools.islice(features.batches(64, seed=3), 4))
    resumed = list(itertools.islice(features.batches(64, seed=3, skip=2), 2))
    assert torch.equal(full[2].acts["synthetic"], resumed[0].acts["synthetic"])
    assert not torch.equal(full[0].acts["synthetic"], full[1].acts["synthetic"])


def test_recovery_is_exact_for_the_true_dictionary() -> None:
    features = SyntheticFeatures(SMALL)
    perm = torch.randperm(SMALL.n_features)
    exact = recovery_metrics(features.directions, 3.0 * features.directions[perm])
    assert exact["mean_max_cosine"] == pytest.approx(1.0)
    assert exact["fraction_recovered"] == 1.0
    flipped = recovery_metrics(features.directions, -features.directions)
    assert flipped["fraction_recovered"] == 0.0
    half = recovery_metrics(features.directions, features.directions[: SMALL.n_features // 2])
    assert half["fraction_recovered"] == pytest.approx(0.5, abs=0.05)


def test_absorption_against_known_hierarchy() -> None:
    features = SyntheticFeatures(SMALL)
    _, coef = features.sample(20_000, torch.Generator().manual_seed(0))
    honest = hierarchy_absorption(features, features.directions, coef, coef)
    assert honest["mean_absorption"] == 0.0
    absorbed = coef.clone()
    for parent, kids in zip(features.parents, features.children):
        absorbed[absorbed[:, kids].ne(0).any(1), parent] = 0.0   # the child took the parent
    result = hierarchy_absorption(features, features.directions, absorbed, coef)
    assert result["mean_absorption"] == pytest.approx(1.0)
    assert result["parents_learned"] == SMALL.n_parents


def test_topk_recovers_small_synthetic_features() -> None:
    features = SyntheticFeatures(SMALL)
    torch.manual_seed(0)
    dictionary = train_synthetic(features, "topk", {"k": 2}, n_latents=80, n_tokens=300_000,
                                 batch_size=1024)
    score = score_synthetic(features, dictionary, n_tokens=5000)
    assert score["fraction_recovered"] >= 0.8, score
    assert score["l0"] == pytest.approx(2.0, abs=0.1)


def test_synthetic_settings_keep_the_variant_and_fit_k() -> None:
    from sparselens.dictionaries import build
    from sparselens.evaluation.synthetic import synthetic_settings

    matryoshka = build("matryoshka", d_in=32, n_latents=64, k=16, group_sizes=[32, 32])
    settings, notes = synthetic_settings("matryoshka", matryoshka.cfg, 4.2)
    assert settings["k"] == 5 and notes["dictionary_k"] == 16
    assert "group_sizes" not in settings and "d_in" not in settings
    relu = build("relu", d_in=32, n_latents=64, sparsity_coef=3.0)
    settings, notes = synthetic_settings("relu", relu.cfg, 4.2)
    assert settings["sparsity_coef"] == 3.0 and "k" not in settings
