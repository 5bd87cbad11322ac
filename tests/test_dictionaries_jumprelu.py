"""JumpReLU (Rajamanoharan et al., "Jumping Ahead"): forward math, the straight-through
pseudo-derivatives against the paper's formulas, and L0 falling under the L0 penalty."""

from __future__ import annotations

import json

import pytest
import torch

from dictionary_helpers import fvu, l0_without_and_with_penalty, make, mean_l0, sparse_data, train
from sparselens.dictionaries import StepContext, build
from sparselens.dictionaries.ste import heaviside, jumprelu, rectangle
from sparselens.io.native import load_dictionary, save_dictionary

EPS = 0.1
Z = torch.tensor([[0.50, 1.00, 0.18],
                  [0.52, 0.30, 0.26],
                  [0.44, 0.345, 0.00]])
THETA = torch.tensor([0.50, 0.31, 0.25])
UPSTREAM = torch.tensor([[1.0, 2.0, 3.0],
                         [4.0, 5.0, 6.0],
                         [7.0, 8.0, 9.0]])


def test_rectangle_kernel_is_open_unit_interval() -> None:
    u = torch.tensor([-0.6, -0.5, -0.49, 0.0, 0.49, 0.5, 0.6])
    assert rectangle(u).tolist() == [0, 0, 1, 1, 1, 0, 0]


def test_jumprelu_forward_and_pseudo_derivatives() -> None:
    z = Z.clone().requires_grad_(True)
    theta = THETA.clone().requires_grad_(True)
    out = jumprelu(z, theta, EPS)
    assert torch.equal(out.detach(), Z * (Z > THETA))
    (out * UPSTREAM).sum().backward()
    # By hand: K = 1 where |z - θ| < ε/2 = 0.05, i.e. at (0,0), (1,0), (1,1), (1,2), (2,1);
    # the upstream gradients there sum to 1+4 = 5, 5+8 = 13 and 6 per latent.
    torch.testing.assert_close(theta.grad, torch.tensor([-(0.5 / 0.1) * 5, -(0.31 / 0.1) * 13,
                                                         -(0.25 / 0.1) * 6]))
    torch.testing.assert_close(z.grad, UPSTREAM * (Z > THETA))


def test_heaviside_pseudo_derivative_and_no_gradient_to_z() -> None:
    z = Z.clone().requires_grad_(True)
    theta = THETA.clone().requires_grad_(True)
    step = heaviside(z, theta, EPS)
    assert torch.equal(step.detach(), (Z > THETA).float())
    (step * UPSTREAM).sum().backward()
    torch.testing.assert_close(theta.grad, torch.tensor([-(1 / 0.1) * 5, -(1 / 0.1) * 13,
                                                         -(1 / 0.1) * 6]))
    assert z.grad is None or bool((z.grad == 0).all())


def test_model_threshold_gradient_matches_paper_formula() -> None:
    """dL/dθ_i = Σ_b [∂mse/∂f_bi · (-θ_i/ε) K_bi] + λ/B Σ_b (-1/ε) K_bi, end to end."""
    torch.manual_seed(0)
    model = build("jumprelu", d_in=4, n_latents=3, sparsity_coef=0.7, bandwidth=EPS)
    with torch.no_grad():
        model.W_enc.copy_(torch.eye(4)[:, :3])
        model.b_enc.zero_()
        model.b_dec.zero_()
        model.threshold.copy_(THETA)
    x = torch.cat([Z, torch.rand(3, 1)], dim=1)
    out = model.training_loss(x, ctx=StepContext(step=5, total_steps=5))
    out.loss.backward()
    pre = x[:, :3]
    codes = pre * (pre > THETA)
    recon = codes @ model.W_dec.detach() + model.b_dec.detach()
    dmse_df = 2 / 3 * (recon - x) @ model.W_dec.detach().T
    window = (((pre - THETA) / EPS).abs() < 0.5).float()
    expected = (dmse_df * -(THETA / EPS) * window).sum(0) + 0.7 / 3 * (-(1 / EPS) * window).sum(0)
    torch.testing.assert_close(model.threshold.grad, expected)
    torch.testing.assert_close(out.terms["l0"], 0.7 * (pre > THETA).float().sum(1).mean())


