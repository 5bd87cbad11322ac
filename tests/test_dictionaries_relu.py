"""ReLU + L1 (Towards Monosemanticity), the decoder-norm L1 of Anthropic's April 2024 update,
and p-annealing (Karvonen et al.): forward math, penalties, schedules, sparsity in training."""

from __future__ import annotations

import pytest
import torch

from dictionary_helpers import l0_without_and_with_penalty
from sparselens.dictionaries import StepContext, build
from sparselens.dictionaries.losses import lp_penalty
from sparselens.dictionaries.schedules import stepped_anneal, warmup_factor


def hand_model(name: str, **cfg):
    model = build(name, d_in=2, n_latents=3, **cfg)
    with torch.no_grad():
        model.W_enc.copy_(torch.tensor([[1.0, -1.0, 0.5], [0.0, 2.0, 0.5]]))
        model.b_enc.copy_(torch.tensor([0.0, -0.5, 0.1]))
        model.W_dec.copy_(torch.tensor([[1.0, 0.0], [0.0, 2.0], [0.6, 0.8]]))
        model.b_dec.copy_(torch.tensor([0.5, 0.0]))
    return model


def test_relu_forward_and_l1_loss_by_hand() -> None:
    model = hand_model("relu", sparsity_coef=0.1, unit_norm_decoder=False)
    x = torch.tensor([[1.5, 1.0]])
    # x - b_dec = (1, 1); pre = (1, -1 + 2 - 0.5, 0.5 + 0.5 + 0.1) = (1, 0.5, 1.1)
    codes = model.encode(x)
    torch.testing.assert_close(codes, torch.tensor([[1.0, 0.5, 1.1]]))
    recon = torch.tensor([[1.0 + 0.66 + 0.5, 1.0 + 0.88]])
    torch.testing.assert_close(model(x), recon)
    out = model.training_loss(x, ctx=StepContext(step=1, total_steps=1))
    torch.testing.assert_close(out.terms["mse"], ((recon - x) ** 2).sum())
    torch.testing.assert_close(out.terms["l1"], torch.tensor(0.1 * 2.6))


def test_relu_dn_penalty_weighs_codes_by_decoder_norms() -> None:
    model = hand_model("relu_dn", sparsity_coef=0.1, sparsity_warmup=0.0)
    x = torch.tensor([[1.0, 1.0]])
    # No pre-encoder bias: pre = (1, -1 + 2 - 0.5, 0.5 + 0.5 + 0.1) = (1, 0.5, 1.1)
    torch.testing.assert_close(model.encode(x), torch.tensor([[1.0, 0.5, 1.1]]))
    out = model.training_loss(x, ctx=StepContext(step=1, total_steps=1))
    torch.testing.assert_close(out.terms["l1"], torch.tensor(0.1 * (1.0 * 1 + 0.5 * 2 + 1.1 * 1)))


def test_relu_dn_defaults_follow_the_update() -> None:
    model = build("relu_dn", d_in=8, n_latents=16)
    assert model.cfg.pre_encoder_bias is False and model.cfg.unit_norm_decoder is False
    torch.testing.assert_close(model.W_dec.norm(dim=1), torch.full((16,), 0.1))
    torch.testing.assert_close(model.W_enc, model.W_dec.T)
    with torch.no_grad():
        model.W_dec.mul_(3.0)
    model.after_optimizer_step(StepContext())
    torch.testing.assert_close(model.W_dec.norm(dim=1), torch.full((16,), 0.3))
    x = torch.randn(4, 8)
    half = model.training_loss(x, ctx=StepContext(step=25, total_steps=1000)).terms["l1"]
    full = model.training_loss(x, ctx=StepContext(step=50, total_steps=1000)).terms["l1"]
    torch.testing.assert_close(2 * half, full)


def test_relu_keeps_unit_norm_decoder() -> None:
    model = build("relu", d_in=8, n_latents=16)
    x = torch.randn(32, 8)
    model.training_loss(x).loss.backward()
    model.before_optimizer_step(StepContext())
    parallel = (model.W_dec.grad * model.W_dec).sum(-1)
    torch.testing.assert_close(parallel, torch.zeros(16), atol=1e-6, rtol=0)
    with torch.no_grad():
        model.W_dec.mul_(2.0)
    model.after_optimizer_step(StepContext())
    torch.testing.assert_close(model.W_dec.norm(dim=1), torch.ones(16))


