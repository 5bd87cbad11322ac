"""ITDA: atoms are real activations, reconstruction meets the threshold, Jaccard of labels."""

from __future__ import annotations

import pytest
import torch

from sparselens.comparison.itda import build_itda


def _sparse_data(n: int, d: int, n_features: int, seed: int) -> torch.Tensor:
    """Activations that are sums of 2 of `n_features` fixed directions."""
    gen = torch.Generator().manual_seed(seed)
    features = torch.randn(n_features, d, generator=torch.Generator().manual_seed(99))
    pick = torch.randint(n_features, (n, 2), generator=gen)
    coef = torch.rand(n, 2, generator=gen) + 0.5
    return (features[pick] * coef.unsqueeze(-1)).sum(1)


def _batches(x: torch.Tensor, size: int = 32):
    for start in range(0, x.shape[0], size):
        rows = torch.arange(start, min(start + size, x.shape[0]))
        yield x[rows], rows // 16, rows % 16


def test_itda_atoms_are_normalised_inputs_and_reconstruct_within_threshold() -> None:
    x = _sparse_data(2000, 32, 40, 0)
    itda = build_itda(_batches(x), k=4, threshold=0.2)
    assert 2 <= itda.n_atoms < 400  # far fewer atoms than activations: it generalises
    source = (itda.labels[:, 0] * 16 + itda.labels[:, 1])
    assert torch.allclose(itda.atoms, x[source] / x[source].norm(dim=1, keepdim=True))
    assert itda.n_seen == 2000
    held_out = _sparse_data(500, 32, 40, 1)
    error = itda.relative_error(held_out)
    assert (error <= 0.2).float().mean() > 0.9  # unseen activations: mostly within threshold


def test_jaccard_is_one_for_identical_streams_and_lower_for_different_models() -> None:
    x = _sparse_data(1000, 24, 30, 2)
    a = build_itda(_batches(x), k=3, threshold=0.1)
    assert a.jaccard(build_itda(_batches(x), k=3, threshold=0.1)) == 1.0
    other_model = x @ torch.randn(24, 24, generator=torch.Generator().manual_seed(3))
    b = build_itda(_batches(torch.tanh(other_model)), k=3, threshold=0.1)
    assert 0.0 <= a.jaccard(b) < 1.0


def test_max_atoms_and_bad_options() -> None:
    x = _sparse_data(500, 16, 50, 4)
    assert build_itda(_batches(x), k=2, threshold=0.01, max_atoms=25).n_atoms == 25
    with pytest.raises(ValueError, match="threshold"):
        build_itda(_batches(x), threshold=1.5)
    with pytest.raises(ValueError, match="no activations"):
        build_itda(iter([]))


def test_itda_from_a_cache_compares_hookpoints_by_jaccard(tmp_path, tiny_llama) -> None:
    from conftest import random_chunks
    from sparselens.comparison.itda import itda_from_cache
    from sparselens.data.cache import ActivationCache
    from sparselens.data.harvest import HarvestConfig, harvest

    harvest(tiny_llama, random_chunks(20, length=16), ["resid.1", "resid.2"], tmp_path,
            HarvestConfig(batch_size=4, shard_tokens=64, heldout_fraction=0.1, progress=False))
    cache = ActivationCache.open(tmp_path)
    one = itda_from_cache(cache, "resid.1", 200, k=4, threshold=0.05, batch_size=32)
    again = itda_from_cache(cache, "resid.1", 200, k=4, threshold=0.05, batch_size=32)
    other = itda_from_cache(cache, "resid.2", 200, k=4, threshold=0.05, batch_size=32)
    assert one.n_seen == 200 and one.jaccard(again) == 1.0
    assert 0.0 <= one.jaccard(other) < 1.0
