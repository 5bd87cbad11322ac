"""Crosscoders and multi-layer SAEs: stacked sources, per-source scales, scored selection,
paired data from one cache, training with the trainer, and per-source evaluation."""

from __future__ import annotations

import itertools

import pytest
import torch

from dictionary_helpers import fvu, sparse_data, train
from sparselens.data.batch import ActivationBatch, join_sources, split_sources
from sparselens.data.cache import ActivationCache
from sparselens.data.factory import training_data
from sparselens.data.harvest import HarvestConfig, harvest
from sparselens.data.paired import mixed_layer_rows, stack_batch, stack_sources
from sparselens.data.sites import Sites
from sparselens.dictionaries import StepContext, build
from sparselens.dictionaries.crosscoder import Crosscoder
from sparselens.dictionaries.multilayer import MultiLayerSAE
from sparselens.evaluation.per_source import (
    layer_profile,
    per_source_reconstruction,
    per_source_spliced,
)
from sparselens.io.native import load_dictionary, save_dictionary
from sparselens.training import LogConfig, OptimConfig, TrainConfig, Trainer

FP32 = HarvestConfig(storage_dtype="float32", batch_size=4, shard_tokens=200, progress=False)
VARIANTS = {"crosscoder": {}, "crosscoder_topk": {"selection": "topk"}, "mlsae": {},
            "mlsae_learned": {"layer_embedding": "learned", "selection": "batchtopk"},
            "mlsae_fixed": {"layer_embedding": "fixed"}}


pytestmark = pytest.mark.usefixtures("one_thread")


def make(variant: str, d_in: int = 16, n_latents: int = 64, **overrides):
    torch.manual_seed(0)
    name = variant.split("_")[0]
    return build(name, d_in=d_in, n_latents=n_latents, k=4, threshold_decay=0.9,
                 **{**VARIANTS[variant], **overrides})


# ---- properties every dictionary has ----

