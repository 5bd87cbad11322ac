"""PolySAE (Koromilas et al. 2026): the polynomial decoder by hand, orthonormal projections
after a step, and a start equal to TopK."""

from __future__ import annotations

import torch

from dictionary_helpers import make, sparse_data, train
from sparselens.dictionaries import StepContext, build


def test_polynomial_decoder_by_hand() -> None:
    model = build("polysae", d_in=2, n_latents=3, k=3, interaction_rank=1, homogeneous=False)
    with torch.no_grad():
        model.W_dec.copy_(torch.tensor([[1.0, 0], [0, 1], [1, 1]]))
        model.b_dec.copy_(torch.tensor([0.5, -0.5]))
        model.U.copy_(torch.tensor([[[1.0], [0], [0]], [[0.0], [1], [0]], [[1.0], [1], [1]]]))
        model.C.copy_(torch.tensor([[[1.0], [0]], [[0.0], [1]]]))
        model.lambdas.copy_(torch.tensor([2.0, -1.0]))
    z = torch.tensor([[2.0, 3.0, 1.0]])
    # linear: 2(1,0) + 3(0,1) + 1(1,1) + b = (3.5, 3.5); a1 = 2, a2 = 3, a3 = 6;
    # pair: 2 * (a1 a2) * (1, 0) = (12, 0); triple: -1 * (a1 a2 a3) * (0, 1) = (0, -36).
    torch.testing.assert_close(model.decode_scaled(z), torch.tensor([[15.5, -32.5]]))


def test_homogeneous_decoder_scales_linearly_with_the_codes() -> None:
    """Default: pairwise / ||z||, triple / ||z||²; so decode(c z) - b = c (decode(z) - b)."""
    model = build("polysae", d_in=2, n_latents=3, k=3, interaction_rank=1)
    exact = build("polysae", d_in=2, n_latents=3, k=3, interaction_rank=1, homogeneous=False)
    with torch.no_grad():
        model.C.fill_(0.5)
        exact.load_state_dict(model.state_dict())
    z = torch.tensor([[2.0, 3.0, 1.0]])
    norm = z.norm()
    a = [float(z @ u) for u in model.U]
    pair, triple = a[0] * a[1], a[0] * a[1] * a[2]
    expected = (z @ model.W_dec + model.b_dec
                + 0.5 * (pair / norm + triple / norm ** 2))  # λ = 1, C = 0.5 everywhere
    torch.testing.assert_close(model.decode_scaled(z), expected.detach())
    b = model.b_dec
    torch.testing.assert_close(model.decode_scaled(10 * z) - b, 10 * (model.decode_scaled(z) - b))
    assert not torch.allclose(exact.decode_scaled(10 * z) - b, 10 * (exact.decode_scaled(z) - b))


def test_starts_as_topk_and_keeps_orthonormal_projections() -> None:
    model = make("polysae")
    x = sparse_data(512)
    linear = model.encode(x) @ model.W_dec + model.b_dec
    torch.testing.assert_close(model(x), linear)
    train(model, x, steps=30)
    assert float(model.C.detach().abs().sum()) > 0
    for u in model.U:
        torch.testing.assert_close(u.T @ u, torch.eye(u.shape[1]), atol=1e-5, rtol=0)


def test_interactions_get_gradient_once_c_is_nonzero() -> None:
    model = make("polysae")
    with torch.no_grad():
        model.C.fill_(0.1)
    out = model.training_loss(sparse_data(64), ctx=StepContext())
    out.loss.backward()
    assert model.U.grad.abs().sum() > 0 and model.lambdas.grad.abs().sum() > 0
