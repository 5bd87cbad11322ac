"""TopK, BatchTopK, Multi-TopK, AbsTopK and Matryoshka: selections by hand, the BatchTopK
inference threshold, the extra reconstruction terms, and k per token on average."""

from __future__ import annotations

import pytest
import torch

from dictionary_helpers import make, mean_l0, sparse_data, train
from sparselens.dictionaries import StepContext, build
from sparselens.dictionaries.batchtopk import batch_topk
from sparselens.dictionaries.losses import auxk_loss, prefix_partials

PRE = torch.tensor([[3.0, -5.0, 1.0, 0.5],
                    [0.2, 0.1, 4.0, -0.3],
                    [2.0, 2.5, -1.0, 0.0]])


def test_topk_keeps_k_largest_after_relu() -> None:
    model = build("topk", d_in=4, n_latents=4, k=2)
    expected = torch.tensor([[3.0, 0.0, 1.0, 0.0], [0.2, 0.0, 4.0, 0.0], [2.0, 2.5, 0.0, 0.0]])
    torch.testing.assert_close(model.activation(PRE), expected)


def test_abstopk_keeps_largest_magnitudes_with_sign() -> None:
    model = build("abstopk", d_in=4, n_latents=4, k=2)
    expected = torch.tensor([[3.0, -5.0, 0.0, 0.0], [0.0, 0.0, 4.0, -0.3],
                             [2.0, 2.5, 0.0, 0.0]])
    torch.testing.assert_close(model.activation(PRE), expected)


def test_auxk_by_magnitude_uses_signed_dead_latents() -> None:
    W = torch.eye(4)
    dead = torch.tensor([False, True, False, True])
    residual = torch.tensor([[0.0, -5.0, 0.0, 0.0]])
    signed = auxk_loss(PRE[:1], residual, W, dead, 1, by_magnitude=True)
    relu = auxk_loss(PRE[:1], residual, W, dead, 1)
    assert float(signed) == 0.0  # -5 on latent 1 reconstructs the residual exactly
    assert float(relu) > 0.0


def test_batch_topk_keeps_k_times_batch_over_the_flattened_batch() -> None:
    codes = batch_topk(PRE, 2)  # 6 largest positives of the whole batch
    expected = torch.tensor([[3.0, 0.0, 1.0, 0.0], [0.0, 0.0, 4.0, 0.0], [2.0, 2.5, 0.0, 0.0]])
    expected[0, 3] = 0.5
    torch.testing.assert_close(codes, expected)
    assert (codes != 0).sum(1).tolist() == [3, 1, 2]


def test_token_cap_limits_what_each_token_offers() -> None:
    # cap 1: offers 3, 4, 2.5 -- fewer than the 6 slots, so all are kept and nothing else.
    expected = torch.tensor([[3.0, 0, 0, 0], [0, 0, 4.0, 0], [0, 2.5, 0, 0]])
    torch.testing.assert_close(batch_topk(PRE, 2, cap=1), expected)
    # cap 2: offers (3, 1), (4, 0.2), (2.5, 2): six offers, all kept; 0.5 is no longer offered.
    expected = torch.tensor([[3.0, 0, 1.0, 0], [0.2, 0, 4.0, 0], [2.0, 2.5, 0, 0]])
    torch.testing.assert_close(batch_topk(PRE, 2, cap=2), expected)


def test_token_cap_kernel_matches_the_dense_selection() -> None:
    from sparselens.dictionaries import kernels

    torch.manual_seed(0)
    model = build("batchtopk", d_in=16, n_latents=64, k=4, token_cap=2.0)
    x = torch.randn(32, 16)
    x[3] *= 30.0  # one massive token
    values, tokens, latents = kernels.select_batch_topk(x, model.W_enc, model.b_enc,
                                                        model.b_dec, 4, token_cap=8)
    dense = batch_topk(model.pre_acts(x).detach(), 4, cap=8)
    assert (dense != 0).sum(1).max() == 8
    got = torch.zeros_like(dense)
    got[tokens, latents] = values.relu()
    torch.testing.assert_close(got, dense)


def test_token_cap_holds_at_inference_for_a_massive_token() -> None:
    model = make("batchtopk", token_cap=2.0)
    x = sparse_data(1024)
    train(model, x, steps=30)
    massive = x[:1] * 50
    assert int((model.encode(massive) != 0).sum()) <= 8
    uncapped = build("batchtopk", d_in=16, n_latents=64, k=4, token_cap=None)
    uncapped.load_state_dict(model.state_dict())
    assert int((uncapped.encode(massive) != 0).sum()) > 8


