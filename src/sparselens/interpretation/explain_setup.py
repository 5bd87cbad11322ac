"""Wiring for `sparselens explain`: which language model to use, and the dictionary's example
store, tokenizer and output folder."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from sparselens.interpretation.llm.base import LLMClient

OUTPUT_FOLDER = "explanations"


@contextlib.contextmanager
def open_llm(spec: str, *, model: str | None = None, api_key: str | None = None,
             concurrency: int = 4, timeout: float = 300.0, retries: int = 4,
             log_dir: str | os.PathLike | None = None, slots: int = 1) -> Iterator[LLMClient]:
    """A client for `spec`:

    - ``local``: the packaged explainer (`model` picks which, default Qwen2.5-Coder-1.5B)
      served by llama.cpp's server on 127.0.0.1 for the duration of the block, with
      `slots` requests decoded together;
    - a ``.gguf`` file: that model, served the same way;
    - ``transformers``: the packaged explainer (or the model folder / GGUF in `model`) run in
      this process with transformers;
    - an ``http(s)://`` URL: any OpenAI-compatible server (`model`, `api_key` or the
      SPARSELENS_LLM_* environment variables).
    """
    from sparselens.interpretation.llm.models import EXPLAINERS, explainer_gguf

    if spec.startswith(("http://", "https://")):
        from sparselens.interpretation.llm.openai_client import OpenAIClient

        yield OpenAIClient(spec, model, api_key, concurrency=concurrency, timeout=timeout,
                           retries=retries)
        return
    if spec == "transformers":
        from sparselens.interpretation.llm.transformers_client import TransformersClient

        source = (explainer_gguf(model) if model is None or model in EXPLAINERS
                  else Path(model)) if model else explainer_gguf()
        yield TransformersClient(source)
        return
    if spec == "local" or spec.endswith(".gguf"):
        from sparselens.interpretation.llm.server import LocalServer

        gguf = explainer_gguf(model) if spec == "local" and model else (
            explainer_gguf() if spec == "local" else Path(spec).expanduser())
        log = Path(log_dir) / "llm_server.log" if log_dir else None
        with LocalServer(gguf, log=log, slots=slots) as server:
            # one request per slot at most: with two slots and one request in flight, the
            # explainer's and the judge's prompts keep a slot (and its prompt cache) each
            yield server.client(concurrency=min(concurrency, slots), timeout=timeout,
                                retries=retries)
        return
    raise ValueError(f"--llm {spec!r} is not 'local', 'transformers', a .gguf file or an "
                     "http(s):// URL of an OpenAI-compatible server")


def default_cache(checkpoint: Path) -> Path | None:
    """The activation cache beside a `sparselens run` output (``RUN/sae`` -> ``RUN/cache``)."""
    for folder in (checkpoint.parent, checkpoint.parent.parent.parent):
        candidate = folder / "cache"
        if (candidate / "manifest.json").is_file():
            return candidate
    return None


def store_tokenizer(checkpoint: Path, cache: Path | None, tokenizer: str | None) -> object:
    """The tokenizer named by `tokenizer`, else by the cache manifest's model."""
    if tokenizer:
        return load_tokenizer(tokenizer)
    if cache is not None:
        from sparselens.data.manifest import read_manifest

        model = read_manifest(cache).get("model")
        if isinstance(model, str):
            return load_tokenizer(model)
    raise ValueError(f"cannot tell which tokenizer {checkpoint}'s contexts use: pass "
                     "--tokenizer (an embedded model name or a local model folder)")


def load_tokenizer(source: str) -> object:
    """A Hugging Face tokenizer from a local folder or an embedded model name (no network)."""
    from transformers import AutoTokenizer

    from sparselens.models.source import resolve_model_dir

    path = Path(source).expanduser()
    return AutoTokenizer.from_pretrained(path if path.is_dir() else resolve_model_dir(source))
