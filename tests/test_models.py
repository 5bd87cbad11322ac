"""Model loading: local folders, dtypes, clear errors, and the cached dequantised Gemma."""

from __future__ import annotations

import pytest
import torch

from sparselens.models import source
from sparselens.models.source import load_model, parse_dtype, resolve_model_dir


def test_parse_dtype_names_and_error():
    assert parse_dtype("bf16") is torch.bfloat16 and parse_dtype("Float32") is torch.float32
    assert parse_dtype(torch.float16) is torch.float16
    with pytest.raises(ValueError, match="unknown dtype 'half-ish'; use one of"):
        parse_dtype("half-ish")


def test_load_a_local_folder_in_each_dtype(tiny_gpt2, tmp_path):
    tiny_gpt2.model.save_pretrained(tmp_path)
    tiny_gpt2.tokenizer.save_pretrained(tmp_path)
    ids = torch.tensor([[1, 40, 50, 60]])
    want = tiny_gpt2.model(input_ids=ids).logits
    loaded = load_model(str(tmp_path))
    assert loaded.name == str(tmp_path) and not loaded.model.training
    assert not any(p.requires_grad for p in loaded.model.parameters())
    torch.testing.assert_close(loaded.model(input_ids=ids).logits, want, rtol=0, atol=0)
    assert loaded.tokenizer("ab").input_ids == tiny_gpt2.tokenizer("ab").input_ids
    half = load_model(str(tmp_path), dtype="bfloat16")
    assert next(half.model.parameters()).dtype is torch.bfloat16
    assert half.device == torch.device("cpu")


def test_bad_model_sources_say_what_to_do(tmp_path):
    with pytest.raises(FileNotFoundError, match="neither an embedded name .* nor a local"):
        resolve_model_dir(str(tmp_path / "missing"))
    with pytest.raises(FileNotFoundError, match="has no config.json"):
        resolve_model_dir(str(tmp_path))


@pytest.mark.slow
def test_second_load_reuses_the_dequantised_copy(gemma, monkeypatch):
    """`gemma` already loaded (and, on a fresh machine, dequantised) once this session."""

    def refuse(*_args, **_kwargs):
        raise AssertionError("dequantised again although a cached copy exists")

    monkeypatch.setattr(source, "_dequantise_to_dir", refuse)
    folder = resolve_model_dir("gemma-3-270m")
    assert folder.parent == source.cache_dir() / "models"
    assert folder.name.startswith("gemma-3-270m")
    assert (folder / "COMPLETE").exists()
    again = load_model("gemma-3-270m", dtype="bfloat16")
    assert type(again.model).__name__ == type(gemma.model).__name__
    assert next(again.model.parameters()).dtype is torch.bfloat16


def test_gguf_path_is_dequantised_once_into_the_cache(tmp_path, monkeypatch):
    """The .gguf branch, with the (minutes-long) dequantisation replaced by a stand-in."""
    monkeypatch.setenv(source.CACHE_ENV, str(tmp_path / "cache"))
    gguf = tmp_path / "tiny.gguf"
    gguf.write_bytes(b"GGUF" + bytes(60))
    calls = []

    def fake_dequantise(path, out_dir):
        calls.append(path)
        out_dir.mkdir(parents=True)
        (out_dir / "COMPLETE").write_text("ok\n")

    monkeypatch.setattr(source, "_dequantise_to_dir", fake_dequantise)
    first = resolve_model_dir(str(gguf))
    assert first == tmp_path / "cache" / "models" / "tiny-64" and calls == [gguf.resolve()]
    assert resolve_model_dir(str(gguf)) == first and len(calls) == 1


@pytest.mark.slow
def test_load_by_gguf_path():
    """Loading the assembled file by path shares the embedded model's dequantised copy."""
    path = source.cache_dir() / "gguf" / "gemma-3-270m-q4_k_m.gguf"
    if not path.exists():
        source._embedded_gguf("gemma-3-270m")
    loaded = load_model(str(path))
    assert resolve_model_dir(str(path)) == resolve_model_dir("gemma-3-270m")
    ids = torch.tensor([[loaded.tokenizer.bos_token_id, 651, 6037]])
    logits = loaded.model(input_ids=ids).logits
    assert logits.shape == (1, 3, loaded.model.config.vocab_size)
    assert torch.isfinite(logits).all()
