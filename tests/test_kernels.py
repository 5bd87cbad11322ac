"""The sparse TopK training kernels against autograd through a plain dense reference.

Tolerances (relative Frobenius error ``|a - b| / |b|``):
- float32 path: loss, reconstruction and the gradients of W_enc, b_enc, W_dec, b_dec within
  1e-5 of the dense reference; the selected latents are identical.
- bfloat16 encoder GEMM and weight-gradient sums (under ``torch.autocast``): the selection is
  a valid top-k of the exact pre-activations up to bf16 rounding; with the same selection,
  values and gradients are within 2e-2 of the float32 dense reference (bf16 keeps 8 significant
  bits: 2^-8 = 0.4% per value).
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import Tensor

from sparselens.dictionaries import (
    AbsTopKSAE,
    BatchTopKSAE,
    StepContext,
    TopKSAE,
    build,
    kernels,
    native_topk,
)
from sparselens.dictionaries.batchtopk import batch_topk
from sparselens.dictionaries.matryoshka import MatryoshkaSAE

FP32_TOL = 1e-5
BF16_TOL = 2e-2
PARAMS = ("W_enc", "b_enc", "W_dec", "b_dec")


@pytest.fixture(autouse=True, params=["native", "torch"])
def topk_path(request, monkeypatch) -> str:
    """Every test runs with the compiled top-k (where it builds) and with the torch one."""
    if request.param == "torch":
        monkeypatch.setenv(native_topk.ENV_SWITCH, "0")
    return request.param


def rel_err(a: Tensor, b: Tensor) -> float:
    return float((a.float() - b.float()).norm() / b.float().norm().clamp_min(1e-30))


def make_sae(seed: int = 0, d: int = 24, n: int = 256, k: int = 8, architecture=TopKSAE,
             **cfg):
    torch.manual_seed(seed)
    sae = architecture(architecture.config_class(d_in=d, n_latents=n, k=k, **cfg))
    with torch.no_grad():  # move away from the symmetric init so every gradient is non-trivial
        sae.b_enc.normal_(0, 0.1)
        sae.b_dec.normal_(0, 0.3)
        sae.W_enc.add_(0.1 * torch.randn_like(sae.W_enc))
    return sae


def loss_and_grads(sae, x: Tensor, use_kernel: bool, ctx: StepContext | None = None,
                   autocast: bool = False):
    sae.zero_grad(set_to_none=True)
    sae.use_kernel = use_kernel
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        out = sae.training_loss(x, None, ctx or StepContext())
    out.loss.backward()
    return out, {name: getattr(sae, name).grad.clone() for name in PARAMS}


def dense_loss_at(sae, x: Tensor, indices: Tensor) -> Tensor:
    """MSE of the TopK SAE with the active latents forced to `indices`, all dense."""
    pre = (x - sae.b_dec) @ sae.W_enc + sae.b_enc
    codes = torch.zeros_like(pre).scatter(1, indices, pre.gather(1, indices).relu())
    return (codes @ sae.W_dec + sae.b_dec - x).pow(2).sum(-1).mean()


def test_grouped_topk_is_exact() -> None:
    gen = torch.Generator().manual_seed(1)
    # 1024 x k=16 groups in 8s, then its 128 group maxima in 2s; 9216 x k=32 (the benchmark's
    # width) recurses on its 576 group maxima and on its 512 candidates.
    for dtype, width, k in ((torch.float32, 1024, 16), (torch.bfloat16, 1024, 16),
                            (torch.bfloat16, 9216, 32)):
        assert kernels.group_size_for(width, k) > 1
        pre = torch.randn(64, width, generator=gen).to(dtype)
        values, indices = kernels.grouped_topk(pre, k)
        expected = pre.topk(k, dim=-1).values
        assert torch.equal(values.sort(-1).values, expected.sort(-1).values)
        assert torch.equal(pre.gather(1, indices), values)
        assert (indices.sort(-1).values.diff(dim=-1) > 0).all()  # distinct latents


def test_grouped_topk_concentrated_rows_and_fallback() -> None:
    # All the largest entries in one group: the candidates must still contain them.
    pre = torch.randn(4, 512) - 10
    pre[:, torch.arange(0, 512, 32)] = torch.arange(16.0) + 1  # one strided group
    values, _ = kernels.grouped_topk(pre, 8)
    assert torch.equal(values.sort(-1).values, pre.topk(8).values.sort(-1).values)
    small = torch.randn(3, 20)  # not divisible by the group size: falls back to torch.topk
    assert torch.equal(kernels.grouped_topk(small, 4)[0].sort(-1).values,
                       small.topk(4).values.sort(-1).values)


def test_select_topk_tiles_match_dense() -> None:
    sae = make_sae()
    x = torch.randn(300, 24)
    values, indices = kernels.select_topk(x, sae.W_enc, sae.b_enc, sae.b_dec, 8, tile_rows=64)
    pre = sae.pre_acts(x)
    expected = pre.topk(8).values
    assert torch.allclose(values.sort(-1).values, expected.sort(-1).values, atol=1e-5)
    assert torch.allclose(pre.gather(1, indices), values, atol=1e-5)


def test_fp32_kernel_matches_dense_reference() -> None:
    sae = make_sae()
    x = torch.randn(200, 24) * 2 + 0.5
    fast, fast_grads = loss_and_grads(sae, x, use_kernel=True)
    ref, ref_grads = loss_and_grads(sae, x, use_kernel=False)
    assert isinstance(fast, kernels.SparseLossOutput)
    assert rel_err(fast.loss.detach(), ref.loss.detach()) < FP32_TOL
    assert rel_err(fast.recon.detach(), ref.recon.detach()) < FP32_TOL
    assert torch.equal(fast.codes.detach() != 0, ref.codes.detach() != 0)
    assert rel_err(fast.codes.detach(), ref.codes.detach()) < FP32_TOL
    for name in PARAMS:
        assert rel_err(fast_grads[name], ref_grads[name]) < FP32_TOL, name


def test_auxk_on_dead_latents_matches_dense_reference() -> None:
    sae = make_sae(seed=3)
    x = torch.randn(128, 24)
    dead = torch.zeros(256, dtype=torch.bool)
    dead[::3] = True
    ctx = StepContext(dead_mask=dead)
    fast, fast_grads = loss_and_grads(sae, x, use_kernel=True, ctx=ctx)
    ref, ref_grads = loss_and_grads(sae, x, use_kernel=False, ctx=ctx)
    assert float(ref.terms["auxk"].detach()) > 0
    assert rel_err(fast.terms["auxk"].detach(), ref.terms["auxk"].detach()) < FP32_TOL
    for name in PARAMS:
        assert rel_err(fast_grads[name], ref_grads[name]) < FP32_TOL, name


def test_auxk_loss_matches_the_plain_dense_formula() -> None:
    """AuxK's sparse decode: loss and gradients equal scattering the top-k_aux dead codes into
    a dense matrix and multiplying by the decoder with autograd."""
    from sparselens.dictionaries.losses import auxk_loss, squared_error

    gen = torch.Generator().manual_seed(5)
    pre = torch.randn(64, 40, generator=gen, requires_grad=True)
    W_dec = torch.randn(40, 12, generator=gen, requires_grad=True)
    residual = torch.randn(64, 12, generator=gen)
    dead = torch.rand(40, generator=gen) < 0.5
    fast = auxk_loss(pre, residual, W_dec, dead, k_aux=6)
    fast_grads = torch.autograd.grad(fast, (pre, W_dec))
    masked = torch.where(dead, pre, torch.full_like(pre, -torch.inf))
    indices = masked.topk(6, dim=-1).indices
    codes = torch.zeros_like(pre).scatter(-1, indices, torch.relu(pre.gather(-1, indices)))
    scale = (residual - residual.mean(0)).pow(2).sum(-1).mean()
    ref = squared_error(codes @ W_dec, residual) / scale
    ref_grads = torch.autograd.grad(ref, (pre, W_dec))
    torch.testing.assert_close(fast, ref)
    for got, want in zip(fast_grads, ref_grads):
        torch.testing.assert_close(got, want)


def test_transcoder_with_skip_and_input_gradient() -> None:
    torch.manual_seed(0)
    sae = build("topk", d_in=16, d_out=12, n_latents=128, k=4, pre_encoder_bias=False,
                skip_connection=True)
    with torch.no_grad():
        sae.W_skip.normal_(0, 0.1)
        sae.b_dec.normal_(0, 0.3)
    x, y = torch.randn(64, 16), torch.randn(64, 12)
    grads = {}
    for use_kernel in (True, False):
        sae.use_kernel = use_kernel
        sae.zero_grad(set_to_none=True)
        xg = x.clone().requires_grad_()
        sae.training_loss(xg, y).loss.backward()
        grads[use_kernel] = {"x": xg.grad, **{name: getattr(sae, name).grad
                                              for name in (*PARAMS, "W_skip")}}
    for name, grad in grads[False].items():
        assert rel_err(grads[True][name], grad) < FP32_TOL, name


def test_bf16_selection_is_a_valid_topk() -> None:
    sae = make_sae(seed=5, d=64, n=512, k=16)
    x = torch.randn(256, 64)
    values, indices = kernels.select_topk(x, sae.W_enc, sae.b_enc, sae.b_dec, 16,
                                          matmul_dtype=torch.bfloat16)
    pre = sae.pre_acts(x).detach()
    rounding = 2 ** -7 * pre.abs().amax(-1, keepdim=True)  # bf16 error bound, generous
    chosen = pre.gather(1, indices)
    kth_best = pre.topk(16).values[:, -1:]
    assert (chosen.amin(-1, keepdim=True) >= kth_best - 2 * rounding).all()
    assert ((values - chosen).abs() <= rounding).all()


def test_bf16_kernel_gradients_match_fp32_reference() -> None:
    sae = make_sae(seed=7, d=64, n=512, k=16)
    x = torch.randn(256, 64)
    fast, fast_grads = loss_and_grads(sae, x, use_kernel=True, autocast=True)
    indices = fast.sparse.indices.view(256, 16)
    sae.zero_grad(set_to_none=True)
    reference = dense_loss_at(sae, x, indices)
    reference.backward()
    assert rel_err(fast.loss.detach(), reference.detach()) < BF16_TOL
    for name in PARAMS:
        assert rel_err(fast_grads[name], getattr(sae, name).grad) < BF16_TOL, name


def test_training_steps_reduce_the_loss() -> None:
    sae = make_sae(seed=2)
    x = torch.randn(256, 24) @ torch.randn(24, 24) * 0.5
    opt = torch.optim.Adam(sae.parameters(), lr=3e-3)
    losses = []
    for step in range(30):
        out = sae.training_loss(x, None, StepContext(step=step, total_steps=30))
        opt.zero_grad()
        out.loss.backward()
        sae.before_optimizer_step(StepContext())
        opt.step()
        sae.after_optimizer_step(StepContext())
        losses.append(float(out.loss.detach()))
    assert losses[-1] < 0.7 * losses[0]


@pytest.mark.parametrize("variant", [AbsTopKSAE, BatchTopKSAE, MatryoshkaSAE])
def test_variant_selections_match_their_dense_reference(variant) -> None:
    sae = make_sae(seed=4, architecture=variant)
    x = torch.randn(160, 24)
    dead = torch.zeros(256, dtype=torch.bool)
    dead[1::4] = True
    ctx = StepContext(dead_mask=dead)
    fast, fast_grads = loss_and_grads(sae, x, use_kernel=True, ctx=ctx)
    ref, ref_grads = loss_and_grads(sae, x, use_kernel=False, ctx=ctx)
    assert isinstance(fast, kernels.SparseLossOutput)
    assert fast.terms.keys() == ref.terms.keys()
    assert rel_err(fast.loss.detach(), ref.loss.detach()) < FP32_TOL
    assert torch.equal(fast.codes.detach() != 0, ref.codes.detach() != 0)
    assert rel_err(fast.codes.detach(), ref.codes.detach()) < FP32_TOL
    for name, value in ref.terms.items():
        assert rel_err(fast.terms[name].detach(), value.detach()) < FP32_TOL, name
    for name in PARAMS:
        assert rel_err(fast_grads[name], ref_grads[name]) < FP32_TOL, name


def test_matryoshka_transcoder_with_skip_matches_dense_reference() -> None:
    torch.manual_seed(1)
    sae = build("matryoshka", d_in=16, d_out=12, n_latents=128, k=4, pre_encoder_bias=False,
                skip_connection=True, group_sizes=[8, 24, 96])
    with torch.no_grad():
        sae.W_skip.normal_(0, 0.1)
        sae.b_dec.normal_(0, 0.3)
    x, y = torch.randn(64, 16), torch.randn(64, 12)
    results = {}
    for use_kernel in (True, False):
        sae.use_kernel = use_kernel
        sae.zero_grad(set_to_none=True)
        out = sae.training_loss(x, y)
        out.loss.backward()
        results[use_kernel] = out, {name: getattr(sae, name).grad
                                    for name in (*PARAMS, "W_skip")}
    (fast, fast_grads), (ref, ref_grads) = results[True], results[False]
    assert set(ref.terms) == {"mse", "mse_prefix_8", "mse_prefix_32", "auxk"}
    for name, value in ref.terms.items():
        assert rel_err(fast.terms[name].detach(), value.detach()) < FP32_TOL, name
    for name, grad in ref_grads.items():
        assert rel_err(fast_grads[name], grad) < FP32_TOL, name


def test_decoder_projection_and_normalisation_match_the_plain_formulas() -> None:
    sae = make_sae(seed=9)
    with torch.no_grad():
        sae.W_dec.mul_(torch.rand(256, 1) + 0.5)  # rows off unit norm
        sae.W_dec[3] = 0.0  # a zero row stays zero (the clamp), never NaN
    sae.W_dec.grad = torch.randn_like(sae.W_dec)
    w, g = sae.W_dec.detach().clone(), sae.W_dec.grad.clone()
    sae.remove_parallel_decoder_grad()
    assert rel_err(sae.W_dec.grad, g - (g * w).sum(-1, keepdim=True) * w) < 1e-6
    sae.normalize_decoder()
    expected = w / w.norm(dim=-1, keepdim=True).clamp_min(1e-8)
    assert torch.allclose(sae.W_dec.detach(), expected, rtol=1e-6, atol=0)
    assert torch.equal(sae.W_dec[3].detach(), torch.zeros(24))


def test_batch_threshold_estimate_matches_dense_path() -> None:
    sae = make_sae(seed=8, architecture=BatchTopKSAE)
    dense = copy.deepcopy(sae)
    dense.use_kernel = False
    x = torch.randn(64, 24)
    for model in (sae, dense):
        model.training_loss(x)
    assert torch.isfinite(sae.threshold)
    assert torch.allclose(sae.threshold, dense.threshold, rtol=1e-6)


def test_batch_selection_widens_when_one_token_holds_many() -> None:
    x = torch.randn(32, 24)
    x[0] *= 50  # one token whose pre-activations dwarf everyone else's
    sae = make_sae(seed=6)
    values, tokens, latents = kernels.select_batch_topk(x, sae.W_enc, sae.b_enc, sae.b_dec, 4)
    pre = sae.pre_acts(x).detach().relu()
    expected = pre.reshape(-1).topk(4 * 32).values
    assert torch.allclose(values.relu().sort().values, expected.sort().values, atol=1e-5)
    assert int((tokens == 0).sum()) > 4 * 4  # more than the first 4k offers of token 0
    assert (tokens.diff() >= 0).all()


def test_subclass_without_opt_in_uses_the_dense_path() -> None:
    class WithExtraTerm(TopKSAE):
        def loss_terms(self, x, target, pre, codes, recon, ctx):
            return {"extra": codes.abs().sum(-1).mean()}

    torch.manual_seed(0)
    sae = WithExtraTerm(TopKSAE.config_class(d_in=8, n_latents=64, k=4))
    out = sae.training_loss(torch.randn(16, 8))
    assert not isinstance(out, kernels.SparseLossOutput)
    assert "extra" in out.terms


def test_batch_selection_with_several_outlier_tokens_is_exact() -> None:
    x = torch.randn(64, 24)
    x[[3, 17, 40]] *= torch.tensor([[30.0], [60.0], [90.0]])  # saturated: offer whole rows
    sae = make_sae(seed=10)
    values, tokens, latents = kernels.select_batch_topk(x, sae.W_enc, sae.b_enc, sae.b_dec, 4)
    got = torch.zeros(64, 256).index_put_((tokens, latents), values.relu())
    expected = batch_topk(sae.pre_acts(x).detach(), 4)
    assert torch.equal(got != 0, expected != 0)
    assert torch.allclose(got, expected, atol=1e-5)
    assert int((tokens == 40).sum()) > 16 and (tokens.diff() >= 0).all()


@pytest.mark.parametrize("name", ["mutual_choice", "feature_choice"])
def test_batchtopk_subclasses_with_their_own_selection_stay_dense(name: str) -> None:
    torch.manual_seed(0)
    sae = build(name, d_in=8, n_latents=64, k=4)
    assert not isinstance(sae.training_loss(torch.randn(16, 8)), kernels.SparseLossOutput)


def test_kernel_needs_a_matrix() -> None:
    sae = make_sae()
    with pytest.raises(ValueError, match="batch, d_in"):
        kernels.sparse_training_forward(torch.randn(2, 3, 24), sae.W_enc, sae.b_enc, sae.W_dec,
                                      sae.b_dec, 8)
