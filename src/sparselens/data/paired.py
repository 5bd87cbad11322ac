"""Aligned sources of one cache as the input of a multi-source dictionary.

A harvest of several hookpoints of one model, or of the same hookpoint of two models on the
same tokens (``harvest({"base": a, "chat": b}, ...)``, names ``base/resid.6``), stores rows
aligned by token: row i of every tensor is the same (sequence, position). Crosscoders and
multi-layer SAEs read all sources of a token at once, so these adapters put them side by side
under one name (``base/resid.6+chat/resid.6``, see `sparselens.data.batch.join_sources`) as a
``(B, n_sources * width)`` matrix: the trainer, evaluation and interpretation then handle it like
any other hookpoint. `mixed_layer_rows` instead makes every (token, layer) its own row, for
training any variant of the family on all layers at once.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import replace

import torch

from sparselens.data.batch import ActivationBatch, join_sources, stack_acts


def stack_batch(batch: ActivationBatch, sources: Sequence[str],
                name: str | None = None) -> ActivationBatch:
    """`batch` with only the sources, side by side: ``acts[name]`` is ``(B, n * width)``."""
    key = join_sources(sources)
    stacked = stack_acts(batch, [key])
    return stacked if name is None else replace(stacked, acts={name: stacked.acts[key]})


def stack_sources(batches: Iterable[ActivationBatch], sources: Sequence[str],
                  name: str | None = None) -> Iterator[ActivationBatch]:
    """`stack_batch` over a stream of batches."""
    for batch in batches:
        yield stack_batch(batch, sources, name)


def mixed_layer_rows(batches: Iterable[ActivationBatch], hookpoints: Sequence[str],
                     name: str | None = None, seed: int = 0) -> Iterator[ActivationBatch]:
    """Every (token, hookpoint) as its own row, ``(B * n, width)``, in a seeded random order.

    Token ids, sequence ids and positions repeat for the rows of one token. The rows of a batch
    are the same B tokens at every layer, as in Lawson et al.'s training batches.
    """
    gen = torch.Generator().manual_seed(seed)
    key = name or join_sources(hookpoints)
    for batch in batches:
        stacked = stack_batch(batch, hookpoints, key).acts[key]
        rows = stacked.unflatten(-1, (len(hookpoints), -1)).flatten(0, 1)
        order = torch.randperm(rows.shape[0], generator=gen)
        token = torch.arange(len(batch)).repeat_interleave(len(hookpoints))[order]
        yield ActivationBatch(acts={key: rows[order]}, token_ids=batch.token_ids[token],
                              seq_ids=batch.seq_ids[token], positions=batch.positions[token])
