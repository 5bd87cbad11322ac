"""SAELens interop against the real SAELens: its SAEs load with identical codes and outputs, and
sparselens dictionaries exported to its format load in SAELens with identical codes and outputs.

Each peer SAE gets random weights with non-trivial biases and thresholds, is saved with
SAELens's own ``save_model`` / ``save_inference_model``, and is compared on the same inputs.
"""

from __future__ import annotations

import json

import pytest
import torch

sae_lens = pytest.importorskip("sae_lens")

from sparselens.dictionaries import REGISTRY, build  # noqa: E402
from sparselens.io.detect import load_any  # noqa: E402
from sparselens.io.saelens import load_saelens  # noqa: E402
from sparselens.io.saelens_export import save_saelens  # noqa: E402

pytestmark = pytest.mark.peers

D_IN, D_SAE, D_OUT = 12, 48, 10
TOL = 1e-5


def needs(variant: str) -> None:
    if variant not in REGISTRY:
        pytest.skip(f"sparselens variant {variant!r} is not registered yet")


def randomize(module: torch.nn.Module, seed: int = 0) -> None:
    """Random weights, biases and positive thresholds, with decoder rows of varied norm."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            values = torch.randn(p.shape, generator=gen)
            if "threshold" in name:
                values = values.abs() * 0.5 + 0.05
            elif name.startswith("W_"):
                values = values / p.shape[0] ** 0.5
            small = name.startswith("b_") or name == "r_mag"
            p.copy_(values * (0.5 if small else 1.0))


def inputs(d: int = D_IN, seed: int = 1) -> torch.Tensor:
    return torch.randn(64, d, generator=torch.Generator().manual_seed(seed)) * 1.5


def assert_same(name: str, ours: torch.Tensor, theirs: torch.Tensor) -> float:
    diff = float((ours - theirs).abs().max())
    print(f"{name}: max|diff| = {diff:.2e}")
    assert diff <= TOL, f"{name}: max abs diff {diff}"
    return diff


def assert_nontrivial(codes: torch.Tensor) -> None:
    active = float((codes != 0).float().mean())
    assert 0.02 < active < 0.9, f"degenerate test: {active:.2f} of codes active"


def compare(tag: str, ours, sae, x: torch.Tensor) -> None:
    with torch.no_grad():
        theirs = sae.encode(x)
        assert_nontrivial(theirs)
        assert_same(f"{tag} encode", ours.encode(x), theirs)
        assert_same(f"{tag} decode", ours.decode(theirs), sae.decode(theirs))
        assert_same(f"{tag} forward", ours(x), sae(x))


INFERENCE = [  # (SAELens class, config class, extra config, sparselens variant)
    ("StandardSAE", "StandardSAEConfig", {}, "relu"),
    ("StandardSAE", "StandardSAEConfig", {"apply_b_dec_to_input": False}, "relu"),
    ("TopKSAE", "TopKSAEConfig", {"k": 6}, "topk"),
    ("JumpReLUSAE", "JumpReLUSAEConfig", {}, "jumprelu"),
    ("GatedSAE", "GatedSAEConfig", {}, "gated"),
]


@pytest.mark.parametrize("cls_name, cfg_name, extra, variant", INFERENCE,
                         ids=lambda v: v if isinstance(v, str) else None)
def test_inference_saes_match(tmp_path, cls_name, cfg_name, extra, variant):
    needs(variant)
    sae = getattr(sae_lens, cls_name)(getattr(sae_lens, cfg_name)(d_in=D_IN, d_sae=D_SAE,
                                                                   **extra))
    randomize(sae)
    sae.save_model(tmp_path)
    ours = load_any(tmp_path)
    assert ours.architecture == variant
    assert ours.cfg.pre_encoder_bias == extra.get("apply_b_dec_to_input", True)
    compare(f"saelens {cls_name} {extra}", ours, sae, inputs())


TRANSCODERS = [
    ("Transcoder", "TranscoderConfig", "relu"),
    ("SkipTranscoder", "SkipTranscoderConfig", "relu"),
    ("JumpReLUTranscoder", "JumpReLUTranscoderConfig", "jumprelu"),
    ("JumpReLUSkipTranscoder", "JumpReLUSkipTranscoderConfig", "jumprelu"),
]


@pytest.mark.parametrize("cls_name, cfg_name, variant", TRANSCODERS,
                         ids=[t[0] for t in TRANSCODERS])
def test_transcoders_match(tmp_path, cls_name, cfg_name, variant):
    needs(variant)
    cfg = getattr(sae_lens, cfg_name)(d_in=D_IN, d_sae=D_SAE, d_out=D_OUT,
                                      apply_b_dec_to_input=False)
    sae = getattr(sae_lens, cls_name)(cfg)
    randomize(sae)
    sae.save_model(tmp_path)
    ours = load_saelens(tmp_path)
    assert (ours.cfg.d_out, ours.cfg.pre_encoder_bias) == (D_OUT, False)
    assert ours.cfg.skip_connection == ("Skip" in cls_name)
    compare(f"saelens {cls_name}", ours, sae, inputs())


def test_topk_trained_with_decoder_norm_rescaling(tmp_path):
    """Both the training checkpoint (unfolded norms + flag) and SAELens's inference export load."""
    cfg = sae_lens.TopKTrainingSAEConfig(d_in=D_IN, d_sae=D_SAE, k=6,
                                         rescale_acts_by_decoder_norm=True)
    sae = sae_lens.TopKTrainingSAE(cfg)
    randomize(sae)
    sae.save_model(tmp_path / "training")
    sae.save_inference_model(tmp_path / "inference")
    x = inputs()
    for folder in ("training", "inference"):
        ours = load_saelens(tmp_path / folder)
        compare(f"saelens topk rescaled ({folder})", ours, sae, x)
        assert torch.allclose(ours.W_dec.norm(dim=-1), torch.ones(D_SAE), atol=1e-5)


