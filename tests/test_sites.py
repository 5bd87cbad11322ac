"""The sites view (`sparselens.data.sites`) and the data factory (`sparselens.data.factory`):
one answer to "which sites does this run read, how wide, split how", one checked accessor, one
train/held-out factory with the same full batches for every kind of dictionary."""

from __future__ import annotations

import pytest
import torch

from sparselens.data.batch import ActivationBatch, join_sources, split_sources, stack_acts
from sparselens.data.cache import ActivationCache
from sparselens.data.factory import heldout_chunks, heldout_sequences, split_batches, training_data
from sparselens.data.harvest import HarvestConfig, harvest
from sparselens.data.sites import HeldoutRule, Sites
from sparselens.dictionaries import build
from sparselens.training.config import TrainConfig

SETTINGS = HarvestConfig(storage_dtype="float32", batch_size=4, shard_tokens=100,
                         heldout_fraction=0.2, seed=3, progress=False)


@pytest.fixture(scope="module")
def layers(tmp_path_factory, tiny_llama, make_chunks) -> ActivationCache:
    folder = tmp_path_factory.mktemp("layers")
    harvest(tiny_llama, make_chunks(20), ["resid.0", "resid.1", "mlp_out.1"], folder, SETTINGS)
    return ActivationCache.open(folder)


@pytest.fixture(scope="module")
def paired(tmp_path_factory, tiny_llama, tiny_llama_b, make_chunks) -> ActivationCache:
    folder = tmp_path_factory.mktemp("paired")
    harvest({"A": tiny_llama, "B": tiny_llama_b}, make_chunks(20), ["resid.1"], folder, SETTINGS)
    return ActivationCache.open(folder)


def test_stacked_names_are_built_and_parsed_in_one_place() -> None:
    assert join_sources(["A/resid.1", "B/resid.1"]) == "A/resid.1+B/resid.1"
    assert split_sources("A/resid.1+B/resid.1") == ["A/resid.1", "B/resid.1"]
    assert split_sources("resid.1") == ["resid.1"]
    with pytest.raises(ValueError, match="contains '\\+'"):
        join_sources(["a+b", "c"])
    batch = ActivationBatch({"a": torch.ones(3, 2), "b": torch.zeros(3, 2), "c": torch.ones(3, 5)},
                            *[torch.zeros(3, dtype=torch.long)] * 3)
    assert stack_acts(batch, ["a+b"]).acts["a+b"].tolist() == [[1, 1, 0, 0]] * 3
    with pytest.raises(ValueError, match="one width"):
        stack_acts(batch, ["a+c"])
    with pytest.raises(ValueError, match="no activations for \\['z'\\]"):
        stack_acts(batch, ["a+z"])


def test_sites_from_a_cache_and_a_dictionary_config(layers) -> None:
    sae = build("topk", d_in=32, n_latents=16, k=2, hookpoint="model.layers.1")
    sites = Sites.from_cache(layers, sae.cfg)
    assert (sites.input, sites.target, sites.d_in, sites.d_out) == ("resid.1", None, 32, 32)
    assert sites.names == ["resid.1"] and sites.sources == ["resid.1"] and not sites.is_stacked
    assert sites.heldout == HeldoutRule(0.2, 3)

    transcoder = build("topk", d_in=32, d_out=32, n_latents=16, k=2, hookpoint="resid.1",
                       target_hookpoint="mlp_out.1", pre_encoder_bias=False)
    sites = Sites.from_cache(layers, transcoder.cfg)
    assert sites.names == ["resid.1", "mlp_out.1"]

    crosscoder = build("crosscoder", d_in=64, n_latents=16, k=2, hookpoint="resid.0+resid.1")
    sites = Sites.from_cache(layers, crosscoder.cfg)
    assert sites.sources == ["resid.0", "resid.1"] and sites.is_stacked and sites.d_in == 64

    # The override wins over the config; a training config (no widths) resolves too.
    assert Sites.from_cache(layers, sae.cfg, "resid.0").input == "resid.0"
    assert Sites.from_cache(layers, TrainConfig(hookpoint="resid.0")).d_in == 32


def test_sites_say_what_to_change(layers) -> None:
    wide = build("topk", d_in=48, n_latents=16, k=2, hookpoint="resid.1")
    with pytest.raises(ValueError, match="expects d_in=48 but 'resid.1' .* has width 32"):
        Sites.from_cache(layers, wide.cfg)
    with pytest.raises(ValueError, match="the cache has several .*pass --hookpoint"):
        Sites.from_cache(layers, build("topk", d_in=32, n_latents=16, k=2).cfg)
    with pytest.raises(ValueError, match="'resid.7' is not in the cache"):
        Sites.from_cache(layers, None, "resid.7")


