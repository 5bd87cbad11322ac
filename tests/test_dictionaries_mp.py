"""Matching Pursuit SAE (Costa et al.): the unrolled pursuit by hand, gradients through the
loop, the adaptive inference stop, and scales kept (not folded) in the checkpoint."""

from __future__ import annotations

import pytest
import torch

from sparselens.dictionaries import build
from sparselens.dictionaries.mp import matching_pursuit
from sparselens.io.native import load_dictionary, save_dictionary

ATOMS = torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]])


def test_pursuit_by_hand() -> None:
    x = torch.tensor([[1.0, 1.0]])
    # Step 1: correlations (1, 1.4, 1) -> atom 1, residual (0.16, -0.12).
    # Step 2: correlations (0.16, 0, -0.12) -> atom 0, residual (0, -0.12).
    torch.testing.assert_close(matching_pursuit(x, ATOMS, 1), torch.tensor([[0.0, 1.4, 0.0]]))
    torch.testing.assert_close(matching_pursuit(x, ATOMS, 2), torch.tensor([[0.16, 1.4, 0.0]]))


def test_pursuit_recovers_codes_on_an_orthonormal_dictionary() -> None:
    atoms = torch.linalg.qr(torch.randn(6, 6))[0].T
    codes = torch.tensor([[0.0, 3.0, 0.0, 1.0, 0.0, 2.0]])
    torch.testing.assert_close(matching_pursuit(codes @ atoms, atoms, 3), codes)


def test_adaptive_stop_at_inference() -> None:
    model = build("mp", d_in=2, n_latents=3, k=2, residual_threshold=0.5,
                  max_inference_steps=5, pre_encoder_bias=False)
    with torch.no_grad():
        model.W_dec.copy_(ATOMS)
        model.b_dec.zero_()
    x = torch.tensor([[1.0, 1.0], [3.0, 0.0]])
    # Token 0 stops after one atom (residual norm 0.2 < 0.5); token 1 needs one atom.
    torch.testing.assert_close(model.encode(x), torch.tensor([[0.0, 1.4, 0.0], [3.0, 0.0, 0.0]]))
    _, train_codes = model.training_codes(x)  # training always runs k steps
    torch.testing.assert_close(train_codes[0], torch.tensor([0.16, 1.4, 0.0]))


def test_gradient_flows_through_the_unrolled_loop() -> None:
    x = torch.tensor([[1.0, 1.0], [0.2, 0.9]], dtype=torch.float64)

    def loss(atoms: torch.Tensor) -> torch.Tensor:
        codes = matching_pursuit(x, atoms, 3)
        return (codes @ atoms - x).pow(2).sum()

    atoms = ATOMS.double().clone().requires_grad_(True)
    assert torch.autograd.gradcheck(loss, (atoms,))


def test_no_encoder_weights_and_scales_kept_in_checkpoint(tmp_path) -> None:
    model = build("mp", d_in=4, n_latents=8, k=2, input_scale=3.0, output_scale=3.0)
    assert not hasattr(model, "W_enc") and set(dict(model.named_parameters())) == {"W_dec",
                                                                                   "b_dec"}
    x = torch.randn(5, 4)
    save_dictionary(model, tmp_path / "mp")
    loaded = load_dictionary(tmp_path / "mp")
    assert loaded.cfg.input_scale == 3.0
    torch.testing.assert_close(loaded.encode(x), model.encode(x))


def test_bad_config_is_refused() -> None:
    with pytest.raises(ValueError, match="unit-norm"):
        build("mp", d_in=4, n_latents=8, unit_norm_decoder=False)
    with pytest.raises(ValueError, match="k"):
        build("mp", d_in=4, n_latents=8, k=0)
    with pytest.raises(ValueError, match="d_out must equal d_in"):
        build("mp", d_in=4, d_out=3, n_latents=8, pre_encoder_bias=False)


def test_pursuit_runs_under_bf16_autocast() -> None:
    """The trainer autocasts to bf16 where the CPU has it; the scores are then bf16 and the
    codes float32 (the pursuit used to fail there with a dtype mismatch)."""
    atoms = torch.nn.functional.normalize(torch.randn(8, 4), dim=-1)
    residual = torch.randn(5, 4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        codes = matching_pursuit(residual, atoms, 3)
    assert codes.dtype == torch.float32
    assert int((codes != 0).sum(-1).max()) <= 3
