"""Gated SAE (Rajamanoharan et al.): the gate/magnitude forward with weight sharing through
r_mag, the gate's L1 and the auxiliary loss through a frozen decoder (L0 under the penalty:
test_dictionaries_relu.py)."""

from __future__ import annotations

import torch

from sparselens.dictionaries import StepContext, build


def hand_model():
    model = build("gated", d_in=2, n_latents=3, sparsity_coef=0.5)
    with torch.no_grad():
        model.W_enc.copy_(torch.tensor([[1.0, -1.0, 2.0], [1.0, 1.0, -1.0]]))
        model.b_enc.copy_(torch.tensor([0.0, 0.5, -0.5]))
        model.r_mag.copy_(torch.tensor([0.0, 1.0, -1.0]))
        model.b_mag.copy_(torch.tensor([-0.5, 0.2, 0.3]))
        model.W_dec.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]]))
        model.b_dec.copy_(torch.tensor([0.5, -0.5]))
    return model


def test_forward_uses_gate_and_weight_shared_magnitude() -> None:
    model = hand_model()
    x = torch.tensor([[1.5, 0.5], [0.5, 1.5]])
    centred = x - model.b_dec
    gate = centred @ model.W_enc + model.b_enc
    W_mag = model.W_enc * torch.exp(model.r_mag)  # column i scaled by exp(r_mag[i])
    mag = centred @ W_mag + model.b_mag
    expected = (gate > 0).float() * torch.relu(mag)
    # By hand for token 0: centred (1, 1); gate (2, 0.5, 0.5) all open;
    # mag (2 - 0.5, 0 * e + 0.2, 1 / e + 0.3).
    torch.testing.assert_close(expected[0], torch.tensor([1.5, 0.2, 1 / torch.e + 0.3]))
    torch.testing.assert_close(model.encode(x), expected.detach())


def test_loss_terms_by_hand() -> None:
    model = hand_model()
    x = torch.tensor([[1.5, 0.5], [0.5, 1.5]])
    out = model.training_loss(x, ctx=StepContext(step=1, total_steps=1))
    gate = torch.relu((x - model.b_dec) @ model.W_enc + model.b_enc).detach()
    dec_norms = model.W_dec.detach().norm(dim=1)
    torch.testing.assert_close(out.terms["l1_gate"], 0.5 * (gate * dec_norms).sum(1).mean())
    frozen = gate @ model.W_dec.detach() + model.b_dec.detach()
    torch.testing.assert_close(out.terms["aux_gate"], ((frozen - x) ** 2).sum(1).mean())


def test_auxiliary_loss_does_not_train_the_decoder() -> None:
    model = hand_model()
    x = torch.randn(16, 2)
    pre = model.pre_acts(x)
    terms = model.loss_terms(x, x, pre, model.activation(pre), x, StepContext())
    terms["aux_gate"].backward()
    assert model.W_dec.grad is None or bool((model.W_dec.grad == 0).all())
    assert model.b_dec.grad is not None  # through the encoder's input centring only
    assert model.W_enc.grad is not None and bool(model.W_enc.grad.abs().sum() > 0)
    assert model.r_mag.grad is None and model.b_mag.grad is None


def test_reconstruction_does_not_reach_the_gate_bias() -> None:
    """1[π_gate > 0] has no gradient; π_mag does not depend on b_gate."""
    model = hand_model()
    x = torch.randn(16, 2)
    codes = model.encode(x)
    (codes @ model.W_dec).pow(2).sum().backward()
    assert model.b_enc.grad is None or bool((model.b_enc.grad == 0).all())
    assert model.r_mag.grad is not None and model.b_mag.grad is not None
