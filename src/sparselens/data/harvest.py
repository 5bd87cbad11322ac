"""Harvest activations into an on-disk cache: sharded, checksummed, resumable.

Chunks are read in forward batches of ``batch_size`` sequences; a shard closes after the
batch that brings it to ``shard_tokens`` stored rows. Shards therefore always start on a
batch boundary, so a resumed harvest (which skips exactly the sequences of the shards the
manifest lists) runs the same batches as an uninterrupted one and writes identical bytes.
Each shard is written atomically and only then listed, with its sha256, in the manifest.

Under ``torchrun`` the ranks share the work shard by shard. Which sequences a shard holds
follows from token counts alone (special tokens are not stored), so every rank plans the same
shards from the same chunk stream without running the model; in each round rank r forwards
and writes shard ``round * world + r``, and after the round rank 0 lists the round's shards in
the manifest, in order. The cache is byte-identical to a single process's (same batches, same
files), and an interrupted distributed harvest resumes like any other, with any number of ranks.
The output folder must be one filesystem that every rank sees.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import chain, islice
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from sparselens import distributed as dist
from sparselens.core.dtypes import parse_dtype
from sparselens.data.manifest import (
    MANIFEST_NAME,
    add_shard,
    new_manifest,
    read_manifest,
    resume_conflicts,
    write_manifest,
)
from sparselens.data.mixing import concat_rows
from sparselens.data.shards import ACTS_PREFIX, ShardRecord, write_shard
from sparselens.data.split import RULE, check_fraction, heldout_mask
from sparselens.data.taps import ChunkLike, ChunkRows, Tap, make_taps, read_chunks
from sparselens.models.source import LoadedModel

STORAGE_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


@dataclass
class HarvestConfig:
    """How to harvest (what to harvest is given by the model, chunks and hookpoints)."""

    storage_dtype: str = "bfloat16"
    """Dtype of stored activations: bfloat16, float16 or float32."""
    batch_size: int = 16
    """Sequences per forward pass."""
    shard_tokens: int = 65536
    """Rows per shard file (a shard closes after the batch that reaches it)."""
    max_tokens: int | None = None
    """Stop after storing this many rows (non-special tokens); None reads every chunk."""
    heldout_fraction: float = 0.05
    """Fraction of sequences kept out of training (for evaluation)."""
    seed: int = 0
    """Seed of the held-out split."""
    max_shards: int | None = None
    """Write at most this many new shards in this call, then stop (resume later)."""
    progress: bool = True
    """Show a progress bar with tokens/s."""

    def __post_init__(self) -> None:
        if parse_dtype(self.storage_dtype) not in STORAGE_DTYPES:
            raise ValueError(f"storage dtype must be bfloat16, float16 or float32, "
                             f"got {self.storage_dtype!r}")
        for name in ("batch_size", "shard_tokens", "max_tokens", "max_shards"):
            value, minimum = getattr(self, name), 0 if name == "max_shards" else 1
            if value is not None and value < minimum:
                raise ValueError(f"{name} must be at least {minimum}, got {value}")
        check_fraction(self.heldout_fraction)


def harvest(models: LoadedModel | Mapping[str, LoadedModel], chunks: Iterable[ChunkLike],
            hookpoints: Sequence[str], out_dir: str | Path, cfg: HarvestConfig | None = None,
            corpus: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write (or resume) an activation cache in `out_dir`; returns its manifest.

    `models` is one model, or ``{label: model}`` to read the same hookpoints of several
    models on the same tokens (names become ``label/hookpoint``). `corpus` is a JSON
    description of where the chunks came from, stored in the manifest.
    """
    cfg = cfg or HarvestConfig()
    out = Path(out_dir)
    taps = make_taps(models, hookpoints)
    chunk_iter = iter(chunks)
    first = next(chunk_iter, None)
    if first is None:
        raise ValueError("no chunks to harvest: the corpus gave no text")
    header = _header(taps, cfg, int(first.ids.shape[-1]), corpus)
    manifest = _start_or_resume(out, header)
    remaining = islice(chain([first], chunk_iter), manifest["n_sequences"], None)
    plans = _plan_shards(_batched(remaining, cfg.batch_size), manifest, cfg)
    world, written = dist.world_size(), 0
    with tqdm(total=cfg.max_tokens, initial=manifest["n_tokens"], unit="tok", unit_scale=True,
              desc="harvest", dynamic_ncols=True,
              disable=not (cfg.progress and dist.is_main_process())) as bar:
        while True:
            budget = world if cfg.max_shards is None else min(world, cfg.max_shards - written)
            if budget <= 0:
                return manifest
            round_ = list(islice(plans, budget))
            if not round_:
                break
            manifest = _harvest_round(out, taps, round_, manifest, cfg, bar)
            written += len(round_)
    manifest = {**manifest, "complete": True}
    if dist.is_main_process():
        write_manifest(out, manifest)
    dist.barrier()
    return manifest


