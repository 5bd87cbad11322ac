"""MDL-SAE (Ayonrinde et al. 2024): the description length by hand and its threshold gradient
through the straight-through estimator."""

from __future__ import annotations

import math

import pytest
import torch

from dictionary_helpers import make, mean_l0, sparse_data, train
from sparselens.dictionaries import StepContext, build
from sparselens.dictionaries.mdl import binary_entropy, description_length, dl_upper_bound


def test_description_length_by_hand() -> None:
    rates = torch.tensor([0.5, 0.25, 0.0, 1.0])
    h = -(0.25 * math.log2(0.25) + 0.75 * math.log2(0.75))
    torch.testing.assert_close(binary_entropy(rates), torch.tensor([1.0, h, 0.0, 0.0]))
    dl = description_length(rates, torch.tensor(1.75), value_bits=8.0)
    assert float(dl) == pytest.approx(1.0 + h + 8 * 1.75)
    assert dl_upper_bound(2.0, 1024, 8.0) == pytest.approx(2 * (8 + 10))


def test_threshold_gradient_matches_the_formula() -> None:
    """dDL/dθ_i = [h'(p_i) + B] · dp_i/dθ_i, dp_i/dθ_i = -(1/ε) mean_b K_bi, h' = log2((1-p)/p)."""
    eps, bits, lam = 0.1, 4.0, 0.5
    model = build("mdl", d_in=3, n_latents=3, sparsity_coef=lam, bandwidth=eps, value_bits=bits)
    pre = torch.tensor([[0.52, 0.30, 0.10], [0.44, 0.33, 0.90], [0.80, 0.10, 0.27],
                        [0.70, 0.20, 0.00]])
    theta = torch.tensor([0.50, 0.31, 0.25])
    with torch.no_grad():
        model.threshold.copy_(theta)
    terms = model.loss_terms(pre, pre, pre, pre, pre, StepContext(step=1, total_steps=1))
    terms["dl"].backward()
    active = (pre > theta).float()
    p = active.mean(0)                                   # 0.75, 0.25, 0.5
    assert p.tolist() == [0.75, 0.25, 0.5]
    window = ((pre - theta).abs() < eps / 2).float()     # (0,0),(1,0); (0,1),(1,1); (2,2)
    dp = -(1 / eps) * window.mean(0)
    expected = lam * (torch.log2((1 - p) / p) + bits) * dp
    torch.testing.assert_close(model.threshold.grad, expected)
    dl = binary_entropy(p).sum() + bits * active.sum(1).mean()
    torch.testing.assert_close(terms["dl"], lam * dl)


def test_a_larger_dl_weight_gives_sparser_codes() -> None:
    x = sparse_data(2048)
    light, heavy = make("mdl", sparsity_coef=1e-3), make("mdl", sparsity_coef=3e-2)
    train(light, x, steps=150)
    train(heavy, x, steps=150)
    assert mean_l0(heavy, x) < 0.7 * mean_l0(light, x)