def test_batchtopk_threshold_is_a_running_average_of_the_minimum_kept() -> None:
    model = build("batchtopk", d_in=4, n_latents=4, k=2, threshold_decay=0.5,
                  pre_encoder_bias=False)
    with torch.no_grad():
        model.W_enc.copy_(torch.eye(4))
        model.b_enc.zero_()
    assert torch.isnan(model.threshold)
    torch.testing.assert_close(model.encode(PRE), build("topk", d_in=4, n_latents=4,
                                                        k=2).activation(PRE))
    model.training_codes(PRE)
    torch.testing.assert_close(model.threshold, torch.tensor(0.5))
    model.training_codes(PRE * 2)  # minimum kept is now 1.0
    torch.testing.assert_close(model.threshold, torch.tensor(0.75))
    # Inference: a JumpReLU at θ = 0.75, per token.
    expected = PRE * (PRE > 0.75)
    torch.testing.assert_close(model.encode(PRE), expected)
    assert model.state_dict()["threshold"].shape == ()


@pytest.mark.parametrize("name", ["batchtopk", "matryoshka", "mutual_choice", "feature_choice"])
def test_batch_selections_give_k_per_token_on_average_at_inference(name: str) -> None:
    # A short run: a fast running average so the threshold tracks the moving activations.
    model = make(name, threshold_decay=0.9)
    x = sparse_data(4096)
    train(model, x[:2048], steps=100)
    assert mean_l0(model, x[2048:]) == pytest.approx(4.0, rel=0.3)
    per_token = (model.encode(x[2048:]) != 0).sum(-1)
    assert per_token.float().std() > 0  # adaptive: not exactly k for every token


def test_multi_topk_adds_an_eighth_of_the_4k_loss() -> None:
    model = make("multi_topk")
    x = sparse_data(64)
    out = model.training_loss(x)
    pre = model.pre_acts(x)
    values, idx = pre.topk(16, dim=-1)
    wide = torch.zeros_like(pre).scatter(-1, idx, torch.relu(values))
    recon = wide @ model.W_dec + model.b_dec
    torch.testing.assert_close(out.terms["mse_multi_k"], ((recon - x) ** 2).sum(1).mean() / 8)
    assert (model.encode(x) != 0).sum(-1).eq(4).all()


def test_prefix_partials_are_running_sums_of_group_decodes() -> None:
    codes = torch.arange(1.0, 7.0).reshape(1, 6)
    W = torch.arange(12.0).reshape(6, 2)
    parts = prefix_partials(codes, W, [1, 2, 3])
    for j, m in enumerate([1, 3, 6]):
        torch.testing.assert_close(parts[j], codes[:, :m] @ W[:m])


def test_matryoshka_loss_sums_one_error_per_prefix() -> None:
    model = make("matryoshka", aux_coef=0.0)
    x = sparse_data(64)
    out = model.training_loss(x, ctx=StepContext())
    codes = out.codes.detach()
    W, b = model.W_dec.detach(), model.b_dec.detach()
    total = torch.tensor(0.0)
    for m in (8, 32, 64):
        err = ((codes[:, :m] @ W[:m] + b - x) ** 2).sum(1).mean()
        total = total + err
        key = "mse" if m == 64 else f"mse_prefix_{m}"
        torch.testing.assert_close(out.terms[key].detach(), err)
    torch.testing.assert_close(out.loss.detach(), total)
    assert (codes != 0).sum() == 4 * 64  # BatchTopK across the whole dictionary


def test_matryoshka_group_sizes() -> None:
    assert build("matryoshka", d_in=4, n_latents=64, k=2).cfg.group_sizes == [4, 4, 8, 16, 32]
    with pytest.raises(ValueError, match="sum to"):
        build("matryoshka", d_in=4, n_latents=64, k=2, group_sizes=[8, 8])
    with pytest.raises(ValueError, match="positive"):
        build("matryoshka", d_in=4, n_latents=64, k=2, group_sizes=[0, 64])
    with pytest.raises(ValueError, match="divisible"):
        build("matryoshka", d_in=4, n_latents=40, k=2)


def test_matryoshka_early_groups_reconstruct_better_than_unordered() -> None:
    x = sparse_data(4096)
    nested, flat = make("matryoshka"), make("batchtopk")
    train(nested, x, steps=100)
    train(flat, x, steps=100)

    @torch.no_grad()
    def prefix_error(model) -> float:
        codes = model.encode(x)
        recon = codes[:, :8] @ model.W_dec[:8] + model.b_dec
        return float(((recon - x) ** 2).sum(1).mean())

    assert prefix_error(nested) < prefix_error(flat)


@pytest.mark.parametrize("bad", [{"k": 0}, {"k": 65}, {"k_aux": 0}, {"aux_coef": -1.0}])
def test_bad_k_config_is_refused(bad: dict) -> None:
    with pytest.raises(ValueError):
        build("topk", d_in=4, n_latents=64, **bad)


def test_bad_family_config_is_refused() -> None:
    with pytest.raises(ValueError, match="threshold_decay"):
        build("batchtopk", d_in=4, n_latents=8, k=2, threshold_decay=1.0)
    with pytest.raises(ValueError, match="multi_k_factor"):
        build("multi_topk", d_in=4, n_latents=8, k=2, multi_k_factor=0)
