"""The batch streams of a run, made from a cache and its `Sites` view, one way everywhere.

- `training_data`: the trainer's factory ``data(skip_batches)``: endless, seeded, shuffled
  *full* batches of the train split (``drop_last``: every step has ``batch_size`` rows, so
  step counts, schedules and exact resume are the same for a plain SAE, a transcoder and a
  crosscoder);
- `split_batches`: repeatable, unshuffled batches of one split, cut at ``max_tokens``, for
  evaluation and interpretation (two passes see the same rows);
- `heldout_sequences` / `heldout_chunks`: the held-out token sequences for the spliced-in
  (full-forward) evaluations.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import Tensor

from sparselens.data.batch import ActivationBatch
from sparselens.data.cache import ActivationCache, Split
from sparselens.data.chunking import Chunk, special_token_ids
from sparselens.data.mixing import take_rows
from sparselens.data.sites import Sites

DataFactory = Callable[[int], Iterator[ActivationBatch]]
"""``data(skip_batches)`` -> the training batches from position `skip_batches` on; deterministic,
so a resumed run sees exactly the batches the interrupted one would have seen."""

Batches = Callable[[], Iterator[ActivationBatch]]
"""``batches()`` -> the same batches on every call."""


def training_data(cache: ActivationCache, sites: Sites | None, batch_size: int,
                  seed: int = 0) -> DataFactory:
    """Endless, seeded, full batches of the train split carrying `sites` (every stored
    hookpoint for None), resumable by batch count."""
    if cache.n_rows("train") < batch_size:
        raise ValueError(f"the train split of {cache.folder} has {cache.n_rows('train')} "
                         f"tokens, fewer than one batch ({batch_size}); lower --batch-size or "
                         "harvest more tokens")
    names = sites.names if sites is not None else None

    def data(skip_batches: int) -> Iterator[ActivationBatch]:
        # in the storage dtype: the trainer casts on its device, not here on the host
        return cache.batches(batch_size, hookpoints=names, split="train", seed=seed,
                             skip_batches=skip_batches, epochs=None, drop_last=True,
                             dtype=None)

    return data


def split_batches(cache: ActivationCache, sites: Sites, batch_size: int = 4096,
                  split: Split = "heldout", max_tokens: int | None = None) -> Batches:
    """Unshuffled batches of `split` carrying `sites`, at most `max_tokens` rows in all (the
    last batch is cut to fit); every call yields the same rows."""
    if batch_size < 1 or (max_tokens is not None and max_tokens < 1):
        raise ValueError(f"batch_size and max_tokens must be positive, got {batch_size} and "
                         f"{max_tokens}")

    def batches() -> Iterator[ActivationBatch]:
        seen = 0
        for batch in cache.batches(batch_size, hookpoints=sites.names, split=split,
                                   shuffle=False):
            if max_tokens is not None:
                if seen >= max_tokens:
                    return
                batch = take_rows(batch, torch.arange(min(len(batch), max_tokens - seen)))
            seen += len(batch)
            yield batch

    return batches


def heldout_sequences(cache: ActivationCache, max_sequences: int | None = None) -> Tensor:
    """``(N, context_len)`` token ids of the first held-out sequences (specials included)."""
    tokens = cache.tokens()
    heldout = tokens[cache.is_heldout(torch.arange(tokens.shape[0]))][:max_sequences]
    if heldout.shape[0] == 0:
        raise ValueError(f"the cache {cache.folder} has no held-out sequences; re-harvest with "
                         "a positive held-out fraction, or skip the spliced-in evaluation")
    return heldout


def heldout_chunks(cache: ActivationCache, tokenizer: Any,
                   max_sequences: int | None = None) -> list[Chunk]:
    """`heldout_sequences` as chunks, with the tokenizer's special tokens marked."""
    specials = torch.tensor(special_token_ids(tokenizer), dtype=torch.long)
    return [Chunk(ids=ids, special=torch.isin(ids, specials), doc_id=-1)
            for ids in heldout_sequences(cache, max_sequences)]

