"""Harvesting: stored rows equal a plain forward, specials are left out, resume is exact."""

from __future__ import annotations

import pytest
import torch

from conftest import folder_bytes
from sparselens.data.cache import ActivationCache
from sparselens.data.harvest import HarvestConfig, harvest
from sparselens.data.stream import stream_batches

CONTEXT = 16  # length of the chunks made by the `make_chunks` fixture
FP32 = HarvestConfig(storage_dtype="float32", batch_size=4, shard_tokens=100, progress=False)


def _rows_by_token(batches) -> dict[tuple[int, int], dict[str, torch.Tensor]]:
    """{(seq_id, position): {hookpoint: row}} from a stream of batches."""
    out = {}
    for batch in batches:
        for i, (seq, pos) in enumerate(zip(batch.seq_ids.tolist(), batch.positions.tolist())):
            assert (seq, pos) not in out, "a row was yielded twice"
            out[seq, pos] = {name: act[i] for name, act in batch.acts.items()}
    return out


def test_stored_rows_equal_plain_forward(tiny_llama, tmp_path, make_chunks):
    chunks = make_chunks(10)
    harvest(tiny_llama, chunks, ["resid.1", "resid_pre.3"], tmp_path, FP32)
    cache = ActivationCache.open(tmp_path)
    ids = torch.stack([c.ids for c in chunks])
    hidden = tiny_llama.model(input_ids=ids, output_hidden_states=True).hidden_states
    rows = _rows_by_token(cache.batches(37, split="all"))
    assert len(rows) == 10 * (CONTEXT - 1) == cache.n_tokens
    for (seq, pos), acts in rows.items():
        torch.testing.assert_close(acts["resid.1"], hidden[2][seq, pos], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(acts["resid_pre.3"], hidden[3][seq, pos], rtol=1e-5,
                                   atol=1e-5)
    torch.testing.assert_close(cache.tokens(), ids, rtol=0, atol=0)


def test_special_tokens_are_not_stored_but_kept_in_tokens(tiny_gpt2, tmp_path, make_chunks):
    chunks = make_chunks(6)
    for chunk in chunks:  # a pad run at the end of each chunk, as after a short document
        chunk.ids[-3:] = 0
        chunk.special[-3:] = True
    harvest(tiny_gpt2, chunks, ["mlp_out.1"], tmp_path, FP32)
    cache = ActivationCache.open(tmp_path)
    assert cache.n_tokens == 6 * (CONTEXT - 4)
    batch = next(cache.batches(10_000, split="all"))
    assert set(batch.positions.tolist()) == set(range(1, CONTEXT - 3))
    assert (batch.token_ids != 0).all() and (batch.token_ids != 1).all()
    assert (cache.tokens()[:, -3:] == 0).all() and (cache.tokens()[:, 0] == 1).all()
    assert cache.width("mlp_out.1") == 24


def test_resume_gives_byte_identical_cache(tiny_llama, tmp_path, make_chunks):
    chunks = make_chunks(30)
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    full = harvest(tiny_llama, chunks, ["resid.0", "mlp_in.2"], straight, FP32)
    assert len(full["shards"]) >= 4

    first = harvest(tiny_llama, chunks, ["resid.0", "mlp_in.2"], resumed,
                    HarvestConfig(**{**vars(FP32), "max_shards": 2}))
    assert not first["complete"] and len(first["shards"]) == 2
    with pytest.raises(ValueError, match="did not finish"):
        ActivationCache.open(resumed)
    assert len(ActivationCache.open(resumed, allow_incomplete=True).tokens()) == 16

    def crashing():  # dies in the middle of the fourth shard (8 sequences a shard)
        for index, chunk in enumerate(chunks):
            if index == 28:
                raise KeyboardInterrupt
            yield chunk

    with pytest.raises(KeyboardInterrupt):
        harvest(tiny_llama, crashing(), ["resid.0", "mlp_in.2"], resumed, FP32)
    assert len(ActivationCache.open(resumed, allow_incomplete=True).manifest["shards"]) == 3
    (resumed / ".shard-00009.safetensors.abc.tmp").write_bytes(b"left by a killed run")
    (resumed / "shard-00009.safetensors").write_bytes(b"written but never listed")
    harvest(tiny_llama, chunks, ["resid.0", "mlp_in.2"], resumed, FP32)
    assert folder_bytes(resumed) == folder_bytes(straight)


def test_resume_refuses_a_different_harvest(tiny_llama, tmp_path, make_chunks):
    chunks = make_chunks(8)
    harvest(tiny_llama, chunks, ["resid.0"], tmp_path, FP32)
    with pytest.raises(ValueError, match="already holds a different harvest.*hookpoints"):
        harvest(tiny_llama, chunks, ["resid.1"], tmp_path, FP32)
    with pytest.raises(ValueError, match="storage_dtype"):
        harvest(tiny_llama, chunks, ["resid.0"], tmp_path, HarvestConfig(progress=False,
                                                                         batch_size=4,
                                                                         shard_tokens=100))
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="not empty"):
        harvest(tiny_llama, chunks, ["resid.0"], tmp_path / "other", FP32)


