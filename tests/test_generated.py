"""Self-generated corpus: deterministic given the seed, resumable to the same documents."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from sparselens.data import generated
from sparselens.data.corpus import CorpusConfig, describe, iter_texts
from sparselens.data.generated import GenerationConfig, generate_corpus, sample_next
from sparselens.models.source import LoadedModel
from test_chunking import word_tokenizer


@pytest.fixture(scope="module")
def tiny() -> LoadedModel:
    tok = word_tokenizer()
    config = LlamaConfig(vocab_size=len(tok), hidden_size=16, intermediate_size=32,
                         num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2,
                         max_position_embeddings=64, bos_token_id=tok.bos_token_id,
                         eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).eval().requires_grad_(False)
    return LoadedModel(model=model, tokenizer=tok, name="tiny-llama")


def config(path: Path, seed: int = 0, **generation: object) -> CorpusConfig:
    settings = {"documents": 7, "length": 10, "batch_size": 3} | generation
    return CorpusConfig(source="generated", path=str(path), seed=seed,
                        generation=GenerationConfig(**settings))


def shard_texts(folder: Path) -> list[str]:
    return [p.read_text() for p in sorted(folder.glob("batch-*.jsonl"))]


def test_generation_is_deterministic_and_readable_as_a_corpus(tiny: LoadedModel,
                                                              tmp_path: Path) -> None:
    generate_corpus(tiny, config(tmp_path / "a"))
    generate_corpus(tiny, config(tmp_path / "b"))
    assert shard_texts(tmp_path / "a") == shard_texts(tmp_path / "b")
    assert len(shard_texts(tmp_path / "a")) == 3  # 7 documents in batches of 3
    records = [json.loads(line) for text in shard_texts(tmp_path / "a")
               for line in text.splitlines()]
    assert len(records) == 7
    assert all(len(r["ids"]) <= 10 and tiny.tokenizer.eos_token_id not in r["ids"]
               for r in records)
    assert all(r["text"] == tiny.tokenizer.decode(r["ids"], skip_special_tokens=True)
               for r in records)
    texts = list(iter_texts(config(tmp_path / "a")))
    assert texts == [r["text"] for r in records if r["text"].strip()]
    assert describe(config(tmp_path / "a"))["documents_done"] == 7
    generate_corpus(tiny, config(tmp_path / "c", seed=1))
    assert shard_texts(tmp_path / "c") != shard_texts(tmp_path / "a")


def test_interrupted_generation_resumes_to_the_same_documents(
        tiny: LoadedModel, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    generate_corpus(tiny, config(tmp_path / "whole"))
    real, calls = generated.sample_tokens, []

    def crash_on_second_batch(*args: object, **kwargs: object) -> torch.Tensor:
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(generated, "sample_tokens", crash_on_second_batch)
    with pytest.raises(KeyboardInterrupt):
        generate_corpus(tiny, config(tmp_path / "resumed"))
    assert len(shard_texts(tmp_path / "resumed")) == 1
    with pytest.raises(ValueError, match="holds 3 of 7 documents"):
        list(iter_texts(config(tmp_path / "resumed")))
    assert len(list(iter_texts(CorpusConfig(source="generated", path=str(tmp_path / "resumed"),
                                            max_documents=2)))) <= 2
    monkeypatch.setattr(generated, "sample_tokens", real)
    generate_corpus(tiny, config(tmp_path / "resumed"))
    assert shard_texts(tmp_path / "resumed") == shard_texts(tmp_path / "whole")


def test_resuming_with_other_settings_or_into_a_foreign_folder_is_refused(
        tiny: LoadedModel, tmp_path: Path) -> None:
    generate_corpus(tiny, config(tmp_path / "a"))
    with pytest.raises(ValueError, match="resume with the same settings"):
        generate_corpus(tiny, config(tmp_path / "a", temperature=0.5))
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="not empty"):
        generate_corpus(tiny, config(tmp_path / "other"))


def test_sampling_honours_temperature_and_top_p() -> None:
    logits = torch.tensor([[0.0, 3.0, 1.0, 2.0]]).repeat(200, 1)
    gen = torch.Generator().manual_seed(0)
    assert sample_next(logits, 0.0, 1.0, gen).eq(1).all()
    assert sample_next(logits, 1.0, 0.3, gen).eq(1).all()  # top token alone holds > 0.3
    nucleus = sample_next(logits, 1.0, 0.8, gen)  # tokens 1 and 3 hold about 0.91
    assert set(nucleus.tolist()) == {1, 3}
    assert len(set(sample_next(logits, 1.0, 1.0, gen).tolist())) == 4


@pytest.mark.parametrize(("settings", "message"), [
    ({"documents": 0}, "must be >= 1"),
    ({"temperature": -1.0}, "temperature"),
    ({"top_p": 0.0}, "top_p"),
])
def test_bad_generation_settings_are_refused(settings: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        GenerationConfig(**settings)


def test_cached_sampling_loop_matches_transformers_greedy_generate(tiny: LoadedModel) -> None:
    """The KV-cache loop feeds the model correctly: greedy output equals ``generate``'s."""
    prompt = [tiny.tokenizer.bos_token_id, 5, 6]
    greedy = GenerationConfig(temperature=0.0, length=8)
    ours = generated.sample_tokens(tiny.model, prompt, 2, 8, greedy, None, torch.Generator())
    theirs = tiny.model.generate(torch.tensor([prompt] * 2), do_sample=False, max_new_tokens=8,
                                 min_new_tokens=8, eos_token_id=None, pad_token_id=0)
    assert torch.equal(ours, theirs[:, len(prompt):])
