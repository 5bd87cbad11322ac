"""Variational SAE (Baker and Li): Gaussian latents sampled in training, means at inference,
KL to a standard normal prior, and its known cost in reconstruction left visible."""

from __future__ import annotations

import math

import torch

from dictionary_helpers import fvu, make, sparse_data, train
from sparselens.dictionaries import StepContext, build
from sparselens.dictionaries.losses import kl_to_standard_normal


def test_kl_by_hand() -> None:
    mean = torch.tensor([[0.0, 1.0]])
    log_var = torch.tensor([[0.0, math.log(4.0)]])
    expected = 0.5 * ((0 + 1 - 1 - 0) + (1 + 4 - 1 - math.log(4.0)))
    torch.testing.assert_close(kl_to_standard_normal(mean, log_var), torch.tensor(expected))


def test_training_samples_and_inference_uses_the_mean() -> None:
    model = make("variational", kl_coef=1.0)
    x = sparse_data(32)
    _, first = model.training_codes(x)
    _, second = model.training_codes(x)
    assert not torch.equal(first, second)
    topk = build("topk", d_in=16, n_latents=64, k=4)
    torch.testing.assert_close(model.encode(x), topk.activation(model.pre_acts(x)))
    torch.testing.assert_close(model.encode(x), model.encode(x))


def test_loss_holds_the_kl_of_the_posterior() -> None:
    model = make("variational", kl_coef=0.3, aux_coef=0.0)
    x = sparse_data(32)
    out = model.training_loss(x, ctx=StepContext())
    expected = 0.3 * kl_to_standard_normal(model.pre_acts(x), model.log_variance(x))
    torch.testing.assert_close(out.terms["kl"], expected)
    out.loss.backward()
    assert model.W_logvar.grad is not None and bool(model.W_logvar.grad.abs().sum() > 0)


def test_known_weakness_is_not_hidden() -> None:
    """The paper finds the KL pressure hurts reconstruction; the same budget of training
    leaves the variational SAE behind a plain TopK SAE."""
    x = sparse_data(2048)
    variational, topk = make("variational", kl_coef=1.0), make("topk")
    train(variational, x, steps=100)
    train(topk, x, steps=100)
    assert fvu(variational, x) > 2 * fvu(topk, x)


def test_training_noise_starts_small() -> None:
    """σ starts at exp(-2) (initial_log_var -4): the sampled training codes start close to the
    means, so training starts near a TopK SAE (at σ = 1 they were far from them)."""
    x = sparse_data(256)
    gaps = {}
    for log_var in (-4.0, 0.0):
        model = make("variational", initial_log_var=log_var)
        model.initialize_from_data(x)
        torch.manual_seed(0)
        mean, sampled = model.training_codes(x)
        pre = model.activation(mean)
        gaps[log_var] = float((sampled - pre).norm() / pre.norm())
    assert gaps[-4.0] < 0.6 and gaps[0.0] > 1.2   # 0.44 and 1.59 (relative to the codes)