@dataclass
class ShardPlan:
    """The forward batches of one shard, known before any model runs."""

    first_sequence: int
    batches: list[list[ChunkLike]] = field(default_factory=list)
    n_rows: int = 0


def _plan_shards(batches: Iterator[list[ChunkLike]], manifest: dict[str, Any],
                 cfg: HarvestConfig) -> Iterator[ShardPlan]:
    """Group forward batches into shards: a shard closes after the batch that brings it to
    ``shard_tokens`` stored rows (or to the token budget)."""
    n_tokens, next_seq = manifest["n_tokens"], manifest["n_sequences"]
    while cfg.max_tokens is None or n_tokens < cfg.max_tokens:
        target = cfg.shard_tokens
        if cfg.max_tokens is not None:
            target = min(target, cfg.max_tokens - n_tokens)
        plan = ShardPlan(first_sequence=next_seq)
        while plan.n_rows < target and (batch := next(batches, None)) is not None:
            plan.batches.append(batch)
            plan.n_rows += sum(int((~chunk.special.bool()).sum()) for chunk in batch)
            next_seq += len(batch)
        if not plan.batches:
            return
        yield plan
        n_tokens += plan.n_rows


def _harvest_round(out: Path, taps: list[Tap], round_: list[ShardPlan],
                   manifest: dict[str, Any], cfg: HarvestConfig, bar: tqdm) -> dict[str, Any]:
    """Each rank writes its shard of the round; then all of them are listed, in order."""
    me, first_index = dist.rank(), len(manifest["shards"])
    mine = None
    if me < len(round_):
        mine = _write_shard(out / f"shard-{first_index + me:05d}.safetensors",
                            _read_plan(taps, round_[me], bar), round_[me], cfg)
    finished = dist.all_gather_object(mine)[:len(round_)]
    if dist.is_main_process():
        _check_visible(out, [record for record, _ in finished])
    for rank, (record, widths) in enumerate(finished):
        manifest = add_shard(manifest, record)
        manifest["hookpoints"] = [{**h, "width": widths[h["name"]]}
                                  for h in manifest["hookpoints"]]
        if rank != me:
            bar.update(record.n_rows)
    if dist.is_main_process():
        write_manifest(out, manifest)
    dist.barrier()  # nobody starts the next round (or returns) before the manifest lists this one
    return manifest


def _check_visible(out: Path, records: list[ShardRecord]) -> None:
    """Rank 0 lists shards other ranks wrote: each must be in its view of the folder."""
    missing = [record.file for record in records if not (out / record.file).is_file()]
    if missing:
        raise ValueError(f"{', '.join(missing)} written by other ranks are not in {out} as "
                         "rank 0 sees it: the output folder of a distributed harvest must be on "
                         "a filesystem every rank sees (a shared mount, the same path on every "
                         "node); rerun with --out on such a filesystem")


