"""Reading a cache: deterministic shuffles that cover every row, exact skip, split, checksums."""

from __future__ import annotations

import json
import shutil
from collections import Counter

import pytest
import torch

from sparselens.data.cache import ActivationCache
from sparselens.data.harvest import HarvestConfig, harvest
from sparselens.data.split import heldout_mask

N_SEQUENCES = 40
CONTEXT = 16


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory, tiny_llama, make_chunks):
    folder = tmp_path_factory.mktemp("cache")
    harvest(tiny_llama, make_chunks(N_SEQUENCES, length=CONTEXT), ["resid.1", "mlp_out.2"], folder,
            HarvestConfig(batch_size=3, shard_tokens=70, heldout_fraction=0.2, progress=False))
    return folder


@pytest.fixture
def cache(cache_dir):
    return ActivationCache.open(cache_dir)


def _keys(batches) -> list[tuple[int, int]]:
    return [(s, p) for b in batches for s, p in zip(b.seq_ids.tolist(), b.positions.tolist())]


def test_manifest_describes_the_cache(cache):
    m = cache.manifest
    assert cache.hookpoints == ["resid.1", "mlp_out.2"]
    assert cache.width("resid.1") == 32 and cache.width("model.layers.2.mlp") == 32
    assert m["storage_dtype"] == "bfloat16" and m["model_dtype"] == "float32"
    assert m["context_len"] == CONTEXT and m["n_sequences"] == N_SEQUENCES
    assert cache.n_tokens == N_SEQUENCES * (CONTEXT - 1) == cache.n_rows("all")
    assert len(m["shards"]) > 4 and all(len(s["sha256"]) == 64 for s in m["shards"])
    assert cache.tokens().shape == (N_SEQUENCES, CONTEXT)
    assert cache.doc_ids().tolist() == [i // 2 for i in range(N_SEQUENCES)]
    with pytest.raises(ValueError, match="holds resid.1, mlp_out.2"):
        cache.width("resid.3")


def test_every_row_once_per_epoch_in_a_seeded_order(cache):
    all_rows = set(_keys(cache.batches(1000, split="all", shuffle=False)))
    assert len(all_rows) == cache.n_tokens
    epochs = list(cache.batches(32, split="all", seed=1, epochs=2, buffer_shards=2))
    full, rest = divmod(cache.n_tokens, 32)
    assert [len(b) for b in epochs] == ([32] * full + [rest]) * 2
    counts = Counter(_keys(epochs))
    assert set(counts) == all_rows and set(counts.values()) == {2}
    again = _keys(cache.batches(32, split="all", seed=1, epochs=2, buffer_shards=2))
    assert again == _keys(epochs)
    other_seed = _keys(cache.batches(32, split="all", seed=2, epochs=2, buffer_shards=2))
    assert other_seed != again and Counter(other_seed) == counts
    first = epochs[0]
    assert len(set(first.seq_ids.tolist())) > 5  # rows of many sequences, not one context
    assert first.acts["resid.1"].dtype == torch.float32 and first.token_ids.dtype == torch.long


def test_batches_of_a_split_are_exactly_that_split(cache):
    train = _keys(cache.batches(50, split="train"))
    held = _keys(cache.batches(50, split="heldout"))
    assert len(train) == cache.n_rows("train") and len(held) == cache.n_rows("heldout")
    train_seqs, held_seqs = {s for s, _ in train}, {s for s, _ in held}
    assert train_seqs.isdisjoint(held_seqs) and held_seqs
    assert train_seqs | held_seqs == set(range(N_SEQUENCES))
    flags = cache.is_heldout(torch.arange(N_SEQUENCES))
    assert set(torch.nonzero(flags).flatten().tolist()) == held_seqs
    assert 0.05 < len(held_seqs) / N_SEQUENCES < 0.5  # fraction 0.2


@pytest.mark.parametrize("skip", [0, 1, 5, 11, 16, 19, 25])
def test_skip_batches_continues_exactly(cache, skip):
    kwargs = dict(batch_size=29, split="train", seed=7, epochs=2, buffer_shards=2)
    everything = list(cache.batches(**kwargs))
    assert cache.n_batches(29, "train") * 2 == len(everything)
    resumed = list(cache.batches(**kwargs, skip_batches=skip))
    assert len(resumed) == len(everything) - skip
    for want, got in zip(everything[skip:], resumed):
        assert torch.equal(want.seq_ids, got.seq_ids) and torch.equal(want.positions,
                                                                      got.positions)
        torch.testing.assert_close(got.acts, want.acts, rtol=0, atol=0)


def test_subset_of_hookpoints_and_storage_dtype(cache):
    batch = next(cache.batches(8, hookpoints=["mlp_out.2"], dtype=None))
    assert list(batch.acts) == ["mlp_out.2"] and batch.acts["mlp_out.2"].dtype == torch.bfloat16
    with pytest.raises(ValueError, match="split must be one of"):
        cache.batches(8, split="test")
    with pytest.raises(ValueError, match="batch_size"):
        cache.batches(0)


def test_heldout_rule_keeps_both_splits_nonempty():
    two = heldout_mask(torch.arange(2), 0.05, seed=0)
    assert two.tolist() == [False, True]
    assert not heldout_mask(torch.arange(100), 0.0, seed=0).any()
    many = heldout_mask(torch.arange(20_000), 0.05, seed=3)
    assert abs(many.float().mean().item() - 0.05) < 0.01
    assert not torch.equal(many, heldout_mask(torch.arange(20_000), 0.05, seed=4))


def _broken_copy(cache_dir, tmp_path):
    folder = tmp_path / "copy"
    shutil.copytree(cache_dir, folder)
    return folder, folder / json.loads((folder / "manifest.json").read_text())["shards"][2]["file"]


def test_flipped_byte_is_detected_and_named(cache_dir, tmp_path):
    folder, shard = _broken_copy(cache_dir, tmp_path)
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0x01
    shard.write_bytes(bytes(data))
    cache = ActivationCache.open(folder)  # opening stays cheap; checks happen on use
    with pytest.raises(ValueError, match=f"{shard.name} is corrupted: sha256"):
        cache.verify()
    with pytest.raises(ValueError, match=f"{shard.name} is corrupted"):
        list(ActivationCache.open(folder).batches(16, split="all", shuffle=False))


def test_truncated_or_missing_shard_is_detected_and_named(cache_dir, tmp_path):
    folder, shard = _broken_copy(cache_dir, tmp_path)
    shard.write_bytes(shard.read_bytes()[:-100])
    with pytest.raises(ValueError, match=f"{shard.name} is .* bytes but .* truncated"):
        ActivationCache.open(folder).tokens()
    shard.unlink()
    with pytest.raises(FileNotFoundError, match=f"{shard.name} is missing"):
        ActivationCache.open(folder).verify()


def test_bad_cache_folders_say_what_is_wrong(cache_dir, tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ActivationCache.open(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="no manifest.json"):
        ActivationCache.open(tmp_path)
    folder, _ = _broken_copy(cache_dir, tmp_path)
    (folder / "manifest.json").write_text('{"format": "sparselens-activation-cache", "sha')
    with pytest.raises(ValueError, match="not valid JSON"):
        ActivationCache.open(folder)
    (folder / "manifest.json").write_text('{"format": "sparselens-activation-cache"}')
    with pytest.raises(ValueError, match="lacks models, hookpoints"):
        ActivationCache.open(folder)
