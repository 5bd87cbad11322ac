"""Gemma Scope JumpReLU SAEs and transcoders, read as sparselens ``jumprelu`` dictionaries.

Two published layouts:

- Gemma Scope (Gemma 2): ``params.npz`` with ``W_enc (d, n)``, ``W_dec (n, d)``, ``b_enc``,
  ``b_dec``, ``threshold``.
- Gemma Scope 2 (Gemma 3): ``params.safetensors`` with lower-case ``w_enc``/``w_dec``, the same
  biases and threshold, an optional ``affine_skip_connection (d_in, d_out)`` for skip
  transcoders, and an optional ``config.json`` naming the hooked modules.

Both encode ``codes = relu(pre) * (pre > threshold)`` with ``pre = x @ W_enc + b_enc``: the
input is *not* centred by ``b_dec`` (so ``pre_encoder_bias=False``), and the output is
``codes @ W_dec + b_dec`` (plus ``x @ affine_skip_connection``). A negative threshold acts as
zero, so thresholds are clamped at zero for sparselens's ``pre * (pre > threshold)``.
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from sparselens.core.atomic import read_json
from sparselens.io.foreign import ForeignDictionary, build, read_safetensors, require

if TYPE_CHECKING:
    from torch import Tensor

    from sparselens.dictionaries.base import Dictionary

NPZ_FILE = "params.npz"
SAFETENSORS_FILE = "params.safetensors"
CONFIG_FILE = "config.json"


def load_gemmascope(path: str | os.PathLike, *, hookpoint: str | None = None,
                    dtype: str = "float32") -> Dictionary:
    """Load ``params.npz`` / ``params.safetensors`` (or the folder holding one)."""
    source = weights_file(Path(path))
    state = read_npz(source) if source.suffix == ".npz" else read_safetensors(source)
    config_file = source.parent / CONFIG_FILE
    meta = read_json(config_file, "Gemma Scope config") if config_file.exists() else {}
    return build(translate(state, source, meta, hookpoint), dtype=dtype)


def weights_file(path: Path) -> Path:
    if path.is_file():
        return path
    for name in (NPZ_FILE, SAFETENSORS_FILE):
        if (path / name).is_file():
            return path / name
    raise FileNotFoundError(f"no Gemma Scope weights ({NPZ_FILE} or {SAFETENSORS_FILE}) at "
                            f"{path}; pass the file or the folder that holds it")


def read_npz(path: Path) -> dict[str, Tensor]:
    import numpy as np

    try:
        with np.load(path, allow_pickle=False) as data:
            return {key: torch.from_numpy(np.array(data[key])) for key in data.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as err:
        raise ValueError(f"{path} is not a readable .npz file ({err}); it may be truncated or "
                         "corrupted: download it again") from None


def translate(state: dict[str, Tensor], source: Path, meta: dict[str, Any] | None = None,
              hookpoint: str | None = None) -> ForeignDictionary:
    """Gemma Scope arrays -> sparselens ``jumprelu`` dictionary."""
    meta = meta or {}
    arrays = {(f"W_{k[2:]}" if k.startswith("w_") else k): v for k, v in state.items()}
    require(arrays, ["W_enc", "W_dec", "b_enc", "b_dec", "threshold"], source,
            "Gemma Scope files hold W_enc (d, n), W_dec (n, d), b_enc, b_dec and threshold")
    if arrays["W_enc"].dim() != 2 or arrays["W_dec"].dim() != 2:
        raise ValueError(f"{source}: W_enc and W_dec must be matrices, got shapes "
                         f"{tuple(arrays['W_enc'].shape)} and {tuple(arrays['W_dec'].shape)} "
                         "(cross-layer transcoders are not supported)")
    d_in, n_latents = arrays["W_enc"].shape
    d_out = arrays["W_dec"].shape[-1]
    tensors = {name: arrays[name].float() for name in ("W_enc", "W_dec", "b_enc", "b_dec")}
    tensors["threshold"] = arrays["threshold"].float().clamp_min(0)
    skip = "affine_skip_connection" in arrays
    if skip:
        tensors["W_skip"] = arrays["affine_skip_connection"].float()
    config = {"d_in": int(d_in), "n_latents": int(n_latents), "d_out": int(d_out),
              "pre_encoder_bias": False, "skip_connection": skip,
              "hookpoint": hookpoint or module_hookpoint(meta.get("hf_hook_point_in")),
              "target_hookpoint": module_hookpoint(meta.get("hf_hook_point_out")),
              "model": meta.get("model_name")}
    return ForeignDictionary(source=source, architecture="jumprelu", config=config,
                             tensors=tensors)


def module_hookpoint(name: str | None) -> str | None:
    """``model.layers.5.output`` -> ``model.layers.5``; ``....o_proj.input`` -> ``...:input``."""
    if not name:
        return None
    module, _, side = name.rpartition(".")
    if side == "output":
        return module
    return f"{module}:input" if side == "input" else name