def test_token_budget_and_bad_inputs(tiny_llama, tmp_path, make_chunks):
    manifest = harvest(tiny_llama, make_chunks(20), ["resid.0"], tmp_path / "a",
                       HarvestConfig(**{**vars(FP32), "max_tokens": 130}))
    assert manifest["complete"] and 130 <= manifest["n_tokens"] < 130 + 4 * CONTEXT
    assert manifest["n_sequences"] == sum(s["n_sequences"] for s in manifest["shards"])
    with pytest.raises(ValueError, match="no chunks"):
        harvest(tiny_llama, [], ["resid.0"], tmp_path / "b", FP32)
    with pytest.raises(ValueError, match="different lengths"):
        harvest(tiny_llama, make_chunks(2) + make_chunks(2, length=9), ["resid.0"],
                tmp_path / "c", FP32)
    with pytest.raises(ValueError, match="closest valid names"):
        harvest(tiny_llama, make_chunks(2), ["model.layer.0"], tmp_path / "d", FP32)
    with pytest.raises(ValueError, match="unknown dtype 'int8'"):
        HarvestConfig(storage_dtype="int8")
    with pytest.raises(ValueError, match="held-out fraction"):
        HarvestConfig(heldout_fraction=1.5)
    with pytest.raises(ValueError, match="shard_tokens must be at least 1"):
        HarvestConfig(shard_tokens=0)


def test_two_models_on_the_same_tokens(tiny_llama, tiny_llama_b, tmp_path, make_chunks):
    other = tiny_llama_b
    chunks = make_chunks(6)
    manifest = harvest({"base": tiny_llama, "tuned": other}, chunks, ["resid.1"], tmp_path, FP32)
    assert manifest["model"] == ["tiny-llama-0", "tiny-llama-1"]
    assert [(h["name"], h["model"]) for h in manifest["hookpoints"]] == [
        ("base/resid.1", "base"), ("tuned/resid.1", "tuned")]
    cache = ActivationCache.open(tmp_path)
    assert cache.resolve("tuned/model.layers.1") == "tuned/resid.1"
    ids = torch.stack([c.ids for c in chunks])
    for name, loaded in (("base/resid.1", tiny_llama), ("tuned/resid.1", other)):
        hidden = loaded.model(input_ids=ids, output_hidden_states=True).hidden_states[2]
        for (seq, pos), acts in _rows_by_token(cache.batches(50, split="all")).items():
            torch.testing.assert_close(acts[name], hidden[seq, pos], rtol=1e-5, atol=1e-5)


