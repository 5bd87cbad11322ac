"""Aligned sources of one cache as the input of a multi-source dictionary.

A harvest of several hookpoints of one model, or of the same hookpoint of two models on the
same tokens (``harvest({"base": a, "chat": b}, ...)``, names ``base/resid.6``), stores rows
aligned by token: row i of every tensor is the same (sequence, position). Crosscoders and
multi-layer SAEs read all sources of a token at once, so these adapters put them side by side
under one name (``base/resid.6+chat/resid.6``, see `sparselens.dictionaries.stacked`) as a
``(B, n_sources * width)`` matrix: the trainer, evaluation and interpretation then handle it like
any other hookpoint. `mixed_layer_rows` instead makes every (token, layer) its own row, for
training any variant of the family on all layers at once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING

import torch

from sparselens.data.batch import ActivationBatch
from sparselens.dictionaries.stacked import stacked_name

if TYPE_CHECKING:
    from sparselens.data.cache import ActivationCache, Split


def stack_batch(batch: ActivationBatch, sources: Sequence[str],
                name: str | None = None) -> ActivationBatch:
    """`batch` with only the sources, side by side: ``acts[name]`` is ``(B, n * width)``."""
    missing = [s for s in sources if s not in batch.acts]
    if missing:
        raise ValueError(f"the batch has no activations for {missing}; it has "
                         f"{sorted(batch.acts)}")
    widths = {s: int(batch.acts[s].shape[-1]) for s in sources}
    if len(set(widths.values())) != 1:
        raise ValueError(f"sources to stack must have one width, got {widths}")
    stacked = torch.cat([batch.acts[s] for s in sources], dim=-1)
    return ActivationBatch(acts={name or stacked_name(list(sources)): stacked},
                           token_ids=batch.token_ids, seq_ids=batch.seq_ids,
                           positions=batch.positions)


def stack_sources(batches: Iterable[ActivationBatch], sources: Sequence[str],
                  name: str | None = None) -> Iterator[ActivationBatch]:
    """`stack_batch` over a stream of batches."""
    for batch in batches:
        yield stack_batch(batch, sources, name)


def stacked_cache_data(cache: ActivationCache, sources: Sequence[str], batch_size: int, *,
                       split: Split = "train", seed: int = 0
                       ) -> Callable[[int], Iterator[ActivationBatch]]:
    """A trainer data factory: ``data(skip_batches)`` -> endless stacked batches of `split`.

    `sources` may use any spelling the cache resolves; the stacked name uses the cache's names
    (``stacked_name([cache.resolve(s) for s in sources])``).
    """
    name = stacked_name([cache.resolve(s) for s in sources])

    def data(skip_batches: int) -> Iterator[ActivationBatch]:
        return cache.batches(batch_size, hookpoints=[name], split=split, seed=seed,
                             skip_batches=skip_batches, epochs=None)

    return data


def mixed_layer_rows(batches: Iterable[ActivationBatch], hookpoints: Sequence[str],
                     name: str | None = None, seed: int = 0) -> Iterator[ActivationBatch]:
    """Every (token, hookpoint) as its own row, ``(B * n, width)``, in a seeded random order.

    Token ids, sequence ids and positions repeat for the rows of one token. The rows of a batch
    are the same B tokens at every layer, as in Lawson et al.'s training batches.
    """
    gen = torch.Generator().manual_seed(seed)
    key = name or stacked_name(list(hookpoints))
    for batch in batches:
        stacked = stack_batch(batch, hookpoints, key).acts[key]
        rows = stacked.unflatten(-1, (len(hookpoints), -1)).flatten(0, 1)
        order = torch.randperm(rows.shape[0], generator=gen)
        token = torch.arange(len(batch)).repeat_interleave(len(hookpoints))[order]
        yield ActivationBatch(acts={key: rows[order]}, token_ids=batch.token_ids[token],
                              seq_ids=batch.seq_ids[token], positions=batch.positions[token])
