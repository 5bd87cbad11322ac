"""Harvest a corpus through one model (or several on the same tokens) into an activation cache,
the first stage of `run` and `diff`; resumes an interrupted harvest in the same folder."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from sparselens.data.cache import ActivationCache
from sparselens.data.chunking import chunk_texts
from sparselens.data.corpus import CorpusConfig, describe, iter_texts
from sparselens.data.harvest import HarvestConfig, harvest
from sparselens.models.source import LoadedModel


def harvest_texts(models: LoadedModel | Mapping[str, LoadedModel], corpus: CorpusConfig,
                  hookpoints: Sequence[str], out: str | Path, context_len: int,
                  settings: HarvestConfig) -> dict[str, Any]:
    """Chunk `corpus` with the (first) model's tokenizer and harvest `hookpoints` into `out`;
    returns the manifest (also under `torchrun`, where the ranks share the shards)."""
    first = models if isinstance(models, LoadedModel) else next(iter(models.values()))
    chunks = chunk_texts(iter_texts(corpus), first.tokenizer, context_len)
    return harvest(models, chunks, list(hookpoints), out, settings, corpus=describe(corpus))


def harvest_corpus(models: LoadedModel | Mapping[str, LoadedModel], corpus: CorpusConfig,
                   hookpoints: Sequence[str], out: str | Path, context_len: int,
                   settings: HarvestConfig) -> ActivationCache:
    """`harvest_texts`, then the finished cache opened for reading (one process)."""
    harvest_texts(models, corpus, hookpoints, out, context_len, settings)
    return ActivationCache.open(out)
