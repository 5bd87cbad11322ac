"""Read an activation cache: shuffled batches with bounded memory, exact resume, held-out split.

Batches are drawn from windows of ``buffer_shards`` shards visited in a seeded random order
(see `sparselens.data.mixing`), so memory is a few shards, not the cache. Each shard's sha256
is checked the first time this reader touches it; `verify` checks them all up front.
Because every shard stores train rows before held-out rows, a split is a row range per
shard, known from the manifest alone: planning batches (and skipping them) reads no data.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor

from sparselens.core.dtypes import parse_dtype
from sparselens.data.batch import (
    ActivationBatch,
    join_sources,
    split_sources,
    stack_acts,
)
from sparselens.data.manifest import read_manifest, shard_records
from sparselens.data.mixing import Window, concat_rows, mix, take_rows
from sparselens.data.shards import ACTS_PREFIX, read_rows, read_tensor, verify_shard
from sparselens.data.split import heldout_mask

Split = Literal["train", "heldout", "all"]
SPLITS = ("train", "heldout", "all")


@dataclass(frozen=True)
class _Plan:
    """The arguments of one `ActivationCache.batches` call that fix its batch order."""

    names: list[str]
    split: Split
    batch_size: int
    seed: int
    shuffle: bool
    buffer_shards: int
    drop_last: bool


class ActivationCache:
    """A harvested activation cache on disk (see `sparselens.data.harvest`)."""

    def __init__(self, folder: Path, manifest: dict[str, Any]) -> None:
        self.folder = folder
        self.manifest = manifest
        self._records = shard_records(manifest)
        sizes = torch.tensor([r.n_rows for r in self._records], dtype=torch.long)
        self._ends = sizes.cumsum(0)
        self._starts = self._ends - sizes
        self._verified: set[int] = set()
        self._aliases = _aliases(manifest["hookpoints"])

    @classmethod
    def open(cls, path: str | Path, allow_incomplete: bool = False) -> ActivationCache:
        """Open the cache in folder `path`. An interrupted harvest is refused unless
        `allow_incomplete` (its finished shards are valid, it is just shorter)."""
        folder = Path(path).expanduser()
        manifest = read_manifest(folder)
        if not manifest["complete"] and not allow_incomplete:
            raise ValueError(f"the harvest into {folder} did not finish ({len(manifest['shards'])}"
                             " shards written); run the same harvest again to resume it, or "
                             "open with allow_incomplete=True")
        return cls(folder, manifest)

    @property
    def hookpoints(self) -> list[str]:
        return [h["name"] for h in self.manifest["hookpoints"]]

    def width(self, hookpoint: str) -> int:
        """Width of a stored hookpoint, or the summed widths of a stack (``a+b``)."""
        name = self.resolve(hookpoint)
        return sum(next(int(h["width"]) for h in self.manifest["hookpoints"] if h["name"] == part)
                   for part in split_sources(name))

    def resolve(self, hookpoint: str) -> str:
        """The cache's name for `hookpoint`, which may also be given as its module path.

        A stack of stored hookpoints joined by ``+`` (``resid.2+resid.6``) resolves part by
        part; `batches` then yields the parts side by side under that name, so crosscoders and
        multi-layer SAEs train, evaluate and report from a cache like any dictionary."""
        if hookpoint not in self._aliases and len(split_sources(hookpoint)) > 1:
            return join_sources([self.resolve(part) for part in split_sources(hookpoint)])
        try:
            return self._aliases[hookpoint]
        except KeyError:
            raise ValueError(f"hookpoint {hookpoint!r} is not in the cache {self.folder}; it "
                             f"holds {', '.join(self.hookpoints)}") from None

    @property
    def n_tokens(self) -> int:
        """Stored rows (tokens that are not special), both splits."""
        return int(self.manifest["n_tokens"])

    @property
    def n_sequences(self) -> int:
        return int(self.manifest["n_sequences"])

    @property
    def context_len(self) -> int:
        return int(self.manifest["context_len"])

    def n_rows(self, split: Split = "all") -> int:
        return sum(_length(self._split_range(i, split)) for i in range(len(self._records)))

    def n_batches(self, batch_size: int, split: Split = "train", drop_last: bool = False) -> int:
        """Batches in one epoch of `batches` with these arguments."""
        full, rest = divmod(self.n_rows(split), batch_size)
        return full + int(rest > 0 and not drop_last)

    def is_heldout(self, seq_ids: Tensor) -> Tensor:
        """True for the sequences of the held-out split (the rule fixed in the manifest)."""
        rule = self.manifest["heldout"]
        return heldout_mask(torch.as_tensor(seq_ids), rule["fraction"], rule["seed"])

    def tokens(self) -> Tensor:
        """``(n_sequences, context_len)`` token ids of every harvested chunk, specials included."""
        return self._per_sequence("sequence_tokens")

    def doc_ids(self) -> Tensor:
        """``(n_sequences,)`` document id of every harvested chunk."""
        return self._per_sequence("sequence_doc_ids")

    def verify(self) -> None:
        """Check every shard's size and sha256 now (instead of lazily on first use)."""
        for index in range(len(self._records)):
            self._shard_path(index)

    def batches(self, batch_size: int, hookpoints: Sequence[str] | None = None,
                split: Split = "train", seed: int = 0, shuffle: bool = True,
                skip_batches: int = 0, epochs: int | None = 1,
                dtype: str | torch.dtype | None = torch.float32, buffer_shards: int = 4,
                drop_last: bool = False) -> Iterator[ActivationBatch]:
        """Batches of rows of `split`, every row once per epoch (``epochs=None``: forever).

        Deterministic given `seed`; ``skip_batches=n`` yields what follows the first n
        batches of the same call (a resumed trainer passes the steps it already took).
        `dtype=None` keeps the storage dtype. Memory is about `buffer_shards` shards.
        """
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        if batch_size < 1 or buffer_shards < 1 or skip_batches < 0:
            raise ValueError("batch_size and buffer_shards must be positive and skip_batches "
                             f"non-negative (got {batch_size}, {buffer_shards}, {skip_batches})")
        wanted = [self.resolve(h) for h in (hookpoints or self.hookpoints)]
        names = list(dict.fromkeys(part for name in wanted
                                   for part in split_sources(name)))
        per_epoch = self.n_batches(batch_size, split, drop_last)
        if per_epoch == 0:
            raise ValueError(f"the {split!r} split of {self.folder} has no rows to batch")
        first_epoch, skip_batches = divmod(skip_batches, per_epoch)
        cast = parse_dtype(dtype) if dtype is not None else None
        epoch_range = itertools.count(first_epoch) if epochs is None else range(first_epoch,
                                                                                epochs)
        plan = _Plan(names, split, batch_size, seed, shuffle, buffer_shards, drop_last)
        batches = self._epochs(plan, epoch_range, skip_batches, cast)
        if wanted == names:
            return batches
        return (stack_acts(batch, wanted) for batch in batches)

    # -- internals ---------------------------------------------------------------------

    def _epochs(self, plan: _Plan, epochs: Iterable[int], skip_batches: int,
                cast: torch.dtype | None) -> Iterator[ActivationBatch]:
        for epoch in epochs:
            gen = (torch.Generator().manual_seed((plan.seed * 1_000_003 + epoch) % 2**63)
                   if plan.shuffle else None)
            windows = self._windows(plan.names, plan.split, gen, plan.buffer_shards)
            for batch in mix(windows, plan.batch_size, gen,
                             gather=lambda ids: self._gather(plan.names, ids),
                             skip_batches=skip_batches, drop_last=plan.drop_last):
                yield batch if cast is None else batch.to("cpu", cast)
            skip_batches = 0

    def _split_range(self, index: int, split: Split) -> tuple[int, int]:
        record = self._records[index]
        if split == "train":
            return 0, record.n_train_rows
        if split == "heldout":
            return record.n_train_rows, record.n_rows
        return 0, record.n_rows

    def _windows(self, names: list[str], split: Split, gen: torch.Generator | None,
                 buffer_shards: int) -> Iterator[Window]:
        order = (torch.randperm(len(self._records), generator=gen).tolist() if gen is not None
                 else list(range(len(self._records))))
        order = [i for i in order if _length(self._split_range(i, split)) > 0]
        for start in range(0, len(order), buffer_shards):
            group = order[start:start + buffer_shards]
            ranges = [(i, *self._split_range(i, split)) for i in group]
            ids = torch.cat([torch.arange(lo, hi) + int(self._starts[i]) for i, lo, hi in ranges])
            yield Window(ids=ids, load=lambda ranges=ranges: (
                self._read(names, i, lo, hi) for i, lo, hi in ranges))

    def _read(self, names: list[str], index: int, start: int, stop: int) -> ActivationBatch:
        keys = [ACTS_PREFIX + n for n in names] + ["token_ids", "seq_ids", "positions"]
        data = read_rows(self._shard_path(index), keys, start, stop)
        return ActivationBatch(acts={n: data[ACTS_PREFIX + n] for n in names},
                               token_ids=data["token_ids"], seq_ids=data["seq_ids"],
                               positions=data["positions"])

    def _gather(self, names: list[str], ids: Tensor) -> ActivationBatch:
        """Rows by global id, in the order given (loads only the shards they live in)."""
        shard_of = torch.searchsorted(self._ends, ids, right=True)
        parts, where = [], []
        for index in torch.unique(shard_of).tolist():
            selected = torch.nonzero(shard_of == index).flatten()
            local = ids[selected] - int(self._starts[index])
            lo, hi = int(local.min()), int(local.max()) + 1
            parts.append(take_rows(self._read(names, index, lo, hi), local - lo))
            where.append(selected)
        return take_rows(concat_rows(parts), torch.argsort(torch.cat(where)))

    def _shard_path(self, index: int) -> Path:
        path = self.folder / self._records[index].file
        if index not in self._verified:
            verify_shard(path, self._records[index])
            self._verified.add(index)
        return path

    def _per_sequence(self, key: str) -> Tensor:
        parts = [read_tensor(self._shard_path(i), key) for i in range(len(self._records))]
        return torch.cat(parts) if parts else torch.empty(0, dtype=torch.long)


def _length(bounds: tuple[int, int]) -> int:
    return bounds[1] - bounds[0]


def _aliases(hookpoints: list[dict[str, Any]]) -> dict[str, str]:
    """Stored names, plus module-path spellings (``model.layers.6``) for the same hookpoints."""
    aliases = {}
    for h in hookpoints:
        path = h["module"] if h["side"] == "output" else f"{h['module']}:{h['side']}"
        aliases.setdefault(path if h["model"] is None else f"{h['model']}/{path}", h["name"])
    aliases.update({h["name"]: h["name"] for h in hookpoints})
    return aliases
