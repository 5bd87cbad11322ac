"""Properties every dictionary variant must have: registered by name, saved and loaded with
all it needs at inference, per-token inference, scales folded without changing outputs."""

from __future__ import annotations

import pytest
import torch

from dictionary_helpers import VARIANTS, fvu, make, sparse_data, train
from sparselens.dictionaries import REGISTRY, StepContext, build
from sparselens.io.native import load_dictionary, save_dictionary

ALL = sorted(VARIANTS)


def test_every_variant_is_registered() -> None:
    expected = {"relu", "relu_dn", "topk", "batchtopk", "multi_topk", "abstopk", "matryoshka",
                "jumprelu", "gated", "p_anneal", "feature_choice", "mutual_choice", "top_afa",
                "mp", "archetypal", "variational", "polysae", "kronsae", "mdl"}
    assert expected == set(VARIANTS) and expected <= set(REGISTRY)


@pytest.mark.parametrize("name", ALL)
def test_unknown_config_field_is_refused(name: str) -> None:
    with pytest.raises(ValueError, match="unknown config field"):
        build(name, d_in=8, n_latents=16, not_a_field=1)


@pytest.mark.parametrize("name", ALL)
def test_one_step_gives_finite_loss_and_gradient_to_every_parameter(name: str) -> None:
    model = make(name)
    x = sparse_data(256)
    model.initialize_from_data(x)
    out = model.training_loss(x, ctx=StepContext(step=1, total_steps=10,
                                                 dead_mask=torch.rand(64) < 0.5))
    assert torch.isfinite(out.loss)
    out.loss.backward()
    for pname, param in model.named_parameters():
        assert param.grad is not None, f"{name}.{pname} gets no gradient"
        assert torch.isfinite(param.grad).all(), f"{name}.{pname} has a non-finite gradient"


@pytest.mark.parametrize("name", ALL)
def test_inference_codes_depend_on_the_token_alone(name: str) -> None:
    model = make(name)
    x = sparse_data(512)
    train(model, x, steps=5)
    model.train()
    together = model.encode(x[:64])
    alone = torch.cat([model.encode(x[i:i + 1]) for i in range(8)])
    torch.testing.assert_close(together[:8], alone)
    model.eval()
    torch.testing.assert_close(model.encode(x[:8]), alone)


@pytest.mark.parametrize("name", ALL)
def test_save_load_roundtrip_keeps_codes_and_outputs(name: str, tmp_path) -> None:
    model = make(name, input_scale=2.0, output_scale=2.0)
    x = sparse_data(1024)
    train(model, x * 2.0, steps=20)  # the trainer feeds scaled inputs
    with torch.no_grad():
        codes, out = model.encode(x), model(x)
    save_dictionary(model, tmp_path / "ckpt")
    loaded = load_dictionary(tmp_path / "ckpt")
    assert type(loaded) is type(model)
    with torch.no_grad():
        torch.testing.assert_close(loaded.encode(x), codes, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(loaded(x), out, rtol=1e-4, atol=1e-5)
    assert model.cfg.input_scale == 2.0  # saving folds a copy, not the live model


@pytest.mark.parametrize("name", sorted(set(ALL) - {"top_afa", "mp"}))
def test_transcoder_scales_fold_without_changing_outputs(name: str, tmp_path) -> None:
    """Different input and output spaces and scales (a transcoder) survive save/load."""
    model = make(name, d_out=12, pre_encoder_bias=False, input_scale=2.0, output_scale=0.5)
    x = sparse_data(1024)
    y = x[:, :12].flip(1) * 3.0
    train(model, x * 2.0, steps=10, target=y * 0.5)
    save_dictionary(model, tmp_path / "ckpt")
    loaded = load_dictionary(tmp_path / "ckpt")
    assert loaded.cfg.input_scale == loaded.cfg.output_scale == 1.0
    with torch.no_grad():
        torch.testing.assert_close(loaded.encode(x), model.encode(x), rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(loaded(x), model(x), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", ALL)
def test_short_training_reduces_unexplained_variance(name: str) -> None:
    model = make(name)
    x = sparse_data(2048)
    before = fvu(model, x)
    train(model, x, steps=60)
    assert fvu(model, x) < min(0.9, before)


def test_interop_parameter_names_and_shapes() -> None:
    n = 64
    assert make("jumprelu").state_dict()["threshold"].shape == (n,)
    assert isinstance(make("jumprelu").threshold, torch.nn.Parameter)
    gated = dict(make("gated").named_parameters())
    assert gated["r_mag"].shape == gated["b_mag"].shape == gated["b_enc"].shape == (n,)
    assert make("batchtopk").state_dict()["threshold"].shape == ()
    assert make("matryoshka").cfg.group_sizes == [8, 24, 32]
