"""Resumable checkpoints: a usable dictionary plus everything needed to continue bit-for-bit.

A checkpoint is a folder ``checkpoints/step_000001000/`` holding

- ``config.json`` + ``weights.safetensors``: the dictionary via `save_dictionary` (scales
  folded in, so the folder loads directly with `load_dictionary`);
- ``trainer_state.pt``: the raw (unfolded) parameters, optimizer moments, dead-latent counters,
  RNG states, the step, tokens seen and the data position (batches consumed);
- ``trainer_state.json``: the training config, the unfolded dictionary config and the SHA-256
  of ``trainer_state.pt``.

The raw parameters are stored because folding scales in and out again is not exact in floating
point, and resuming must be. The folder is written under a temporary name and renamed into
place, then ``checkpoints/latest.json`` is switched to it atomically: a crash at any moment
leaves the previous checkpoint as the latest valid one.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from typing import Any

import torch

from sparselens.core.atomic import atomic_open, atomic_write_json, read_json, sha256_file
from sparselens.dictionaries.base import Dictionary
from sparselens.io.native import load_dictionary, save_dictionary

CHECKPOINTS_DIR = "checkpoints"
"""Subfolder of a run's output folder that holds its checkpoints."""
STATE_FILE = "trainer_state.pt"
STATE_META_FILE = "trainer_state.json"
LATEST_FILE = "latest.json"
STATE_FORMAT = "sparselens-trainer-state"
STATE_VERSION = 1
_STEP_DIR = re.compile(r"step_(\d+)")


def step_dir_name(step: int) -> str:
    return f"step_{step:09d}"


def write_checkpoint(root: Path, dictionary: Dictionary, state: dict[str, Any],
                     meta: dict[str, Any], keep: int) -> Path:
    """Write one checkpoint atomically, point ``latest.json`` at it, prune old ones."""
    step = int(state["step"])
    root.mkdir(parents=True, exist_ok=True)
    final = root / step_dir_name(step)
    tmp = root / f".{final.name}.tmp{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    save_dictionary(dictionary, tmp)
    with atomic_open(tmp / STATE_FILE) as handle:
        torch.save(state, handle)
    full_meta = {"format": STATE_FORMAT, "format_version": STATE_VERSION, "step": step,
                 "state_sha256": sha256_file(tmp / STATE_FILE), **meta}
    atomic_write_json(tmp / STATE_META_FILE, full_meta)
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    atomic_write_json(root / LATEST_FILE, {"checkpoint": final.name, "step": step})
    _prune(root, keep, protect=final.name)
    return final


def _prune(root: Path, keep: int, protect: str) -> None:
    steps = sorted((int(m.group(1)), p) for p in root.iterdir()
                   if p.is_dir() and (m := _STEP_DIR.fullmatch(p.name)))
    for _, path in steps[:-keep]:
        if path.name != protect:
            shutil.rmtree(path, ignore_errors=True)


def latest_checkpoint(root: Path) -> Path | None:
    """The checkpoint ``latest.json`` names, or None when there is none yet."""
    pointer = root / LATEST_FILE
    if not pointer.exists():
        return None
    name = read_json(pointer, "checkpoint pointer").get("checkpoint")
    path = root / str(name)
    if not _STEP_DIR.fullmatch(str(name)) or not path.is_dir():
        raise FileNotFoundError(f"{pointer} names checkpoint {name!r}, which does not exist; "
                                "delete the pointer to start over or restore the folder")
    return path


def find_checkpoint(path: str | os.PathLike) -> Path | None:
    """`path` itself if it is a checkpoint, else the latest checkpoint of the run folder `path`
    (None when the run has none yet)."""
    path = Path(path)
    if (path / STATE_META_FILE).exists():
        return path
    return latest_checkpoint(path / CHECKPOINTS_DIR)


def saved_train_config(checkpoint: Path) -> dict[str, Any]:
    """The training config stored in a checkpoint, as a dict (cheap: no checksums)."""
    return read_json(checkpoint / STATE_META_FILE, "trainer state")["train_config"]


def read_checkpoint(path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(meta, state)`` of a checkpoint folder, after verifying both checksums."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"checkpoint {path} is not a directory")
    meta = read_json(path / STATE_META_FILE, "trainer state")
    if meta.get("format") != STATE_FORMAT:
        raise ValueError(f"{path / STATE_META_FILE} is not a sparselens trainer state")
    if meta.get("format_version", 0) > STATE_VERSION:
        raise ValueError(f"{path} was written by a newer sparselens (trainer state version "
                         f"{meta['format_version']}); upgrade sparselens to resume it")
    state_file = path / STATE_FILE
    if not state_file.exists():
        raise FileNotFoundError(f"checkpoint {path} has no {STATE_FILE}; it cannot be resumed")
    if sha256_file(state_file) != meta.get("state_sha256"):
        raise ValueError(f"{state_file} does not match the checksum in {STATE_META_FILE}: the "
                         "file is truncated or corrupted; resume from an earlier checkpoint")
    load_dictionary(path)  # verifies the saved dictionary's checksum and shapes as well
    state = torch.load(state_file, map_location="cpu", weights_only=True)
    return meta, state


def rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
