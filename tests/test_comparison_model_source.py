"""`datadiff` without --model: the model comes from the dictionary, else from the one cache
beside it that holds its hookpoint; otherwise the error says what was found and what to pass."""

from __future__ import annotations

import json

import pytest

from sparselens.comparison.model_source import infer_model
from sparselens.dictionaries.base import build


def _cache(folder, model, hookpoint) -> None:
    folder.mkdir(parents=True)
    (folder / "manifest.json").write_text(json.dumps({
        "format": "sparselens-activation-cache", "model": model,
        "hookpoints": [{"name": hookpoint, "model": None}]}))


def test_model_recorded_in_the_dictionary_wins(tmp_path) -> None:
    sae = build("topk", d_in=8, n_latents=16, k=2, hookpoint="resid.1", model="m0")
    assert infer_model(tmp_path / "sae", sae) == ("m0", "the dictionary's config")


def test_model_from_the_cache_beside_the_dictionary(tmp_path) -> None:
    _cache(tmp_path / "run" / "cache", "gemma-3-270m", "resid.6")
    _cache(tmp_path / "run" / "other", "other-model", "resid.3")  # another hookpoint: ignored
    sae = build("topk", d_in=8, n_latents=16, k=2, hookpoint="resid.6")
    model, where = infer_model(tmp_path / "run" / "sae", sae)
    assert model == "gemma-3-270m" and "run/cache/manifest.json" in where


def test_no_or_several_models_is_a_clear_error(tmp_path) -> None:
    sae = build("topk", d_in=8, n_latents=16, k=2, hookpoint="resid.6")
    with pytest.raises(ValueError, match="no activation cache holding resid.6.*pass --model"):
        infer_model(tmp_path / "lonely" / "sae", sae)
    _cache(tmp_path / "run" / "c1", "model-a", "resid.6")
    _cache(tmp_path / "run" / "c2", "model-b", "resid.6")
    with pytest.raises(ValueError, match=r"several models \(model-a, model-b\).*--model"):
        infer_model(tmp_path / "run" / "sae", sae)