def test_the_accessor_checks_presence_width_and_finiteness() -> None:
    sites = Sites("in", "out", d_in=2, d_out=3)
    good = ActivationBatch({"in": torch.ones(4, 2), "out": torch.zeros(4, 3)},
                           *[torch.zeros(4, dtype=torch.long)] * 3)
    assert sites.inputs(good).shape == (4, 2) and sites.targets(good).shape == (4, 3)
    sites.check(good)
    with pytest.raises(ValueError, match="batch 5 has no activations for hookpoint 'in'"):
        sites.inputs(ActivationBatch({"x": torch.ones(4, 2)}, *[torch.zeros(4).long()] * 3), 5)
    with pytest.raises(ValueError, match="width 2 but the dictionary expects 3"):
        Sites("in").targets(good, width=3)
    bad = ActivationBatch({"in": torch.full((4, 2), float("nan")), "out": torch.zeros(4, 3)},
                          *[torch.zeros(4, dtype=torch.long)] * 3)
    with pytest.raises(ValueError, match="'in' in batch 7 contain NaN"):
        sites.inputs(bad, 7)
    with pytest.raises(ValueError, match=r"batch 7 \(training step 7\) contain NaN"):
        sites.check(bad, 7)
    sae = build("topk", d_in=2, n_latents=4, k=1, dtype="bfloat16")
    assert Sites("in").inputs_for(sae, good).dtype == torch.bfloat16


def test_from_batch_picks_the_only_hookpoint_or_refuses() -> None:
    one = ActivationBatch({"h": torch.ones(2, 2)}, *[torch.zeros(2, dtype=torch.long)] * 3)
    assert Sites.from_batch(one) == Sites("h")
    two = ActivationBatch({"h": torch.ones(2, 2), "g": torch.ones(2, 2)},
                          *[torch.zeros(2, dtype=torch.long)] * 3)
    with pytest.raises(ValueError, match="several hookpoints"):
        Sites.from_batch(two)
    with pytest.raises(ValueError, match="'x' is not in the data"):
        Sites.from_batch(two, "h", "x")


def test_the_diff_crosscoder_trains_on_full_batches_like_every_dictionary(paired) -> None:
    """The factory drops the short last batch of every epoch, for a stacked pair of models as
    for a plain SAE, so step counts and schedules mean the same everywhere."""
    sites = Sites.from_cache(paired, None, join_sources(["A/resid.1", "B/resid.1"]))
    batch_size = 48
    n_train = paired.n_rows("train")
    assert n_train % batch_size, "the test needs a train split that batches unevenly"
    per_epoch = n_train // batch_size
    data = training_data(paired, sites, batch_size, seed=1)
    batches = [b for _, b in zip(range(3 * per_epoch + 1), data(0))]
    assert [len(b) for b in batches] == [batch_size] * len(batches)
    assert all(list(b.acts) == ["A/resid.1+B/resid.1"] for b in batches)
    assert batches[0].acts[sites.input].shape[1] == sites.d_in == 64
    resumed = next(data(per_epoch + 1))  # exact resume, across an epoch boundary
    torch.testing.assert_close(resumed.acts[sites.input], batches[per_epoch + 1].acts[sites.input])
    with pytest.raises(ValueError, match="fewer than one batch"):
        training_data(paired, sites, n_train + 1)


def test_held_out_batches_and_sequences(layers, tiny_llama) -> None:
    sites = Sites.from_cache(layers, None, "resid.1")
    batches = split_batches(layers, sites, batch_size=16, split="heldout", max_tokens=40)
    sizes = [len(b) for b in batches()]
    assert sizes == [16, 16, 8]
    first, again = next(batches()), next(batches())
    torch.testing.assert_close(first.acts["resid.1"], again.acts["resid.1"])
    assert bool(layers.is_heldout(first.seq_ids).all())
    sequences = heldout_sequences(layers, max_sequences=2)
    assert sequences.shape == (2, layers.context_len)
    chunks = heldout_chunks(layers, tiny_llama.tokenizer, max_sequences=2)
    assert [bool(c.special[0]) for c in chunks] == [True, True]
    torch.testing.assert_close(torch.stack([c.ids for c in chunks]), sequences)
