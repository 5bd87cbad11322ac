"""A shuffle buffer over windows of rows, with exact skipping for resumed training.

Consecutive tokens are strongly correlated, so batches are drawn from a *window* of many
rows (a few cache shards, or several forward passes) in random order. Memory is bounded by
one window, not by the data size. Rows left over after a window's full batches carry into
the next window, so every row is yielded exactly once per pass.

Skipping (`skip_batches`) replays the same random draws on row *ids* only and loads data
from the first window that still has a batch to yield, so a resumed trainer continues with
exactly the batches it would have seen, without reading the data it already consumed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from itertools import chain

import torch
from torch import Tensor

from sparselens.data.batch import ActivationBatch


@dataclass
class Window:
    """Rows that are loaded together: their global ids, and how to load them in that order
    (as consecutive parts, e.g. one per shard, so only one part is in flight at a time)."""

    ids: Tensor
    load: Callable[[], Iterable[ActivationBatch]]


def concat_rows(parts: list[ActivationBatch]) -> ActivationBatch:
    """Stack the rows of several batches (all with the same hookpoints)."""
    if len(parts) == 1:
        return parts[0]
    return ActivationBatch(
        acts={name: torch.cat([p.acts[name] for p in parts]) for name in parts[0].acts},
        token_ids=torch.cat([p.token_ids for p in parts]),
        seq_ids=torch.cat([p.seq_ids for p in parts]),
        positions=torch.cat([p.positions for p in parts]))


def fill_rows(n_rows: int, parts: Iterable[ActivationBatch]) -> ActivationBatch:
    """Concatenate `parts` into one preallocated batch of `n_rows` rows. Unlike
    `concat_rows` it never holds all parts and the result at once: peak memory is the
    result plus one part."""
    out: ActivationBatch | None = None
    at = 0
    for part in parts:
        if out is None:
            out = ActivationBatch(
                acts={k: v.new_empty((n_rows, *v.shape[1:])) for k, v in part.acts.items()},
                token_ids=part.token_ids.new_empty(n_rows),
                seq_ids=part.seq_ids.new_empty(n_rows), positions=part.positions.new_empty(n_rows))
        rows = slice(at, at + len(part))
        for name, act in part.acts.items():
            out.acts[name][rows] = act
        out.token_ids[rows], out.seq_ids[rows] = part.token_ids, part.seq_ids
        out.positions[rows] = part.positions
        at += len(part)
    if out is None or at != n_rows:
        raise RuntimeError(f"expected {n_rows} rows, the parts held {at}")
    return out


def take_rows(batch: ActivationBatch, index: Tensor) -> ActivationBatch:
    """The rows `index` of `batch`, as a new batch."""
    return ActivationBatch(acts={name: t[index] for name, t in batch.acts.items()},
                           token_ids=batch.token_ids[index], seq_ids=batch.seq_ids[index],
                           positions=batch.positions[index])


def mix(windows: Iterable[Window], batch_size: int, generator: torch.Generator | None,
        gather: Callable[[Tensor], ActivationBatch] | None = None, skip_batches: int = 0,
        drop_last: bool = False) -> Iterator[ActivationBatch]:
    """Batches of `batch_size` rows drawn in random order from each window plus the carry.

    `generator=None` keeps the order. `gather(ids)` loads rows by global id; it is needed
    only when skipping ends inside a window whose carried-over rows were never loaded.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    carry_ids = torch.empty(0, dtype=torch.long)
    carry: ActivationBatch | None = None
    for window in windows:
        pool_ids = torch.cat([carry_ids, window.ids])
        order = (torch.randperm(len(pool_ids), generator=generator) if generator is not None
                 else torch.arange(len(pool_ids)))
        n_full = len(pool_ids) // batch_size
        tail = order[n_full * batch_size:]
        if skip_batches >= n_full:  # nothing to yield here: advance on ids only
            skip_batches -= n_full
            carry_ids, carry = pool_ids[tail], None
            continue
        if len(carry_ids) and carry is None:
            carry = _gather(gather, carry_ids)
        loaded = fill_rows(len(pool_ids), chain([carry] if len(carry_ids) else [], window.load()))
        carry = None
        for b in range(skip_batches, n_full):
            yield take_rows(loaded, order[b * batch_size:(b + 1) * batch_size])
        skip_batches = 0
        carry_ids, carry = pool_ids[tail], take_rows(loaded, tail)
        del loaded  # free this window before the next one is loaded
    if len(carry_ids) and not drop_last and skip_batches == 0:
        yield carry if carry is not None else _gather(gather, carry_ids)


def _gather(gather: Callable[[Tensor], ActivationBatch] | None, ids: Tensor) -> ActivationBatch:
    if gather is None:
        raise RuntimeError("skipping into a window with carried rows needs a `gather` function")
    return gather(ids)
