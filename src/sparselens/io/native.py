"""The native checkpoint: a folder with ``config.json`` and ``weights.safetensors``.

``config.json`` holds the architecture name, the typed config, the library version and the
SHA-256 of the weights file, so a truncated or swapped weights file is refused on load.
Input/output scaling is folded into the weights on save: a saved dictionary works on raw
activations. Extra inference state (thresholds, k, nesting sizes) is either a config field or
a registered buffer, so it travels in one of the two files.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from safetensors.torch import load_file

from sparselens.core.atomic import atomic_open, atomic_write_json, read_json, sha256_file

if TYPE_CHECKING:
    from sparselens.dictionaries.base import Dictionary

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "weights.safetensors"
FORMAT_VERSION = 1


def library_version() -> str:
    from sparselens import __version__

    return __version__


def save_dictionary(dictionary: Dictionary, path: str | os.PathLike,
                    extra: dict | None = None) -> Path:
    """Save with scales folded in (the live module is left untouched)."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    folded = copy.deepcopy(dictionary).cpu()
    folded.fold_scales()
    tensors = {name: t.detach().contiguous() for name, t in folded.state_dict().items()}
    with atomic_open(path / WEIGHTS_FILE) as handle:
        handle.write(_safetensors_bytes(tensors))
    meta = {
        "format": "sparselens",
        "format_version": FORMAT_VERSION,
        "architecture": folded.architecture,
        "config": folded.cfg.to_dict(),
        "library_version": library_version(),
        "weights_sha256": sha256_file(path / WEIGHTS_FILE),
        **(extra or {}),
    }
    atomic_write_json(path / CONFIG_FILE, meta)
    return path


def _safetensors_bytes(tensors: dict[str, torch.Tensor]) -> bytes:
    from safetensors.torch import save

    return save(tensors)


def load_dictionary(path: str | os.PathLike, device: str | torch.device = "cpu") -> Dictionary:
    """Load a native checkpoint; verify the checksum and every tensor's shape."""
    import sparselens.dictionaries  # noqa: F401  (registers the variants)
    from sparselens.dictionaries.base import REGISTRY

    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"checkpoint {path} is not a directory; pass the folder that "
                                f"holds {CONFIG_FILE} and {WEIGHTS_FILE}")
    meta = read_json(path / CONFIG_FILE, "checkpoint config")
    weights = path / WEIGHTS_FILE
    if not weights.exists():
        raise FileNotFoundError(f"checkpoint {path} has no {WEIGHTS_FILE}")
    expected = meta.get("weights_sha256")
    if expected and sha256_file(weights) != expected:
        raise ValueError(f"{weights} does not match the checksum in {CONFIG_FILE}: the file is "
                         "truncated or corrupted; re-save or re-train the checkpoint")
    arch = meta.get("architecture")
    if arch not in REGISTRY:
        raise ValueError(f"{path / CONFIG_FILE} names architecture {arch!r}, unknown to this "
                         f"version of sparselens; known: {sorted(REGISTRY)}")
    cls = REGISTRY[arch]
    model = cls(cls.config_class.from_dict(meta["config"]))
    state = load_file(weights)
    own = model.state_dict()
    missing = sorted(set(own) - set(state) - set(cls.added_buffers))
    unexpected = sorted(set(state) - set(own))
    if missing or unexpected:
        raise ValueError(f"{weights}: missing tensors {missing}, unexpected tensors "
                         f"{unexpected} for architecture {arch!r}")
    for name, tensor in state.items():
        if tensor.shape != own[name].shape:
            raise ValueError(f"{weights}: tensor {name!r} has shape {tuple(tensor.shape)}, "
                             f"config implies {tuple(own[name].shape)}")
    model.load_state_dict({**own, **state})  # an added buffer a file lacks keeps its start
    return model.to(device)
