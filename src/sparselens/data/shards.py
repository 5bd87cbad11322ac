"""One shard of an activation cache: a safetensors file, written atomically, read checked.

A shard holds, for the rows it stores, one ``(rows, width)`` tensor per hookpoint under
``acts/<hookpoint>`` plus ``token_ids``, ``seq_ids`` and ``positions``, and for the sequences
it covers their full ``sequence_tokens`` and ``sequence_doc_ids``. The manifest records each
shard's size and sha256; a reader compares both before trusting a shard, so a truncated or
bit-flipped file fails with an error naming it instead of feeding garbage to training.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from safetensors import SafetensorError, safe_open
from safetensors.torch import save
from torch import Tensor

from sparselens.core.atomic import atomic_write_bytes, sha256_file

ACTS_PREFIX = "acts/"


@dataclass(frozen=True)
class ShardRecord:
    """What the manifest keeps about one shard."""

    file: str
    sha256: str
    bytes: int
    n_rows: int
    n_train_rows: int
    """Rows are stored train first, then held out: train rows are ``[0, n_train_rows)``."""
    first_sequence: int
    n_sequences: int

    @classmethod
    def from_dict(cls, data: dict) -> ShardRecord:
        return cls(**data)


def write_shard(path: Path, tensors: dict[str, Tensor]) -> tuple[str, int]:
    """Write a shard atomically (temp file, fsync, rename); returns (sha256, size)."""
    data = save({name: t.contiguous() for name, t in tensors.items()},
                metadata={"format": "sparselens-activation-shard"})
    atomic_write_bytes(path, data)
    return hashlib.sha256(data).hexdigest(), len(data)


def verify_shard(path: Path, record: ShardRecord) -> None:
    """Raise ValueError naming `path` if it is missing, truncated or not the file recorded."""
    if not path.exists():
        raise FileNotFoundError(f"cache shard {path} is missing; the cache is incomplete. "
                                "Re-run the harvest into this folder to rewrite it")
    size = os.path.getsize(path)
    if size != record.bytes:
        raise ValueError(f"cache shard {path} is {size} bytes but the manifest records "
                         f"{record.bytes}: it is truncated or was replaced. Delete it and re-run "
                         "the harvest into this folder to rewrite it")
    digest = sha256_file(path)
    if digest != record.sha256:
        raise ValueError(f"cache shard {path} is corrupted: sha256 {digest[:16]}... does not "
                         f"match the manifest ({record.sha256[:16]}...). Delete it and re-run "
                         "the harvest into this folder to rewrite it")


def read_rows(path: Path, keys: list[str], start: int, stop: int) -> dict[str, Tensor]:
    """Rows ``[start, stop)`` of each row tensor in `keys`, reading only those bytes."""
    try:
        with safe_open(str(path), framework="pt") as handle:
            return {key: handle.get_slice(key)[start:stop] for key in keys}
    except (SafetensorError, OSError) as err:
        raise ValueError(f"cannot read cache shard {path}: {err}. It may be corrupted; run "
                         "ActivationCache.verify() to check every shard") from None


def read_tensor(path: Path, key: str) -> Tensor:
    """A whole tensor of a shard (e.g. ``sequence_tokens``)."""
    try:
        with safe_open(str(path), framework="pt") as handle:
            return handle.get_tensor(key)
    except (SafetensorError, OSError) as err:
        raise ValueError(f"cannot read {key!r} from cache shard {path}: {err}") from None
