"""Harvest activations into an on-disk cache: sharded, checksummed, resumable.

Chunks are read in forward batches of ``batch_size`` sequences; a shard closes after the
batch that brings it to ``shard_tokens`` stored rows. Shards therefore always start on a
batch boundary, so a resumed harvest (which skips exactly the sequences of the shards the
manifest lists) runs the same batches as an uninterrupted one and writes identical bytes.
Each shard is written atomically and only then listed, with its sha256, in the manifest.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from itertools import chain, islice
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

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
from sparselens.models.source import LoadedModel, parse_dtype

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
    batches = _batched(remaining, cfg.batch_size)
    written = 0
    with tqdm(total=cfg.max_tokens, initial=manifest["n_tokens"], unit="tok", unit_scale=True,
              desc="harvest", disable=not cfg.progress, dynamic_ncols=True) as bar:
        while cfg.max_tokens is None or manifest["n_tokens"] < cfg.max_tokens:
            if cfg.max_shards is not None and written >= cfg.max_shards:
                return manifest
            pieces = _read_shard(taps, batches, manifest, cfg, bar)
            if not pieces:
                break
            manifest = _write_shard(out, pieces, manifest, cfg)
            written += 1
    manifest = {**manifest, "complete": True}
    write_manifest(out, manifest)
    return manifest


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
    out.mkdir(parents=True, exist_ok=True)
    listed = {s["file"] for s in manifest["shards"]}
    for path in out.glob("*"):  # unlisted shards and temp files of an interrupted run
        if _is_harvest_file(path) and path.name not in listed and path.name != MANIFEST_NAME:
            path.unlink()
    return manifest


def _is_harvest_file(path: Path) -> bool:
    name = path.name
    return name.startswith(("shard-", ".shard-", f".{MANIFEST_NAME}")) or name == MANIFEST_NAME


def _batched(items: Iterator[ChunkLike], size: int) -> Iterator[list[ChunkLike]]:
    while batch := list(islice(items, size)):
        yield batch


def _read_shard(taps: list[Tap], batches: Iterator[list[ChunkLike]], manifest: dict[str, Any],
                cfg: HarvestConfig, bar: tqdm) -> list[ChunkRows]:
    """Forward batches until one shard's worth of rows (or the token budget) is read."""
    target = cfg.shard_tokens
    if cfg.max_tokens is not None:
        target = min(target, cfg.max_tokens - manifest["n_tokens"])
    pieces: list[ChunkRows] = []
    rows, next_seq = 0, manifest["n_sequences"]
    while rows < target and (batch := next(batches, None)) is not None:
        piece = read_chunks(taps, batch, next_seq)
        pieces.append(piece)
        next_seq += len(batch)
        rows += len(piece.rows)
        bar.update(len(piece.rows))
    return pieces


def _write_shard(out: Path, pieces: list[ChunkRows], manifest: dict[str, Any],
                 cfg: HarvestConfig) -> dict[str, Any]:
    """Write one shard (train rows first, then held-out rows) and list it in the manifest."""
    rows = concat_rows([p.rows for p in pieces])
    held = heldout_mask(rows.seq_ids, cfg.heldout_fraction, cfg.seed)
    order = torch.cat([torch.nonzero(~held).flatten(), torch.nonzero(held).flatten()])
    storage = parse_dtype(cfg.storage_dtype)
    tensors = {ACTS_PREFIX + name: act[order].to(storage) for name, act in rows.acts.items()}
    tensors.update(token_ids=rows.token_ids[order], seq_ids=rows.seq_ids[order],
                   positions=rows.positions[order],
                   sequence_tokens=torch.cat([p.tokens for p in pieces]),
                   sequence_doc_ids=torch.cat([p.doc_ids for p in pieces]))
    name = f"shard-{len(manifest['shards']):05d}.safetensors"
    sha, size = write_shard(out / name, tensors)
    record = ShardRecord(file=name, sha256=sha, bytes=size, n_rows=len(rows),
                         n_train_rows=int((~held).sum()),
                         first_sequence=manifest["n_sequences"],
                         n_sequences=int(tensors["sequence_tokens"].shape[0]))
    manifest = add_shard(manifest, record)
    manifest["hookpoints"] = [{**h, "width": int(rows.acts[h["name"]].shape[1])}
                              for h in manifest["hookpoints"]]
    write_manifest(out, manifest)
    return manifest