def _header(taps: list[Tap], cfg: HarvestConfig, context_len: int,
            corpus: dict[str, Any] | None) -> dict[str, Any]:
    models = [{"label": tap.label, "name": tap.loaded.name,
               "class": type(tap.loaded.model).__name__,
               "dtype": _dtype_name(next(tap.loaded.model.parameters()).dtype)} for tap in taps]
    hookpoints = [{"name": name, "model": tap.label, "module": hp.module, "side": hp.side,
                   "width": None}
                  for tap in taps for hp, name in zip(tap.hookpoints, tap.names)]
    header = {"models": models, "hookpoints": hookpoints,
              "storage_dtype": _dtype_name(parse_dtype(cfg.storage_dtype)),
              "context_len": context_len, "batch_size": cfg.batch_size,
              "shard_tokens": cfg.shard_tokens, "corpus": corpus,
              "heldout": {"fraction": cfg.heldout_fraction, "seed": cfg.seed, "rule": RULE}}
    return json.loads(json.dumps(header))  # as it reads back from JSON, for comparisons


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _start_or_resume(out: Path, header: dict[str, Any]) -> dict[str, Any]:
    """The manifest to continue from: the existing one if compatible, else a fresh one."""
    if (out / MANIFEST_NAME).exists():
        manifest = read_manifest(out)
        conflicts = resume_conflicts(manifest, header)
        if conflicts:
            raise ValueError(f"{out} already holds a different harvest ("
                             + "; ".join(conflicts) + "). Choose another output folder, or "
                             "delete this one to start over")
    else:
        leftovers = [p.name for p in out.glob("*") if not _is_harvest_file(p)]
        if leftovers:
            raise ValueError(f"{out} is not empty ({', '.join(sorted(leftovers)[:5])}) and "
                             "holds no activation cache; choose an empty or new folder")
        manifest = new_manifest(header)
    if dist.is_main_process():
        out.mkdir(parents=True, exist_ok=True)
        listed = {s["file"] for s in manifest["shards"]}
        for path in out.glob("*"):  # unlisted shards and temp files of an interrupted run
            if _is_harvest_file(path) and path.name not in listed and path.name != MANIFEST_NAME:
                path.unlink()
    dist.barrier()  # the folder is clean before any rank writes into it
    return manifest


def _is_harvest_file(path: Path) -> bool:
    name = path.name
    return name.startswith(("shard-", ".shard-", f".{MANIFEST_NAME}")) or name == MANIFEST_NAME


def _batched(items: Iterator[ChunkLike], size: int) -> Iterator[list[ChunkLike]]:
    while batch := list(islice(items, size)):
        yield batch


def _read_plan(taps: list[Tap], plan: ShardPlan, bar: tqdm) -> list[ChunkRows]:
    """Forward the batches of one shard."""
    pieces, next_seq = [], plan.first_sequence
    for batch in plan.batches:
        pieces.append(read_chunks(taps, batch, next_seq))
        next_seq += len(batch)
        bar.update(len(pieces[-1].rows))
    return pieces


def _write_shard(path: Path, pieces: list[ChunkRows], plan: ShardPlan,
                 cfg: HarvestConfig) -> tuple[ShardRecord, dict[str, int]]:
    """Write one shard (train rows first, then held-out rows); its record and row widths."""
    rows = concat_rows([p.rows for p in pieces])
    held = heldout_mask(rows.seq_ids, cfg.heldout_fraction, cfg.seed)
    order = torch.cat([torch.nonzero(~held).flatten(), torch.nonzero(held).flatten()])
    storage = parse_dtype(cfg.storage_dtype)
    tensors = {ACTS_PREFIX + name: act[order].to(storage) for name, act in rows.acts.items()}
    tensors.update(token_ids=rows.token_ids[order], seq_ids=rows.seq_ids[order],
                   positions=rows.positions[order],
                   sequence_tokens=torch.cat([p.tokens for p in pieces]),
                   sequence_doc_ids=torch.cat([p.doc_ids for p in pieces]))
    sha, size = write_shard(path, tensors)
    n_sequences = int(tensors["sequence_tokens"].shape[0])
    record = ShardRecord(file=path.name, sha256=sha, bytes=size, n_rows=len(rows),
                         n_train_rows=int((~held).sum()),
                         first_sequence=plan.first_sequence,
                         n_sequences=n_sequences)
    return record, {name: int(act.shape[1]) for name, act in rows.acts.items()}
