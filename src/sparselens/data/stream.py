"""Stream activations straight from the model, without a cache on disk.

Useful when a cache would be larger than the disk or when a dictionary is trained once. Rows
of several forward passes fill a shuffle buffer before batches are drawn from it, because
consecutive tokens of one context are strongly correlated. Rows, sequence ids and positions
are exactly those a harvest of the same chunks would store (special tokens left out).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from itertools import islice

import torch

from sparselens.core.dtypes import parse_dtype
from sparselens.data.batch import ActivationBatch
from sparselens.data.mixing import Window, mix
from sparselens.data.taps import ChunkLike, Tap, make_taps, read_chunks
from sparselens.models.source import LoadedModel


def stream_batches(models: LoadedModel | Mapping[str, LoadedModel], chunks: Iterable[ChunkLike],
                   hookpoints: Sequence[str], batch_size: int,
                   dtype: str | torch.dtype = torch.float32, seed: int = 0,
                   shuffle: bool = True, forward_batch_size: int = 8,
                   buffer_rows: int = 16384) -> Iterator[ActivationBatch]:
    """`ActivationBatch`es of `batch_size` rows read live from the model(s).

    ``forward_batch_size`` sequences go through the model at a time; batches are drawn from
    windows of at least ``buffer_rows`` rows. Each chunk is read once; the last batch may be
    smaller. Names follow `sparselens.data.harvest.harvest` (``label/hookpoint`` for a
    ``{label: model}`` mapping).
    """
    if forward_batch_size < 1 or buffer_rows < 1:
        raise ValueError(f"forward_batch_size and buffer_rows must be positive, got "
                         f"{forward_batch_size} and {buffer_rows}")
    taps = make_taps(models, hookpoints)
    cast = parse_dtype(dtype)
    gen = torch.Generator().manual_seed(seed) if shuffle else None
    windows = _windows(taps, iter(chunks), forward_batch_size, buffer_rows)
    for batch in mix(windows, batch_size, gen):
        yield batch.to("cpu", cast)


def _windows(taps: list[Tap], chunks: Iterator[ChunkLike], forward_batch_size: int,
             buffer_rows: int) -> Iterator[Window]:
    """Windows of consecutive forward passes holding at least `buffer_rows` rows."""
    next_seq, next_row = 0, 0
    parts: list[ActivationBatch] = []
    while batch := list(islice(chunks, forward_batch_size)):
        parts.append(read_chunks(taps, batch, next_seq).rows)
        next_seq += len(batch)
        if sum(len(p) for p in parts) >= buffer_rows:
            yield _loaded(parts, next_row)
            next_row += sum(len(p) for p in parts)
            parts = []
    if parts:
        yield _loaded(parts, next_row)


def _loaded(parts: list[ActivationBatch], first_row: int) -> Window:
    n_rows = sum(len(p) for p in parts)
    return Window(ids=torch.arange(first_row, first_row + n_rows), load=lambda: parts)
