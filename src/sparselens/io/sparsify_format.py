"""EleutherAI sparsify checkpoints (``cfg.json`` + ``sae.safetensors``), read as sparselens TopK.

sparsify's encoder is an ``nn.Linear`` (weight ``(n, d)``, with bias) applied to ``x - b_dec``
for autoencoders and to ``x`` for transcoders (``transcode=True``); codes are ReLU then the
top k per token; the decoder ``W_dec`` is ``(n, d)`` plus ``b_dec``. An optional skip path adds
``x @ W_skip.T`` to the output. sparsify transcoders keep the input width (``b_dec`` is
``(d_in,)``). A trained run is a folder with one sub-folder per hookpoint; the sub-folder's name
is the hookpoint.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sparselens.core.atomic import read_json
from sparselens.io.foreign import ForeignDictionary, build, read_safetensors, require

if TYPE_CHECKING:
    from torch import Tensor

    from sparselens.dictionaries.base import Dictionary

CFG_FILE = "cfg.json"
WEIGHTS_FILE = "sae.safetensors"


def load_sparsify(path: str | os.PathLike, *, dtype: str = "float32") -> Dictionary:
    """Load one sparsify sparse coder folder (the one holding ``sae.safetensors``)."""
    folder = Path(path)
    if not folder.is_dir():
        raise FileNotFoundError(f"sparsify checkpoint {folder} is not a directory; pass the "
                                f"folder holding {CFG_FILE} and {WEIGHTS_FILE}")
    cfg = read_json(folder / CFG_FILE, "sparsify config")
    source = folder / WEIGHTS_FILE
    return build(translate(cfg, read_safetensors(source), source), dtype=dtype)


def translate(cfg: dict[str, Any], state: dict[str, Tensor], source: Path) -> ForeignDictionary:
    """sparsify config and state dict -> sparselens ``topk`` dictionary."""
    cfg_file = source.parent / CFG_FILE
    if not isinstance(cfg, dict) or "d_in" not in cfg:
        raise ValueError(f"{cfg_file} has no 'd_in'; it is not a sparsify config")
    activation = cfg.get("activation", "topk")
    if activation != "topk":
        raise ValueError(f"{cfg_file}: sparsify activation {activation!r} is not supported "
                         "(only 'topk'); retrain with activation='topk'")
    d_in = int(cfg["d_in"])
    n_latents = int(cfg.get("num_latents") or d_in * int(cfg.get("expansion_factor", 32)))
    transcode, skip = bool(cfg.get("transcode")), bool(cfg.get("skip_connection"))
    hint = "the weights do not match the sparsify config beside them"
    require(state, ["encoder.weight", "encoder.bias", "W_dec", "b_dec"], source,
            hint + " (a decoder-less checkpoint cannot be loaded)")
    tensors = {"W_enc": state["encoder.weight"].T, "b_enc": state["encoder.bias"],
               "W_dec": state["W_dec"], "b_dec": state["b_dec"]}
    if skip:
        require(state, ["W_skip"], source, hint)
        tensors["W_skip"] = state["W_skip"].T  # sparsify adds x @ W_skip.T
    config = {"d_in": d_in, "n_latents": n_latents, "d_out": d_in, "k": int(cfg.get("k", 32)),
              "pre_encoder_bias": not transcode, "skip_connection": skip,
              "hookpoint": source.parent.name}
    tensors = {name: t.float() for name, t in tensors.items()}
    return ForeignDictionary(source=source, architecture="topk", config=config, tensors=tensors)