@pytest.mark.parametrize("kind", ["batchtopk", "matryoshka_batchtopk"])
def test_batchtopk_family_checkpoints(tmp_path, kind):
    """Training checkpoints load as batchtopk/matryoshka; SAELens's inference export (a JumpReLU
    file) loads as jumprelu; both give the codes SAELens's inference SAE gives."""
    needs("jumprelu")
    if kind == "batchtopk":
        cfg = sae_lens.BatchTopKTrainingSAEConfig(d_in=D_IN, d_sae=D_SAE, k=6)
        sae = sae_lens.BatchTopKTrainingSAE(cfg)
    else:
        cfg = sae_lens.MatryoshkaBatchTopKTrainingSAEConfig(
            d_in=D_IN, d_sae=D_SAE, k=6, matryoshka_widths=[8, 20, D_SAE])
        sae = sae_lens.MatryoshkaBatchTopKTrainingSAE(cfg)
    randomize(sae)
    sae.topk_threshold = torch.tensor(0.6, dtype=torch.double)
    sae.save_inference_model(tmp_path / "inference")
    sae.save_model(tmp_path / "training")
    reference = sae_lens.SAE.load_from_disk(tmp_path / "inference")
    assert reference.cfg.architecture() == "jumprelu"
    x = inputs()
    compare(f"saelens {kind} inference file", load_saelens(tmp_path / "inference"), reference, x)
    variant = "batchtopk" if kind == "batchtopk" else "matryoshka"
    needs(variant)
    ours = load_saelens(tmp_path / "training")
    assert ours.architecture == variant
    if variant == "matryoshka":
        assert list(ours.cfg.group_sizes) == [8, 12, D_SAE - 20]
    compare(f"saelens {kind} training file", ours.eval(), reference, x)


def test_expected_average_scaling_maps_to_input_and_output_scale(tmp_path):
    from sae_lens.training.activation_scaler import ActivationScaler

    needs("relu")
    sae = sae_lens.StandardSAE(sae_lens.StandardSAEConfig(
        d_in=D_IN, d_sae=D_SAE, normalize_activations="expected_average_only_in"))
    randomize(sae)
    sae.save_model(tmp_path)
    with pytest.raises(ValueError, match="norm_scaling_factor"):
        load_saelens(tmp_path)
    scaler = ActivationScaler(scaling_factor=0.37)
    x = inputs() * 5
    with torch.no_grad():
        codes = sae.encode(scaler.scale(x))
        out = scaler.unscale(sae.decode(codes))
    assert_nontrivial(codes)
    for ours in (load_saelens(tmp_path, norm_scaling_factor=0.37),
                 _with_scaler_file(tmp_path, scaler)):
        assert ours.cfg.input_scale == ours.cfg.output_scale == pytest.approx(0.37)
        with torch.no_grad():
            assert_same("saelens expected_average_only_in encode", ours.encode(x), codes)
            assert_same("saelens expected_average_only_in forward", ours(x), out)


def _with_scaler_file(folder, scaler):
    scaler.save(str(folder / "activation_scaler.json"))
    return load_saelens(folder)


@pytest.mark.parametrize("mode", ["constant_norm_rescale", "layer_norm"])
def test_per_token_normalisation_is_refused(tmp_path, mode):
    sae = sae_lens.StandardSAE(sae_lens.StandardSAEConfig(d_in=D_IN, d_sae=D_SAE,
                                                          normalize_activations=mode))
    sae.save_model(tmp_path)
    with pytest.raises(ValueError, match="cannot express"):
        load_saelens(tmp_path)