def test_pre_encoder_bias_by_default_and_threshold_clamped() -> None:
    """Centred input by default (ours, not the paper's: see the next test)."""
    model = build("jumprelu", d_in=4, n_latents=3)
    assert model.cfg.pre_encoder_bias is True
    with torch.no_grad():
        model.threshold.fill_(-1.0)
    model.after_optimizer_step(StepContext())
    assert bool((model.threshold == 0).all())


def test_sparsity_warmup_scales_the_penalty() -> None:
    model = build("jumprelu", d_in=4, n_latents=3, sparsity_coef=1.0, sparsity_warmup=0.5)
    x = torch.randn(8, 4)
    early = model.training_loss(x, ctx=StepContext(step=1, total_steps=4)).terms["l0"]
    late = model.training_loss(x, ctx=StepContext(step=3, total_steps=4)).terms["l0"]
    torch.testing.assert_close(early * 2, late)


def test_l0_falls_under_the_l0_penalty() -> None:
    start = mean_l0(make("jumprelu"), sparse_data(2048))
    free, penalised = l0_without_and_with_penalty("jumprelu", 0.1)
    assert penalised < 0.5 * start
    assert penalised < 0.7 * free


def test_hyperparameters_are_in_the_papers_units() -> None:
    """ε, θ₀ and λ are given for unit mean squared norm inputs and scaled by the sample's RMS
    norm u: ε·u, θ₀·u, λ·u² (pre-activations scale with u, the squared error with u²)."""
    model = make("jumprelu", sparsity_coef=0.01, bandwidth=0.002, initial_threshold=0.003)
    x = sparse_data(512)
    unit = float(x.pow(2).sum(-1).mean().sqrt())
    model.initialize_from_data(x)
    assert model.cfg.code_unit == pytest.approx(unit, rel=1e-5)
    assert model.bandwidth == pytest.approx(0.002 * unit, rel=1e-5)
    torch.testing.assert_close(model.code_threshold().detach(), torch.full((64,), 0.003 * unit))
    assert model.sparsity_coef(StepContext(step=1, total_steps=1)) == pytest.approx(
        0.01 * unit ** 2, rel=1e-5)
    literal = make("jumprelu", code_unit=1.0)
    literal.initialize_from_data(x)
    assert literal.bandwidth == 1e-3


def test_target_l0_penalty_and_start_at_the_target() -> None:
    model = make("jumprelu", k=6, target_coef=2.0)
    x = sparse_data(2048)
    model.initialize_from_data(x[:512])
    assert abs(mean_l0(model, x[:512]) - 6.0) < 0.5
    pre = model.pre_acts(x[:64])
    l0 = (pre > model.code_threshold()).float().sum(-1).mean()
    terms = model.loss_terms(x[:64], x[:64], pre, model.activation(pre), x[:64], StepContext())
    unit = model.cfg.code_unit
    torch.testing.assert_close(terms["l0_target"], 2.0 * unit ** 2 * (l0 / 6.0 - 1) ** 2)


def test_saving_folds_the_unit_into_threshold_and_hyperparameters(tmp_path) -> None:
    model = make("jumprelu", sparsity_coef=0.01, k=6)
    x = sparse_data(1024)
    train(model, x, steps=20)
    unit = model.cfg.code_unit
    assert unit > 1.5
    save_dictionary(model, tmp_path / "jr")
    loaded = load_dictionary(tmp_path / "jr")
    assert loaded.cfg.code_unit == 1.0
    assert loaded.cfg.bandwidth == pytest.approx(1e-3 * unit)
    assert loaded.cfg.sparsity_coef == pytest.approx(0.01 * unit ** 2)
    torch.testing.assert_close(loaded.threshold, model.threshold.detach() * unit)
    torch.testing.assert_close(loaded.l0_integral, model.l0_integral * unit ** 2)
    torch.testing.assert_close(loaded.encode(x), model.encode(x))


