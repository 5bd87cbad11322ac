"""Archetypal SAE (Fel et al.): atoms as (relaxed) convex combinations of candidate points,
kept feasible by projection, with k-means candidates and folding through the scale."""

from __future__ import annotations

import math

import pytest
import torch

from dictionary_helpers import make, sparse_data, train
from sparselens.dictionaries import build
from sparselens.dictionaries.init import kmeans


def test_atoms_stay_in_the_relaxed_convex_hull_during_training() -> None:
    model = make("archetypal", delta=0.2)
    train(model, sparse_data(1024), steps=30, lr=5e-2)
    mixing, relax = model.mixing.detach(), model.relaxation.detach()
    assert bool((mixing >= 0).all())
    torch.testing.assert_close(mixing.sum(1), torch.ones(64))
    assert float(relax.norm(dim=1).max()) <= 0.2 + 1e-6
    assert float(relax.norm(dim=1).max()) > 0.0  # the relaxation is used
    expected = model.log_scale.exp() * (mixing @ model.candidates + relax)
    torch.testing.assert_close(model.W_dec.detach(), expected.detach())


def test_strict_archetypal_with_zero_delta() -> None:
    model = make("archetypal", delta=0.0)
    train(model, sparse_data(1024), steps=10)
    assert float(model.relaxation.detach().abs().max()) == 0.0


def test_candidates_are_kmeans_centroids_of_the_centred_data() -> None:
    centers = torch.tensor([[5.0, 0.0], [-5.0, 0.0], [0.0, 5.0]])
    points = (centers[:, None] + 0.1 * torch.randn(3, 50, 2)).reshape(-1, 2)
    found = kmeans(points, 3)
    distances = torch.cdist(found, centers).amin(1)
    assert float(distances.max()) < 0.1
    model = build("archetypal", d_in=2, n_latents=4, k=1, n_candidates=3)
    model.initialize_from_data(points)
    torch.testing.assert_close(model.candidates, kmeans(points - model.b_dec, 3))
    with pytest.raises(ValueError, match="at least"):
        kmeans(points[:2], 3)


def test_output_scale_folds_into_the_log_scale() -> None:
    model = make("archetypal", input_scale=2.0, output_scale=2.0)
    atoms = model.W_dec.detach().clone()
    model.fold_scales()
    assert float(model.log_scale.detach()) == pytest.approx(-math.log(2.0))
    torch.testing.assert_close(model.W_dec.detach(), atoms / 2)


def test_inference_decoder_is_cached_until_weights_change() -> None:
    model = make("archetypal")
    with torch.no_grad():
        first = model.W_dec
        assert model.W_dec is first
        model.mixing.mul_(0.5)
        assert model.W_dec is not first
        torch.testing.assert_close(model.W_dec, model._compose())


def test_bad_config_is_refused() -> None:
    with pytest.raises(ValueError, match="unit_norm_decoder"):
        build("archetypal", d_in=4, n_latents=8, k=2, unit_norm_decoder=True)
    with pytest.raises(ValueError, match="delta"):
        build("archetypal", d_in=4, n_latents=8, k=2, delta=-1.0)
