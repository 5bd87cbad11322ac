"""The example store kept next to a dictionary (``DICTIONARY/examples/``): collected once
from an activation cache (both passes, with the token table so contexts render without the
cache), then reused by the explainer, the report and the viewer."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

from sparselens.data.batch import ActivationBatch
from sparselens.dictionaries.base import Dictionary
from sparselens.interpretation.examples import EXAMPLES_META, FeatureExamples, collect_examples
from sparselens.interpretation.image_examples import collect_image_heatmaps, is_image_corpus
from sparselens.interpretation.windows import collect_windows

STORE_FOLDER = "examples"


def store_folder(dictionary_folder: str | os.PathLike) -> Path:
    return Path(dictionary_folder) / STORE_FOLDER


def load_or_collect(dictionary_folder: str | os.PathLike, dictionary: Dictionary,
                    cache_path: str | os.PathLike | None, *, max_tokens: int | None = 500_000,
                    batch_size: int = 4096, n_top: int = 20, n_quantile_samples: int = 40,
                    n_random: int = 20, before: int = 24, after: int = 8) -> FeatureExamples:
    """The store of `dictionary`, collected from `cache_path` on first use."""
    folder = store_folder(dictionary_folder)
    if (folder / EXAMPLES_META).is_file():
        examples = FeatureExamples.load(folder)
        if examples.n_features != dictionary.cfg.n_latents:
            raise ValueError(f"{folder} describes {examples.n_features} latents, the dictionary "
                             f"has {dictionary.cfg.n_latents}; delete {folder} to collect again")
        return examples
    if cache_path is None:
        raise ValueError(f"no example store in {folder} yet: pass --cache CACHE (the activation "
                         "cache the dictionary was trained on) to collect one")
    from sparselens.data.cache import ActivationCache

    cache = ActivationCache.open(cache_path)
    hookpoint = cache.resolve(dictionary.cfg.hookpoint or cache.hookpoints[0])

    def batches() -> Iterator[ActivationBatch]:
        seen = 0
        for batch in cache.batches(batch_size, hookpoints=[hookpoint], split="all",
                                   shuffle=False):
            if max_tokens is not None and seen >= max_tokens:
                return
            seen += len(batch)
            yield batch

    examples = collect_examples(dictionary, batches(), hookpoint, n_top=n_top,
                                n_quantile_samples=n_quantile_samples, n_random=n_random)
    examples = collect_windows(dictionary, examples, batches(), before=before, after=after)
    examples.tokens = cache.tokens()
    examples.save(folder)
    corpus = cache.manifest.get("corpus")
    if is_image_corpus(corpus):  # which image and patch each example is, with heat maps
        collect_image_heatmaps(dictionary, examples, batches(), corpus).save(folder)
    return examples