@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_gradient_reaches_every_parameter(variant: str) -> None:
    model = make(variant)
    x = sparse_data(256)
    model.initialize_from_data(x)
    out = model.training_loss(x, ctx=StepContext(step=1, total_steps=10,
                                                 dead_mask=torch.rand(64) < 0.5))
    out.loss.backward()
    assert out.codes.shape[-1] == 64 and out.codes.ndim == 2
    for name, param in model.named_parameters():
        assert param.grad is not None and torch.isfinite(param.grad).all(), name


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_training_helps_inference_is_per_token_and_save_load_keeps_outputs(variant: str,
                                                                          tmp_path) -> None:
    model = make(variant, input_scale=2.0, output_scale=2.0)
    x = sparse_data(2048)
    before = fvu(model, x)
    train(model, x * 2.0, steps=80)
    model.eval()
    assert fvu(model, x) < min(0.5, before)
    alone = torch.cat([model.encode(x[i:i + 1]) for i in range(8)])
    torch.testing.assert_close(model.encode(x[:64])[:8], alone)
    with torch.no_grad():
        codes, out = model.encode(x), model(x)
    save_dictionary(model, tmp_path / "ckpt")
    loaded = load_dictionary(tmp_path / "ckpt")
    assert type(loaded) is type(model) and loaded.cfg.input_scale == 1.0
    torch.testing.assert_close(loaded.source_scale, model.source_scale * 2.0)
    with torch.no_grad():
        torch.testing.assert_close(loaded.encode(x), codes, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(loaded(x), out, rtol=1e-4, atol=1e-5)


# ---- crosscoder specifics ----

def test_layouts_views_and_scored_selection() -> None:
    cc = build("crosscoder", d_in=3 * 8, n_latents=32, k=1, selection="topk",
               hookpoint="a+b+c")
    assert isinstance(cc, Crosscoder) and cc.cfg.n_sources == 3 and cc.cfg.sources == ["a", "b",
                                                                                       "c"]
    x = torch.randn(5, 3, 8)
    torch.testing.assert_close(cc.encode(x), cc.encode(x.flatten(1)))
    assert cc(x).shape == (5, 3, 8) and cc(x.flatten(1)).shape == (5, 24)
    assert cc.encoder_by_source().shape == (3, 8, 32)
    assert cc.decoder_by_source().shape == (32, 3, 8) and cc.decoder_norms().shape == (32, 3)
    with torch.no_grad():  # latent 1 writes twice as strongly as latent 0: it takes the slot
        cc.W_dec[1] = 2 * cc.W_dec[0]
    pre = torch.zeros(1, 32)
    pre[0, :2] = 1.0
    assert cc.activation(pre).nonzero()[:, 1].tolist() == [1]
    with pytest.raises(ValueError, match="expected inputs of shape"):
        cc.encode(torch.randn(4, 10))


def test_batchtopk_keeps_k_per_token_on_average_and_learns_a_threshold() -> None:
    cc = build("crosscoder", d_in=16, n_latents=64, k=4)
    x = sparse_data(256)
    cc.initialize_from_data(x)
    assert bool(torch.isnan(cc.threshold))
    pre, codes = cc.training_codes(cc.native(cc.model_space(x)))
    assert int((codes != 0).sum()) == 4 * 256
    assert torch.isfinite(cc.threshold)
    scores = cc.selection_scores(pre)
    assert float(scores[codes != 0].min().detach()) == pytest.approx(float(cc.threshold))


@pytest.mark.parametrize("name", ["crosscoder", "mlsae"])
def test_token_cap_bounds_a_massive_rows_latents_in_training_and_inference(name: str) -> None:
    """One row 50x larger than the rest would take most of the batch's k*B slots; the cap
    (token_cap x k per row: per token for the crosscoder, per token and layer for the MLSAE)
    stops it in the batch selection and after the inference threshold. Uncapped, it does not."""
    def counts(cap):
        torch.manual_seed(0)
        sae = build(name, d_in=16, n_latents=64, k=2, selection="batchtopk", token_cap=cap)
        x = sparse_data(64)
        sae.initialize_from_data(x)
        x = x.clone()
        x[0] *= 50.0
        model = sae.native(sae.model_space(x))
        _, codes = sae.training_codes(model)
        sae.threshold.fill_(1e-6)  # an inference threshold almost everything passes
        inference = sae.activation(sae.pre_acts(model))
        return (codes[0] != 0).sum(-1).max(), (inference != 0).sum(-1).max()

    trained, inferred = counts(2.0)
    assert int(trained) <= 4 and int(inferred) <= 4
    trained, inferred = counts(None)
    assert int(trained) > 4 and int(inferred) > 4


def test_config_errors_say_what_is_wrong() -> None:
    with pytest.raises(ValueError, match="names 2 sources but n_sources=3"):
        build("crosscoder", d_in=24, n_latents=8, k=2, hookpoint="a+b", n_sources=3)
    with pytest.raises(ValueError, match="not n_sources"):
        build("crosscoder", d_in=25, n_latents=8, k=2, n_sources=2)
    with pytest.raises(ValueError, match="selection must be"):
        build("crosscoder", d_in=16, n_latents=8, k=2, selection="l1")
    with pytest.raises(ValueError, match="reconstructs its own sources"):
        build("crosscoder", d_in=16, n_latents=8, k=2, skip_connection=True)
    with pytest.raises(ValueError, match="layer_embedding"):
        build("mlsae", d_in=16, n_latents=8, k=2, layer_embedding="sinusoidal")
    with pytest.raises(ValueError, match="contains '\\+'"):
        join_sources(["a+b", "c"])
    assert split_sources("x/resid.1+y/resid.1") == ["x/resid.1", "y/resid.1"]
    zeros = torch.zeros(10, 16)
    with pytest.raises(ValueError, match="mean norms|median norms|norms are"):
        build("crosscoder", d_in=16, n_latents=8, k=2).initialize_from_data(zeros)


def test_per_source_scales_equalise_sources() -> None:
    cc = build("crosscoder", d_in=16, n_latents=32, k=4)
    x = sparse_data(512).unflatten(-1, (2, 8)) * torch.tensor([1.0, 50.0])[:, None]
    cc.initialize_from_data(x)
    norms = cc.model_space(x).norm(dim=-1).median(0).values
    torch.testing.assert_close(norms, torch.full((2,), 8 ** 0.5), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(cc.to_raw(cc.model_space(x)), x)


def _unit_rows(count: int, d: int, gen: torch.Generator) -> torch.Tensor:
    rows = torch.randn(count, d, generator=gen)
    return rows / rows.norm(dim=1, keepdim=True)


def test_crosscoder_separates_shared_from_specific_directions() -> None:
    """Source A holds 12 features, B the same 12 (written along other directions) plus 4 of
    its own: the latents that write B's own features have (almost) no decoder in A. (Per-token
    TopK here: with BatchTopK some own features are also split into combinations with shared
    ones, which is real crosscoder behaviour but makes a poor unit test.)"""
    gen = torch.Generator().manual_seed(0)
    d, n_shared, n_own, n = 16, 12, 4, 4096
    shared_a, shared_b = _unit_rows(n_shared, d, gen), _unit_rows(n_shared, d, gen)
    own_b = _unit_rows(n_own, d, gen)
    coefs = (1 + torch.rand(n, n_shared + n_own, generator=gen)) * (
        torch.rand(n, n_shared + n_own, generator=gen) < 0.1)
    x_a = coefs[:, :n_shared] @ shared_a
    x_b = coefs[:, :n_shared] @ shared_b + coefs[:, n_shared:] @ own_b
    x = torch.stack([x_a, x_b], 1)
    torch.manual_seed(0)
    cc = build("crosscoder", d_in=2 * d, n_latents=64, k=3, selection="topk")
    train(cc, x.flatten(1), steps=800, lr=5e-3, batch_size=256)
    assert fvu(cc.eval(), x.flatten(1)) < 0.05
    from sparselens.evaluation.diffing import relative_norm

    rel = relative_norm(cc.decoder_norms().detach())
    decoders_b = torch.nn.functional.normalize(cc.decoder_by_source().detach()[:, 1], dim=-1)
    best_for_own = (own_b @ decoders_b.T).argmax(1)
    best_for_shared = (shared_b @ decoders_b.T).argmax(1)
    assert (rel[best_for_own] > 0.9).all(), rel[best_for_own]
    assert ((rel[best_for_shared] > 0.1) & (rel[best_for_shared] < 0.9)).all(), rel
    assert 0.35 < float(rel[best_for_shared].median()) < 0.65


# ---- paired data from one cache ----

def stacked_data(cache: ActivationCache, sources: list[str], batch_size: int):
    """The trainer's factory over the stack of `sources` (any spelling the cache resolves)."""
    return training_data(cache, Sites.from_cache(cache, None, join_sources(sources)), batch_size)


def test_two_models_on_the_same_tokens_stack_into_aligned_rows(tiny_llama, tiny_llama_b, tmp_path,
                                                               make_chunks) -> None:
    chunks = make_chunks(6)
    harvest({"base": tiny_llama, "tuned": tiny_llama_b}, chunks, ["resid.1"], tmp_path, FP32)
    cache = ActivationCache.open(tmp_path)
    data = stacked_data(cache, ["base/model.layers.1", "tuned/resid.1"], batch_size=16)
    batch = next(data(0))
    assert list(batch.acts) == ["base/resid.1+tuned/resid.1"]
    stacked = batch.acts["base/resid.1+tuned/resid.1"]
    assert stacked.shape == (16, 64)
    ids = torch.stack([c.ids for c in chunks])
    for half, loaded in enumerate((tiny_llama, tiny_llama_b)):
        hidden = loaded.model(input_ids=ids, output_hidden_states=True).hidden_states[2]
        torch.testing.assert_close(stacked[:, 32 * half: 32 * (half + 1)],
                                   hidden[batch.seq_ids, batch.positions], rtol=1e-5, atol=1e-5)
    fourth = next(itertools.islice(data(0), 3, None))
    assert torch.equal(next(data(3)).seq_ids, fourth.seq_ids)  # a resumed run continues exactly
    with pytest.raises(ValueError, match="no activations for"):
        stack_batch(batch, ["missing"])


def test_several_layers_of_one_model_stack_and_mix(tiny_gpt2, tmp_path, make_chunks) -> None:
    harvest(tiny_gpt2, make_chunks(4), ["resid.0", "resid.1", "mlp_out.2"], tmp_path, FP32)
    cache = ActivationCache.open(tmp_path)
    batch = next(cache.batches(20, split="all"))
    stacked = stack_batch(batch, ["resid.0", "resid.1"]).acts["resid.0+resid.1"]
    torch.testing.assert_close(stacked[:, 24:], batch.acts["resid.1"])
    (rows,) = mixed_layer_rows([batch], ["resid.0", "resid.1", "mlp_out.2"], seed=1)
    mixed = rows.acts["resid.0+resid.1+mlp_out.2"]
    assert mixed.shape == (60, 24) and len(rows) == 60
    for i in range(60):  # every row is one (token, layer) of the batch, with its token's ids
        token = int((batch.seq_ids * 1000 + batch.positions == rows.seq_ids[i] * 1000
                     + rows.positions[i]).nonzero())
        assert any(torch.equal(mixed[i], batch.acts[h][token])
                   for h in ("resid.0", "resid.1", "mlp_out.2"))
        assert rows.token_ids[i] == batch.token_ids[token]
    uneven = ActivationBatch(acts={"a": torch.zeros(2, 3), "b": torch.zeros(2, 4)},
                             token_ids=batch.token_ids[:2], seq_ids=batch.seq_ids[:2],
                             positions=batch.positions[:2])
    with pytest.raises(ValueError, match="one width"):
        stack_batch(uneven, ["a", "b"])


# ---- training with the trainer, per-source evaluation ----

LAYERS = ["resid.0", "resid.1", "resid.2"]


@pytest.fixture(scope="module")
def layer_cache(tiny_llama, tmp_path_factory, make_chunks) -> ActivationCache:
    folder = tmp_path_factory.mktemp("layers")
    harvest(tiny_llama, make_chunks(40), LAYERS, folder,
            HarvestConfig(storage_dtype="float32", batch_size=8, shard_tokens=300,
                          heldout_fraction=0.2, progress=False))
    return ActivationCache.open(folder)


def _train_stacked(cache: ActivationCache, architecture: str, out, **fields):
    cfg = TrainConfig(architecture=architecture, n_latents=64, n_tokens=12_000, batch_size=128,
                      dictionary={"k": 4, **fields}, optim=OptimConfig(lr=3e-3),
                      log=LogConfig(progress=False, every_steps=50))
    return Trainer(cfg, stacked_data(cache, LAYERS, 128), out).fit()


def test_acausal_crosscoder_trains_and_is_evaluated_per_layer(tiny_llama, layer_cache,
                                                              tmp_path) -> None:
    cc = _train_stacked(layer_cache, "crosscoder", tmp_path / "cc")
    assert isinstance(cc, Crosscoder) and cc.cfg.sources == LAYERS
    loaded = load_dictionary(tmp_path / "cc")
    heldout = stack_sources(layer_cache.batches(256, LAYERS, split="heldout", shuffle=False),
                            LAYERS)
    results = per_source_reconstruction(loaded, heldout, "+".join(LAYERS))
    assert [r["source"] for r in results] == LAYERS
    assert all(r["fvu"] < 0.6 and r["l0"] > 0 for r in results)
    assert len({r["l0"] for r in results}) == 1  # one code for all layers
    tokens = layer_cache.tokens()[:4]
    chunks = [type("Chunk", (), {"ids": t, "special": t == 1, "doc_id": 0})() for t in tokens]
    spliced = per_source_spliced(loaded, tiny_llama, chunks)
    assert [r["source"] for r in spliced] == LAYERS
    assert len({round(r["ce_clean"], 6) for r in spliced}) == 1
    assert all(r["kl_spliced"] > 0 and r["n_predictions"] > 0 for r in spliced)

    def perfect_but_layer_1(x: torch.Tensor) -> torch.Tensor:
        """Returns the activations themselves, and zeros for layer 1: splicing must then be
        free everywhere but at layer 1, where it equals zero ablation."""
        out = loaded.as_sources(x).clone()
        out[..., 1, :] = 0
        return out

    loaded.reconstruct = perfect_but_layer_1
    exact = per_source_spliced(loaded, tiny_llama, chunks)
    for index, r in enumerate(exact):
        if index == 1:
            assert r["ce_spliced"] == pytest.approx(r["ce_zero_ablation"], abs=1e-6)
        else:
            assert r["ce_spliced"] == pytest.approx(r["ce_clean"], abs=1e-5)
            assert r["kl_spliced"] == pytest.approx(0.0, abs=1e-6)


def test_mlsae_is_one_sae_on_every_layer(tiny_llama, layer_cache, tmp_path) -> None:
    sae = _train_stacked(layer_cache, "mlsae", tmp_path / "ml", layer_embedding="fixed")
    assert isinstance(sae, MultiLayerSAE) and sae.W_enc.shape == (32, 64)
    assert not bool((sae.layer_offset == 0).all())
    loaded = load_dictionary(tmp_path / "ml").eval()
    batch = next(stack_sources(layer_cache.batches(64, LAYERS, split="all"), LAYERS))
    x = batch.acts["+".join(LAYERS)]
    codes = loaded.encode(x)
    assert codes.shape == (64, 3, 64)
    for layer, name in enumerate(LAYERS):
        torch.testing.assert_close(loaded.encode_layer(batch_layer(x, layer), layer),
                                   codes[:, layer])
        assert name in loaded.cfg.sources
    heldout = stack_sources(layer_cache.batches(256, LAYERS, split="heldout", shuffle=False),
                            LAYERS)
    results = per_source_reconstruction(loaded, heldout, "+".join(LAYERS))
    assert all(r["fvu"] < 0.6 for r in results)
    profile = layer_profile(loaded, stack_sources(layer_cache.batches(256, LAYERS, split="all"),
                                                  LAYERS), "+".join(LAYERS))
    live = profile.sum(1) > 0
    assert profile.shape == (64, 3) and bool(live.any())
    torch.testing.assert_close(profile[live].sum(1), torch.ones(int(live.sum()),
                                                                 dtype=torch.float64))
    with pytest.raises(ValueError, match="out of range"):
        loaded.encode_layer(batch_layer(x, 0), 3)
    with pytest.raises(ValueError, match="shared by all sources"):
        layer_profile(_train_stacked(layer_cache, "crosscoder", None), [batch],
                      "+".join(LAYERS))


def batch_layer(x: torch.Tensor, layer: int) -> torch.Tensor:
    return x.unflatten(-1, (3, 32))[:, layer]


def test_cli_trains_evaluates_and_reports_a_crosscoder_on_stacked_hookpoints(
        tiny_llama, layer_cache, tmp_path, capsys) -> None:
    """``--hookpoint resid.0+resid.2`` names two cached layers side by side: train, eval and
    report then work on crosscoders as on any dictionary, with per-layer results."""
    import json

    from sparselens.cli.main import main

    tiny_llama.model.save_pretrained(tmp_path / "model")
    tiny_llama.tokenizer.save_pretrained(tmp_path / "model")
    out, cache = tmp_path / "cc", str(layer_cache.folder)
    assert main(["train", cache, "--out", str(out), "--architecture", "crosscoder",
                 "--hookpoint", "resid.0+resid.2", "--n-latents", "64", "--n-tokens", "6000",
                 "--batch-size", "128", "--dictionary", '{"k": 4}', "--log.progress",
                 "false"]) == 0, capsys.readouterr().err
    loaded = load_dictionary(out)
    assert isinstance(loaded, Crosscoder) and loaded.cfg.sources == ["resid.0", "resid.2"]
    assert main(["eval", str(out), "--cache", cache, "--model", str(tmp_path / "model"),
                 "--max-sequences", "4"]) == 0, capsys.readouterr().err
    record = json.loads((out / "eval.json").read_text())
    per_source = record["reconstruction"]["per_source"]
    assert [r["source"] for r in per_source] == ["resid.0", "resid.2"]
    assert all(0 < r["fvu"] < 0.8 for r in per_source)
    assert [r["source"] for r in record["spliced"]["per_source"]] == ["resid.0", "resid.2"]
    assert main(["report", str(out), "--cache", cache, "--tokenizer",
                 str(tmp_path / "model")]) == 0, capsys.readouterr().err
    assert (out / "report" / "index.html").exists()
    assert main(["train", cache, "--out", str(tmp_path / "bad"), "--architecture",
                 "crosscoder", "--hookpoint", "resid.0+resid.9", "--batch-size", "128"]) == 1
    assert "resid.9" in capsys.readouterr().err


def test_the_cache_reads_a_stack_of_hookpoints_as_one(layer_cache) -> None:
    stacked = next(layer_cache.batches(64, ["resid.2+resid.0"], shuffle=False))
    plain = next(stack_sources(layer_cache.batches(64, ["resid.2", "resid.0"], shuffle=False),
                               ["resid.2", "resid.0"]))
    assert list(stacked.acts) == ["resid.2+resid.0"]
    torch.testing.assert_close(stacked.acts["resid.2+resid.0"], plain.acts["resid.2+resid.0"])
    assert layer_cache.width("resid.2+resid.0") == 2 * layer_cache.width("resid.0")
    both = next(layer_cache.batches(64, ["resid.1", "resid.0+resid.1"], shuffle=False))
    assert list(both.acts) == ["resid.1", "resid.0+resid.1"]
    torch.testing.assert_close(both.acts["resid.0+resid.1"][:, 32:], both.acts["resid.1"])
    with pytest.raises(ValueError, match="resid.7"):
        layer_cache.resolve("resid.0+resid.7")