def test_warmup_factor() -> None:
    assert warmup_factor(0.0, 0.05) == 0.0
    assert warmup_factor(0.025, 0.05) == pytest.approx(0.5)
    assert warmup_factor(0.5, 0.05) == 1.0
    assert warmup_factor(0.0, 0.0) == 1.0


@pytest.mark.parametrize("name", ["relu", "relu_dn", "p_anneal", "gated"])
def test_l0_falls_under_the_penalty(name: str) -> None:
    free, penalised = l0_without_and_with_penalty(name, 1.0)
    assert penalised < 0.6 * free


def test_resampling_replaces_dead_latents_at_the_configured_step() -> None:
    model = build("relu", d_in=8, n_latents=16, resample_at=[0.5])
    x = torch.randn(64, 8)
    dead = torch.zeros(16, dtype=torch.bool)
    dead[[3, 7]] = True
    before = model.W_dec.detach().clone()
    model.training_loss(x, ctx=StepContext(step=4, total_steps=10, dead_mask=dead))
    torch.testing.assert_close(model.W_dec.detach(), before)  # not a resampling step
    with torch.no_grad():
        model.b_enc.fill_(0.3)
    model.training_loss(x, ctx=StepContext(step=5, total_steps=10, dead_mask=dead))
    changed = (model.W_dec.detach() != before).any(1)
    assert changed.tolist() == dead.tolist()
    rows = model.W_dec.detach()[dead]
    torch.testing.assert_close(rows.norm(dim=1), torch.ones(2))
    # Each new atom is the direction of one of the batch's inputs.
    cosine = (rows @ (x / x.norm(dim=1, keepdim=True)).T).amax(1)
    torch.testing.assert_close(cosine, torch.ones(2))
    assert model.b_enc[dead].tolist() == [0.0, 0.0] and model.b_enc[~dead].eq(0.3).all()


def test_lp_penalty_by_hand_and_finite_gradient_at_zero() -> None:
    codes = torch.tensor([[0.0, 4.0, 1.0], [9.0, 0.0, 0.0]], requires_grad=True)
    value = lp_penalty(codes, 0.5)
    torch.testing.assert_close(value, torch.tensor((2.0 + 1.0 + 3.0) / 2))
    value.backward()
    assert torch.isfinite(codes.grad).all()
    assert codes.grad[0, 0] == 0 and codes.grad[0, 1] == pytest.approx(0.5 * 0.5 * 4 ** -0.5)


def test_p_schedule_is_stepped_from_anneal_start() -> None:
    values = [stepped_anneal(t, 1.0, 0.2, 0.5, 4) for t in (0.0, 0.5, 0.6, 0.75, 0.9, 1.0)]
    assert values == pytest.approx([1.0, 1.0, 0.8, 0.4, 0.2, 0.2])


def test_p_anneal_rescales_the_coefficient_so_the_penalty_is_continuous() -> None:
    model = build("p_anneal", d_in=8, n_latents=16, sparsity_coef=0.3, anneal_start=0.5,
                  n_p_steps=4, p_end=0.2)
    x = torch.randn(32, 8) * 3
    pre = model.pre_acts(x)
    codes = model.activation(pre)
    before = model.loss_terms(x, x, pre, codes, x, StepContext(step=50, total_steps=100))["lp"]
    assert float(model.p) == 1.0
    after = model.loss_terms(x, x, pre, codes, x, StepContext(step=55, total_steps=100))["lp"]
    assert float(model.p) == pytest.approx(0.8)
    torch.testing.assert_close(after, before)
    expected_coef = 0.3 * lp_penalty(codes, 1.0) / lp_penalty(codes, 0.8)
    torch.testing.assert_close(model.lp_coef, expected_coef.detach())
    assert "lp_coef" in model.state_dict() and "p" in model.state_dict()


@pytest.mark.parametrize("bad", [{"p_end": 0.0}, {"p_end": 1.5}, {"anneal_start": 1.0},
                                 {"n_p_steps": 0}])
def test_p_anneal_bad_config_is_refused(bad: dict) -> None:
    with pytest.raises(ValueError):
        build("p_anneal", d_in=4, n_latents=8, **bad)


def test_relu_bad_config_is_refused() -> None:
    with pytest.raises(ValueError, match="resample_at"):
        build("relu", d_in=4, n_latents=8, resample_at=[1.5])
    with pytest.raises(ValueError, match="decoder_init_norm"):
        build("relu_dn", d_in=4, n_latents=8, decoder_init_norm=0.0)
