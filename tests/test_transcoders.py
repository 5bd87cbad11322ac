"""Transcoders and skip transcoders: any sparsity variant mapping a module's input to its
output, trained with the trainer on paired hookpoints and spliced in place of the output."""

from __future__ import annotations

import pytest
import torch

from dictionary_helpers import VARIANTS
from sparselens.data.cache import ActivationCache
from sparselens.data.harvest import HarvestConfig, harvest
from sparselens.dictionaries.transcoder import build_transcoder, mlp_sites
from sparselens.evaluation.reconstruction import reconstruction_metrics
from sparselens.evaluation.spliced import spliced_metrics
from sparselens.io.native import load_dictionary
from sparselens.training import LogConfig, OptimConfig, TrainConfig, Trainer

SOURCE, TARGET = mlp_sites(1)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def mlp_cache(tiny_llama, tmp_path_factory, make_chunks) -> ActivationCache:
    """mlp_in.1 and mlp_out.1 of the tiny Llama on the same tokens (rows aligned)."""
    folder = tmp_path_factory.mktemp("mlp")
    harvest(tiny_llama, make_chunks(120), [SOURCE, TARGET], folder,
            HarvestConfig(storage_dtype="float32", batch_size=8, shard_tokens=300,
                          heldout_fraction=0.2, progress=False))
    return ActivationCache.open(folder)


def _train(cache: ActivationCache, out, architecture: str = "topk", skip: bool = False,
           **fields) -> torch.nn.Module:
    cfg = TrainConfig(architecture=architecture, n_latents=128, hookpoint=SOURCE,
                      target_hookpoint=TARGET, n_tokens=32_000, batch_size=128,
                      dictionary={**fields, **({"skip_connection": True} if skip else {})},
                      optim=OptimConfig(lr=3e-3), log=LogConfig(progress=False))

    def data(skip_batches: int):
        return cache.batches(128, hookpoints=[SOURCE, TARGET], skip_batches=skip_batches,
                             epochs=None)

    return Trainer(cfg, data, out).fit()


def _heldout_fvu(dictionary, cache: ActivationCache) -> float:
    batches = cache.batches(512, hookpoints=[SOURCE, TARGET], split="heldout", shuffle=False)
    return reconstruction_metrics(dictionary, batches, SOURCE, TARGET)["fvu"]


def test_mlp_sites_name_the_mlp_input_and_output() -> None:
    assert mlp_sites(3) == ("mlp_in.3", "mlp_out.3")
    with pytest.raises(ValueError, match="non-negative integer"):
        mlp_sites(-1)


@pytest.mark.parametrize("architecture", ["topk", "batchtopk", "jumprelu", "relu", "gated",
                                          "matryoshka"])
@pytest.mark.parametrize("skip", [False, True])
def test_any_variant_maps_one_width_to_another(architecture: str, skip: bool) -> None:
    fields = {k: v for k, v in VARIANTS[architecture].items() if k != "group_sizes"}
    tc = build_transcoder(architecture, 16, 12, 64, skip=skip, hookpoint="a",
                          target_hookpoint="b", **fields)
    assert tc.cfg.pre_encoder_bias is False and tc.cfg.d_out == 12
    assert hasattr(tc, "W_skip") == skip
    x = torch.randn(5, 16)
    assert tc(x).shape == (5, 12) and tc.encode(x).shape == (5, 64)
    out = tc.training_loss(x, torch.randn(5, 12))
    out.loss.backward()
    assert torch.isfinite(out.loss) and tc.W_dec.grad is not None


def test_a_variant_that_cannot_map_between_widths_is_refused() -> None:
    with pytest.raises(ValueError, match="d_out must equal d_in"):
        build_transcoder("mp", 16, 12, 64, k=4)
    assert build_transcoder("mp", 16, 16, 64, k=4).cfg.d_out == 16


def test_transcoder_and_skip_transcoder_train_splice_and_reload(tiny_llama, mlp_cache,
                                                                tmp_path) -> None:
    plain = _train(mlp_cache, tmp_path / "plain", k=8)
    skip = _train(mlp_cache, tmp_path / "skip", skip=True, k=8)
    assert plain.cfg.hookpoint == SOURCE and plain.cfg.target_hookpoint == TARGET
    assert not bool((skip.W_skip == 0).all())
    fvus = {name: _heldout_fvu(load_dictionary(tmp_path / name), mlp_cache)
            for name in ("plain", "skip")}
    assert fvus["plain"] < 0.6 and fvus["skip"] < fvus["plain"]
    loaded = load_dictionary(tmp_path / "skip")  # scales folded into the skip path too
    x = next(mlp_cache.batches(64, hookpoints=[SOURCE], split="heldout")).acts[SOURCE]
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), skip.eval()(x), rtol=1e-4, atol=1e-5)
    tokens = mlp_cache.tokens()[:4]
    result = spliced_metrics(loaded, tiny_llama, None, tokens)  # sites from the config
    assert result["ce_spliced_with_error"] == pytest.approx(result["ce_clean"], abs=1e-4)
    assert 0 < result["kl_spliced"] < result["kl_zero_ablation"]