def test_unsupported_architecture_is_named(tmp_path):
    sae = sae_lens.AbsTopKSAE(sae_lens.AbsTopKSAEConfig(d_in=D_IN, d_sae=D_SAE, k=4))
    sae.save_model(tmp_path)
    with pytest.raises(ValueError, match="'abstopk' is not supported"):
        load_saelens(tmp_path)


def test_hook_and_model_names_are_kept(tmp_path):
    meta = sae_lens.saes.sae.SAEMetadata(hook_name="blocks.3.hook_resid_post",
                                         model_name="gemma-3-270m")
    sae = sae_lens.TopKSAE(sae_lens.TopKSAEConfig(d_in=D_IN, d_sae=D_SAE, k=4, metadata=meta))
    sae.save_model(tmp_path)
    ours = load_saelens(tmp_path)
    assert (ours.cfg.hookpoint, ours.cfg.model) == ("resid.3", "gemma-3-270m")


# ---- export: sparselens -> SAELens ----

EXPORTS = [  # (variant, config overrides)
    ("relu", {}),
    ("topk", {"k": 5}),
    ("jumprelu", {}),
    ("gated", {}),
    ("batchtopk", {"k": 5, "token_cap": None}),
    ("relu", {"d_out": D_OUT, "pre_encoder_bias": False}),
    ("relu", {"d_out": D_OUT, "pre_encoder_bias": False, "skip_connection": True}),
    ("jumprelu", {"d_out": D_OUT, "pre_encoder_bias": False, "skip_connection": True}),
]


@pytest.mark.parametrize("variant, overrides", EXPORTS,
                         ids=[f"{v}-{'-'.join(o)}" for v, o in EXPORTS])
def test_export_loads_in_saelens_with_same_outputs(tmp_path, variant, overrides):
    needs(variant)
    ours = build(variant, d_in=D_IN, n_latents=D_SAE, hookpoint="resid.2", model="m",
                 **overrides)
    randomize(ours, seed=3)
    if variant == "batchtopk":
        ours.threshold.fill_(0.4)
    if overrides.get("pre_encoder_bias", True):
        ours.cfg.input_scale = ours.cfg.output_scale = 2.5  # folded on export
    ours.eval()
    save_saelens(ours, tmp_path)
    sae = sae_lens.SAE.load_from_disk(tmp_path)
    assert sae.cfg.metadata.hook_name == "blocks.2.hook_resid_post"
    compare(f"export {variant} {sorted(overrides)}", ours, sae, inputs())
    expected_scale = 2.5 if overrides.get("pre_encoder_bias", True) else 1.0
    assert ours.cfg.input_scale == expected_scale  # the live module is untouched


def test_export_drops_the_token_cap_with_a_warning(tmp_path):
    """SAELens's JumpReLU has no per-token cap: the file encodes like the uncapped dictionary."""
    needs("batchtopk")
    capped = build("batchtopk", d_in=D_IN, n_latents=D_SAE, k=5, token_cap=2.0,
                   hookpoint="resid.2", model="m")
    randomize(capped, seed=3)
    capped.threshold.fill_(0.4)
    with pytest.warns(UserWarning, match="token_cap=2.0"):
        save_saelens(capped, tmp_path)
    uncapped = build("batchtopk", d_in=D_IN, n_latents=D_SAE, k=5, token_cap=None,
                     hookpoint="resid.2", model="m")
    uncapped.load_state_dict(capped.state_dict())
    compare("export capped batchtopk", uncapped.eval(), sae_lens.SAE.load_from_disk(tmp_path),
            inputs())
    assert capped.cfg.token_cap == 2.0  # the live module is untouched


def test_export_refuses_what_saelens_cannot_express(tmp_path):
    needs("jumprelu")
    topk_transcoder = build("topk", d_in=D_IN, n_latents=D_SAE, d_out=D_OUT,
                            pre_encoder_bias=False, k=4)
    with pytest.raises(ValueError, match="no SAELens equivalent as a transcoder"):
        save_saelens(topk_transcoder, tmp_path / "a")
    negative = build("jumprelu", d_in=D_IN, n_latents=D_SAE)
    with torch.no_grad():
        negative.threshold.fill_(-0.1)
    with pytest.raises(ValueError, match="below zero"):
        save_saelens(negative, tmp_path / "b")
    assert not (tmp_path / "a").exists() or not any((tmp_path / "a").iterdir())


def test_export_writes_the_saelens_6_layout(tmp_path):
    save_saelens(build("topk", d_in=D_IN, n_latents=D_SAE, k=3), tmp_path)
    cfg = json.loads((tmp_path / "cfg.json").read_text())
    assert cfg["architecture"] == "topk" and cfg["k"] == 3
    assert cfg["metadata"]["sae_lens_version"].startswith("6.")
