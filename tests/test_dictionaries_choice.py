"""Feature Choice and Mutual Choice SAEs (Ayonrinde): Zipf capacities, per-latent selection,
per-latent inference thresholds, and aux_zipf_loss over under-used latents (k per token on
average: test_dictionaries_topk_family.py)."""

from __future__ import annotations

import pytest
import torch

from dictionary_helpers import make, sparse_data
from sparselens.dictionaries import StepContext, build
from sparselens.dictionaries.batchtopk import batch_topk
from sparselens.dictionaries.choice import feature_choice, zipf_densities


def test_zipf_densities_sum_to_k_and_are_capped_at_one() -> None:
    rho = zipf_densities(64, 8, 1.0)
    assert float(rho.sum()) == pytest.approx(8.0, rel=1e-5)
    assert float(rho.max()) <= 1.0 and bool((rho[:-1] >= rho[1:]).all())
    assert rho[0] == 1.0  # the steep head is capped
    uncapped = rho[rho < 1]
    ratio = uncapped[:-1] / uncapped[1:]
    first = int((rho == 1).sum())
    expected = torch.arange(first + 2, 65).float() / torch.arange(first + 1, 64).float()
    torch.testing.assert_close(ratio, expected)  # ρ_i ∝ 1/(i+1) below the cap
    torch.testing.assert_close(zipf_densities(64, 8, 0.0), torch.full((64,), 8 / 64))
    with pytest.raises(ValueError):
        zipf_densities(8, 9, 1.0)


def test_feature_choice_each_latent_picks_its_top_tokens() -> None:
    pre = torch.tensor([[3.0, 0.1, -1.0],
                        [1.0, 0.4, 2.0],
                        [2.0, 0.3, -2.0],
                        [0.5, 0.2, -3.0]])
    codes = feature_choice(pre, torch.tensor([2, 1, 3]))
    expected = torch.tensor([[3.0, 0.0, 0.0],
                             [0.0, 0.4, 2.0],
                             [2.0, 0.0, 0.0],
                             [0.0, 0.0, 0.0]])  # latent 2 has only one positive token
    torch.testing.assert_close(codes, expected)


def test_feature_choice_thresholds_are_per_latent() -> None:
    model = build("feature_choice", d_in=3, n_latents=3, k=1, zipf_exponent=0.0,
                  pre_encoder_bias=False, threshold_decay=0.0)
    with torch.no_grad():
        model.W_enc.copy_(torch.eye(3))
        model.b_enc.zero_()
    x = torch.tensor([[3.0, 0.1, -1.0], [1.0, 0.4, 2.0], [2.0, 0.3, -2.0]])
    _, codes = model.training_codes(x)  # capacity m = round(1/3 * 3) = 1 per latent
    assert (codes != 0).sum(0).tolist() == [1, 1, 1]
    assert model.state_dict()["threshold"].shape == (3,)
    torch.testing.assert_close(model.threshold, torch.tensor([3.0, 0.4, 2.0]))
    torch.testing.assert_close(model.encode(torch.tensor([[3.5, 0.39, 2.5]])),
                               torch.tensor([[3.5, 0.0, 2.5]]))


def test_mutual_choice_selects_like_batch_topk() -> None:
    model = make("mutual_choice")
    x = sparse_data(64)
    _, codes = model.training_codes(x)
    torch.testing.assert_close(codes, batch_topk(model.pre_acts(x), 4))


@pytest.mark.parametrize("name", ["feature_choice", "mutual_choice"])
def test_aux_zipf_loss_covers_underused_latents(name: str) -> None:
    model = make(name)
    x = sparse_data(128)
    ctx = StepContext()
    quiet = model.training_loss(x, ctx=ctx).terms
    assert float(quiet["aux_zipf"].detach()) == 0.0  # nothing under-used yet
    with torch.no_grad():
        model.density[5] = 0.0  # latent 5 fires far below its expected Zipf density
    terms = model.training_loss(x, ctx=ctx).terms
    assert float(terms["aux_zipf"].detach()) > 0.0
    assert bool(model.underused(ctx)[5]) and int(model.underused(ctx).sum()) == 1
    dead = torch.zeros(64, dtype=torch.bool)
    dead[9] = True
    assert model.underused(StepContext(dead_mask=dead))[[5, 9]].all()


def test_bad_choice_config_is_refused() -> None:
    with pytest.raises(ValueError, match="zipf_exponent"):
        build("feature_choice", d_in=4, n_latents=8, k=2, zipf_exponent=-1.0)
    with pytest.raises(ValueError, match="underuse_ratio"):
        build("mutual_choice", d_in=4, n_latents=8, k=2, underuse_ratio=2.0)