def test_a_file_saved_before_the_integral_term_still_loads(tmp_path) -> None:
    """Target-L0 JumpReLU files written before `l0_integral` existed load with λ_I = 0; any
    other missing tensor is still refused."""
    from safetensors.torch import load_file, save_file

    from sparselens.core.atomic import atomic_write_json, sha256_file

    model = make("jumprelu", k=6)
    model.initialize_from_data(sparse_data(512))
    save_dictionary(model, tmp_path / "old")
    weights, config = tmp_path / "old" / "weights.safetensors", tmp_path / "old" / "config.json"
    state = load_file(weights)

    def rewrite(drop: str) -> None:
        save_file({k: v for k, v in state.items() if k != drop}, weights)
        meta = json.loads(config.read_text())
        meta["weights_sha256"] = sha256_file(weights)
        atomic_write_json(config, meta)

    rewrite("l0_integral")
    loaded = load_dictionary(tmp_path / "old")
    assert float(loaded.l0_integral) == 0.0
    torch.testing.assert_close(loaded.threshold, state["threshold"])
    rewrite("threshold")
    with pytest.raises(ValueError, match="missing tensors"):
        load_dictionary(tmp_path / "old")


def test_a_large_input_mean_does_not_kill_the_latents() -> None:
    """The cause of JumpReLU's FVU at 2.6x TopK's on gemma-3-270m: without the pre-encoder
    bias, the input's mean (far larger than its spread in a residual stream) turns every change
    of W_enc into a shift of whole pre-activation distributions past their thresholds, and
    latents die. With it (the default), JumpReLU matches TopK at the same L0 on data with a
    mean of norm 20; uncentred it is several times worse."""
    gen = torch.Generator().manual_seed(1)
    mean = torch.randn(16, generator=gen)
    x = sparse_data(4096) + 20.0 * mean / mean.norm()
    runs = {}
    for name, extra in (("topk", {}), ("jumprelu", {}),
                        ("jumprelu", {"pre_encoder_bias": False})):
        model = make(name, k=6, **extra)
        train(model, x, steps=400, lr=3e-3, batch_size=256)
        runs[name + str(extra)] = (fvu(model, x), mean_l0(model, x))
    topk, centred, uncentred = runs.values()
    assert abs(centred[1] - 6) < 0.6
    assert centred[0] < 1.2 * topk[0]
    assert uncentred[0] > 3 * centred[0]


def test_integral_term_removes_the_l0_error_of_the_quadratic_penalty() -> None:
    """The quadratic penalty alone balances the reconstruction's pull only with L0 above k;
    the integral term λ_I (``l0_integral``) grows while L0 is above k and takes that load."""
    x = sparse_data(4096)
    ends = {}
    for gain in (0.0, 0.05):
        model = make("jumprelu", k=8, target_integral=gain)
        train(model, x, steps=600, lr=3e-3, batch_size=256)
        ends[gain] = (mean_l0(model, x), float(model.l0_integral))
    assert ends[0.0][0] > 8.4 and ends[0.0][1] == 0.0
    assert abs(ends[0.05][0] - 8) < 0.4 and ends[0.05][1] > 0.0


def test_integral_term_in_the_loss_and_its_update_by_hand() -> None:
    model = make("jumprelu", k=6, target_coef=2.0, target_integral=0.5)
    x = sparse_data(512)
    model.initialize_from_data(x)
    with torch.no_grad():
        model.l0_integral.fill_(0.25)
    pre = model.pre_acts(x[:64])
    l0 = (pre > model.code_threshold()).float().sum(-1).mean()
    terms = model.loss_terms(x[:64], x[:64], pre, model.activation(pre), x[:64], StepContext())
    unit = model.cfg.code_unit
    expected = 2.0 * unit ** 2 * (l0 / 6 - 1) ** 2 + 0.25 * unit ** 2 * l0
    torch.testing.assert_close(terms["l0_target"], expected)
    model.after_optimizer_step(StepContext())
    torch.testing.assert_close(model.l0_integral,
                               (0.25 + 0.5 * 2 * 2.0 / 6 * (l0 / 6 - 1)).clamp_min(0))


@pytest.mark.parametrize("target", [4, 8])
def test_target_l0_is_reached_within_ten_percent(target: int) -> None:
    model = make("jumprelu", k=target)
    x = sparse_data(4096)
    train(model, x, steps=600, lr=3e-3, batch_size=256)
    assert abs(mean_l0(model, x) - target) < 0.1 * target


@pytest.mark.parametrize("bad", [{"bandwidth": 0.0}, {"k": 0}, {"k": 2.5},
                                 {"sparsity_coef": -1.0}, {"sparsity_warmup": 2.0}])
def test_bad_config_is_refused(bad: dict) -> None:
    with pytest.raises(ValueError):
        build("jumprelu", d_in=4, n_latents=8, **bad)
