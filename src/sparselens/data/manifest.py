"""The activation cache manifest: what was harvested, how, and which shard files are valid.

``manifest.json`` is the single source of truth: a shard counts only once the manifest
lists it with its sha256, and the manifest is rewritten atomically after every shard. It
has no timestamps, so an interrupted and resumed harvest gives a byte-identical cache.

Top-level fields: ``format``, ``format_version``, ``library_version``; ``model`` (the model
name, or the list of names for a multi-model cache) and ``models`` (one entry per model:
``label`` (None for a single model), ``name``, ``class``, ``dtype``); ``model_dtype``;
``hookpoints`` (``name``, ``model`` label, ``module``, ``side``, ``width``; names of a
multi-model cache read ``label/hookpoint``); ``storage_dtype``; ``context_len``;
``batch_size`` (sequences per forward) and ``shard_tokens``; ``corpus`` (a description);
``heldout`` (``fraction``, ``seed``, ``rule``); ``n_tokens`` (stored rows), ``n_sequences``,
``n_heldout_tokens``; ``shards`` (see `ShardRecord`); ``complete``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sparselens import __version__
from sparselens.core.atomic import atomic_write_json, read_json
from sparselens.data.shards import ShardRecord

FORMAT = "sparselens-activation-cache"
FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"

_RESUME_KEYS = ("models", "hookpoints", "storage_dtype", "context_len", "batch_size",
                "shard_tokens", "heldout", "corpus")
"""Fields that must agree for a harvest to continue an existing cache."""
_REQUIRED_KEYS = (*_RESUME_KEYS, "n_tokens", "n_sequences", "shards", "complete")


def new_manifest(header: dict[str, Any]) -> dict[str, Any]:
    """An empty manifest (no shards yet) around a harvest's settings."""
    names = [m["name"] for m in header["models"]]
    return {"format": FORMAT, "format_version": FORMAT_VERSION, "library_version": __version__,
            "model": names[0] if len(names) == 1 else names,
            "model_dtype": header["models"][0]["dtype"] if len(names) == 1
            else [m["dtype"] for m in header["models"]],
            **header, "n_tokens": 0, "n_sequences": 0, "n_heldout_tokens": 0, "shards": [],
            "complete": False}


def add_shard(manifest: dict[str, Any], record: ShardRecord) -> dict[str, Any]:
    """The manifest with one more shard counted."""
    return {**manifest, "shards": [*manifest["shards"], vars(record)],
            "n_tokens": manifest["n_tokens"] + record.n_rows,
            "n_sequences": manifest["n_sequences"] + record.n_sequences,
            "n_heldout_tokens": manifest["n_heldout_tokens"] + record.n_rows
            - record.n_train_rows}


def resume_conflicts(old: dict[str, Any], header: dict[str, Any]) -> list[str]:
    """Names of the settings in which an existing cache differs from a new harvest."""
    conflicts = []
    for key in _RESUME_KEYS:
        before, now = old.get(key), header.get(key)
        if key == "hookpoints":  # widths are only known after a forward pass
            before = [{k: v for k, v in h.items() if k != "width"} for h in before or []]
            now = [{k: v for k, v in h.items() if k != "width"} for h in now or []]
        if before != now:
            conflicts.append(f"{key}: cache has {before!r}, this harvest {now!r}")
    return conflicts


def read_manifest(folder: Path) -> dict[str, Any]:
    """Load and sanity-check ``folder/manifest.json``."""
    path = folder / MANIFEST_NAME
    if not folder.is_dir():
        raise FileNotFoundError(f"activation cache {folder} does not exist; write one with "
                                f"`sparselens harvest --out {folder}`")
    if not path.exists():
        raise FileNotFoundError(f"{folder} has no {MANIFEST_NAME}; it is not an activation "
                                "cache (or its harvest never finished a shard)")
    manifest = read_json(path, "cache manifest")
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ValueError(f"{path} is not a sparselens activation cache manifest")
    missing = [key for key in _REQUIRED_KEYS if key not in manifest]
    if missing:
        raise ValueError(f"{path} lacks {', '.join(missing)}; it was not written by "
                         "`sparselens harvest` or was edited. Harvest again into a new folder")
    if manifest.get("format_version", 0) > FORMAT_VERSION:
        raise ValueError(f"{path} has format version {manifest['format_version']}, newer than "
                         f"this sparselens ({FORMAT_VERSION}); upgrade sparselens")
    return manifest


def write_manifest(folder: Path, manifest: dict[str, Any]) -> None:
    atomic_write_json(folder / MANIFEST_NAME, manifest)


def shard_records(manifest: dict[str, Any]) -> list[ShardRecord]:
    return [ShardRecord.from_dict(s) for s in manifest["shards"]]