def test_stream_yields_the_rows_of_a_harvest(tiny_gpt2, tmp_path, make_chunks):
    chunks = make_chunks(12)
    harvest(tiny_gpt2, chunks, ["resid.0", "attn_out.2"], tmp_path, FP32)
    stored = _rows_by_token(ActivationCache.open(tmp_path).batches(64, split="all"))
    streamed_batches = list(stream_batches(tiny_gpt2, chunks, ["resid.0", "attn_out.2"],
                                           batch_size=32, forward_batch_size=4,
                                           buffer_rows=64, seed=3))
    assert all(len(b) == 32 for b in streamed_batches[:-1])
    streamed = _rows_by_token(streamed_batches)
    assert streamed.keys() == stored.keys()
    for key, acts in streamed.items():
        for name, row in acts.items():
            torch.testing.assert_close(row, stored[key][name], rtol=1e-6, atol=1e-6)
    first_seqs = streamed_batches[0].seq_ids
    assert len(set(first_seqs.tolist())) > 2  # the buffer mixes several sequences


@pytest.mark.slow
def test_gemma_capture_and_harvest(gemma, tmp_path, make_chunks):
    from sparselens.models.hookpoints import capture, resolve

    ids = torch.randint(3, 20_000, (2, 40), generator=torch.Generator().manual_seed(0))
    ids[:, 0] = gemma.tokenizer.bos_token_id
    (hp,) = resolve(gemma.model, "resid.6")
    got = capture(gemma.model, [hp], input_ids=ids)[hp]
    hidden = gemma.model(input_ids=ids, output_hidden_states=True).hidden_states[7]
    torch.testing.assert_close(got, hidden, rtol=0, atol=0)

    chunks = make_chunks(8, length=40, vocab=20_000, bos_id=gemma.tokenizer.bos_token_id)
    harvest(gemma, chunks, ["resid.6"], tmp_path,
            HarvestConfig(batch_size=4, shard_tokens=150, progress=False))
    cache = ActivationCache.open(tmp_path)
    cache.verify()
    assert cache.width("resid.6") == 640 and cache.n_tokens == 8 * 39
    rows = torch.cat([b.acts["resid.6"] for b in cache.batches(100, split="all")])
    assert rows.shape == (8 * 39, 640) and torch.isfinite(rows).all()


@pytest.fixture(scope="module")
def tiny_llama_dir(tmp_path_factory, tiny_llama):
    """The tiny Llama saved as a Hugging Face folder, loadable by `load_model`."""
    folder = tmp_path_factory.mktemp("tiny-llama")
    tiny_llama.model.save_pretrained(folder)
    tiny_llama.tokenizer.save_pretrained(folder)
    return folder


def test_cli_harvest_from_a_text_corpus(tiny_llama_dir, tmp_path, capsys):
    from sparselens.cli.main import main

    corpus = tmp_path / "texts"
    corpus.mkdir()
    for index in range(4):
        (corpus / f"doc{index}.txt").write_text(f"Document {index}. " + "Some words here. " * 30)
    out = tmp_path / "cache"
    args = ["harvest", str(tiny_llama_dir), "--hookpoints", "resid.1", "mlp_in.3", "--out",
            str(out), "--corpus.source", "text", "--corpus.path", str(corpus),
            "--context-len", "16", "--n-tokens", "200", "--shard-tokens", "64",
            "--batch-size", "2", "--storage-dtype", "float16"]
    assert main(args) == 0
    assert "tokens from" in capsys.readouterr().out
    cache = ActivationCache.open(out)
    assert cache.hookpoints == ["resid.1", "mlp_in.3"] and 200 <= cache.n_tokens < 230
    assert cache.manifest["corpus"]["source"] == "text"
    assert cache.manifest["storage_dtype"] == "float16"
    assert main(args) == 0  # a finished harvest is left as it is
    assert ActivationCache.open(out).manifest == cache.manifest

    bad = ["harvest", str(tiny_llama_dir), "--hookpoints", "model.layers.1.mlpp", "--out",
           str(tmp_path / "bad"), "--corpus.source", "text", "--corpus.path", str(corpus)]
    assert main(bad) == 1
    assert "closest valid names: model.layers.1.mlp" in capsys.readouterr().err
