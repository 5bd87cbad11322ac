"""KronSAE (Kurochkin et al. 2025): mAND by hand, the latent ordering of the Kronecker
factorisation, and the encoder's size against a TopK SAE's."""

from __future__ import annotations

import pytest
import torch

from sparselens.dictionaries import build
from sparselens.dictionaries.kron import mand


def test_mand_by_hand() -> None:
    p = torch.tensor([[2.0, -1.0]])          # one head, m = 2
    q = torch.tensor([[8.0, 0.5, 0.0]])      # n = 3
    z = mand(p, q)
    # sqrt(2*8) = 4, sqrt(2*0.5) = 1, q = 0 and p < 0 never fire.
    torch.testing.assert_close(z, torch.tensor([[[4.0, 1.0, 0.0], [0.0, 0.0, 0.0]]]))
    assert (z == 0).tolist() == [[[False, False, True], [True, True, True]]]


def test_mand_gradient_is_finite_at_the_edge() -> None:
    p = torch.tensor([[1e-20, 1.0]], requires_grad=True)
    q = torch.tensor([[4.0]], requires_grad=True)
    mand(p, q).sum().backward()
    assert torch.isfinite(p.grad).all() and torch.isfinite(q.grad).all()
    assert p.grad[0, 1] == pytest.approx(0.5 * (4.0 / 1.0) ** 0.5)  # q / (2 sqrt(pq))


def test_latents_are_the_head_wise_outer_products() -> None:
    """2 heads, m = 2, n = 2: latent (g, i, j) at index g*4 + i*2 + j."""
    model = build("kronsae", d_in=3, n_latents=8, k=8, base=2, compose=2,
                  pre_encoder_bias=False)
    with torch.no_grad():
        model.W_p.copy_(torch.tensor([[1.0, 0, 2, 0], [0, 1, 0, 0], [0, 0, 0, 1]]))
        model.W_q.copy_(torch.tensor([[1.0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 3]]))
    x = torch.tensor([[1.0, 4.0, 1.0]])
    # p = (x0, x1 | 2 x0, x2) = (1, 4 | 2, 1); q = (x0, x0 | x1, 3 x2) = (1, 1 | 4, 3)
    expected = torch.tensor([[1.0, 1, 2, 2, (2 * 4) ** 0.5, 6 ** 0.5, 2, 3 ** 0.5]])
    torch.testing.assert_close(model.pre_acts(x), expected)
    codes = build("kronsae", d_in=3, n_latents=8, k=2, base=2, compose=2,
                  pre_encoder_bias=False)
    codes.load_state_dict(model.state_dict())
    assert sorted(codes.encode(x).nonzero()[:, 1].tolist()) == [4, 5]   # sqrt 8, sqrt 6


def test_encoder_is_h_m_plus_n_by_d() -> None:
    """The paper's saving: h (m + n) d encoder weights instead of F d."""
    kron = build("kronsae", d_in=640, n_latents=4096, k=32)          # m = 4, n = 64, h = 16
    topk = build("topk", d_in=640, n_latents=4096, k=32)
    assert kron.W_p.numel() + kron.W_q.numel() == 16 * (4 + 64) * 640
    assert (kron.W_p.numel() + kron.W_q.numel()) / topk.W_enc.numel() == pytest.approx(68 / 256)
    assert not hasattr(kron, "W_enc")


def test_widths_must_factorise() -> None:
    with pytest.raises(ValueError, match="multiple of base x compose"):
        build("kronsae", d_in=8, n_latents=100, k=4, base=4, compose=8)


def test_decoder_starts_along_both_factors() -> None:
    model = build("kronsae", d_in=6, n_latents=16, k=4, base=2, compose=4)   # h = 2
    row = 1 * 8 + 1 * 4 + 3        # head 1, base 1, composition 3
    expected = model.W_p[:, 1 * 2 + 1] + model.W_q[:, 1 * 4 + 3]
    torch.testing.assert_close(model.W_dec[row], (expected / expected.norm()).detach())


@pytest.mark.parametrize(("k", "compose"), [(3, 8), (16, 8), (40, 4)])
def test_sparse_encoder_equals_topk_over_every_latent(k: int, compose: int) -> None:
    """`encode` picks the k largest of h·m·min(k, n) candidates; the codes equal TopK over the
    F dense mAND latents (random data has no ties), also when k > n and k > h·m·r."""
    torch.manual_seed(0)
    model = build("kronsae", d_in=12, n_latents=4 * compose * 3, k=min(k, 4 * compose * 3),
                  base=4, compose=compose)
    x = torch.randn(64, 12)
    dense = model.activation(model.pre_acts(model.scale_input(x)))
    torch.testing.assert_close(model.encode(x), dense)
    values, indices = model.top_latents(model.scale_input(x))
    assert values.shape == (64, model.cfg.k) and int(indices.max()) < model.cfg.n_latents


def test_mand_is_one_multiply_of_the_factor_roots() -> None:
    p, q = torch.randn(5, 3, 4), torch.randn(5, 3, 6)
    explicit = torch.where((p.unsqueeze(-1) > 0) & (q.unsqueeze(-2) > 0),
                           (p.unsqueeze(-1) * q.unsqueeze(-2)).clamp_min(0).sqrt(),
                           torch.zeros(()))
    torch.testing.assert_close(mand(p, q), explicit)


def test_default_layout_keeps_sixteen_heads_where_the_width_allows() -> None:
    """n = the largest divisor of F/m up to 64 leaving >= 16 heads (the encoder saving of the
    paper's m = 4, n = 64 from 4096 latents on; more heads below)."""
    layouts = {f: build("kronsae", d_in=8, n_latents=f, k=4).cfg for f in (64, 256, 1024, 4096,
                                                                          16384)}
    assert [(c.compose, c.heads) for c in layouts.values()] == [(4, 4), (4, 16), (16, 16),
                                                                (64, 16), (64, 64)]


def test_enough_positive_latents_for_k_with_the_default_heads() -> None:
    """Why one head collapsed L0: a token's non-zero mAND latents number
    Σ_g (#p_g > 0)(#q_g > 0). At 256 latents with one head (n = 64) 15% of random tokens have
    fewer than k = 32 at initialisation; with the default 16 heads almost none."""
    torch.manual_seed(0)
    x = torch.randn(2048, 64)
    short = {}
    for compose in (None, 64):
        model = build("kronsae", d_in=64, n_latents=256, k=32, compose=compose)
        model.initialize_from_data(x)
        with torch.no_grad():
            short[compose] = float(((model.pre_acts(x) > 0).sum(-1) < 32).float().mean())
    assert short[None] < 0.01
    assert short[64] > 0.1
