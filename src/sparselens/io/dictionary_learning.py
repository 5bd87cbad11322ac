"""dictionary_learning checkpoints (``ae.pt`` + ``config.json``), read as sparselens variants.

``config.json`` names the class under ``trainer.dict_class``; ``ae.pt`` is its state dict.
The classes and what they compute (``x`` raw; their training folds any norm factor into the
saved weights):

- ``AutoEncoder``: ``relu(encoder(x - bias))``, ``decoder(f) + bias`` -> ``relu``. Its own
  ``from_pretrained`` rescales decoder columns to unit norm (folding the norms into the
  encoder, which keeps reconstructions); so do we unless ``normalize_decoder=False``.
- ``AutoEncoderNew``: ``relu(encoder(x))``, ``decoder(f)`` with biases -> ``relu`` without
  pre-encoder bias.
- ``GatedAutoEncoder``: gate ``encoder(x - decoder_bias) + gate_bias > 0`` times
  ``relu(exp(r_mag) * encoder(x - decoder_bias) + mag_bias)`` -> ``gated``.
- ``AutoEncoderTopK``: ReLU then top k per token -> ``topk``.
- ``BatchTopKSAE`` / ``MatryoshkaBatchTopKSAE``: inference keeps ``relu(pre)`` above the
  scalar ``threshold`` (-1 = never estimated, i.e. plain ReLU) -> ``batchtopk`` / ``matryoshka``
  with ``group_sizes`` from the checkpoint.
- ``JumpReluAutoEncoder``: ``relu(pre * (pre > threshold))`` with ``pre = x @ W_enc + b_enc``
  (its ``apply_b_dec_to_input`` is off unless set by hand) -> ``jumprelu``.
"""

from __future__ import annotations

import os
import pickle
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from sparselens.core.atomic import read_json
from sparselens.io.foreign import (
    ForeignDictionary,
    build,
    fold_decoder_norms,
    require,
)

if TYPE_CHECKING:
    from sparselens.dictionaries.base import Dictionary

WEIGHTS_FILE = "ae.pt"
CONFIG_FILE = "config.json"


def load_dictionary_learning(path: str | os.PathLike, *, normalize_decoder: bool = True,
                             dtype: str = "float32") -> Dictionary:
    """Load a dictionary_learning ``ae.pt`` (or the folder holding it and ``config.json``)."""
    path = Path(path)
    source = path if path.is_file() else path / WEIGHTS_FILE
    config_file = source.parent / CONFIG_FILE
    if not source.is_file():
        raise FileNotFoundError(f"no dictionary_learning weights at {source}; pass the "
                                f"{WEIGHTS_FILE} file or the folder holding it")
    if not config_file.is_file():
        raise FileNotFoundError(f"{config_file} is missing; dictionary_learning writes it "
                                f"beside {WEIGHTS_FILE} and it names the dictionary class")
    config = read_json(config_file, "dictionary_learning config")
    trainer = config.get("trainer") if isinstance(config, dict) else None
    if not isinstance(trainer, dict) or "dict_class" not in trainer:
        raise ValueError(f"{config_file} has no trainer.dict_class; it is not a "
                         "dictionary_learning config")
    foreign = translate(trainer, read_state(source), source, normalize_decoder)
    return build(foreign, dtype=dtype)


def read_state(path: Path) -> dict[str, Tensor]:
    """The saved state dict, loaded without unpickling arbitrary objects."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, pickle.UnpicklingError, zipfile.BadZipFile, EOFError) as err:
        raise ValueError(f"{path} is not a readable PyTorch state dict ({err}); it may be "
                         "truncated or corrupted: copy it again") from None
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise ValueError(f"{path} does not hold a state dict of tensors")
    return state


def translate(trainer: dict[str, Any], state: dict[str, Tensor], source: Path,
              normalize_decoder: bool = True) -> ForeignDictionary:
    """dictionary_learning trainer config and state dict -> sparselens variant."""
    dict_class = trainer["dict_class"]
    if dict_class not in _READERS:
        raise ValueError(f"{source.parent / CONFIG_FILE}: dictionary class {dict_class!r} is "
                         f"not supported (supported: {sorted(_READERS)})")
    hint = f"the weights do not match the class {dict_class!r} named in {CONFIG_FILE}"
    architecture, config, tensors = _READERS[dict_class](state, source, hint)
    tensors = {name: t.float() for name, t in tensors.items()}
    if dict_class == "AutoEncoder" and normalize_decoder:
        fold_decoder_norms(tensors)
    config = {"d_in": tensors["W_enc"].shape[0], "n_latents": tensors["W_enc"].shape[1],
              "model": trainer.get("lm_name"), "hookpoint": trainer.get("submodule_name"),
              **config}
    if "k" in config and "k" in trainer and int(trainer["k"]) != config["k"]:
        raise ValueError(f"{source}: k={config['k']} in the weights but k={trainer['k']} in "
                         f"{CONFIG_FILE}; the two files do not belong together")
    return ForeignDictionary(source=source, architecture=architecture, config=config,
                             tensors=tensors)


Translated = tuple[str, dict[str, Any], dict[str, Tensor]]
"""(sparselens variant, config fields, tensors in sparselens layout)."""
Reader = Callable[[dict[str, Tensor], Path, str], Translated]


def _linear(state: dict[str, Tensor], bias: str) -> dict[str, Tensor]:
    """Tensors of the classes built from ``nn.Linear`` encoder/decoder modules."""
    return {"W_enc": state["encoder.weight"].T, "b_enc": state["encoder.bias"],
            "W_dec": state["decoder.weight"].T, "b_dec": state[bias]}


def _autoencoder(state: dict[str, Tensor], source: Path, hint: str) -> Translated:
    require(state, ["encoder.weight", "encoder.bias", "decoder.weight", "bias"], source, hint)
    return "relu", {}, _linear(state, "bias")


def _autoencoder_new(state: dict[str, Tensor], source: Path, hint: str) -> Translated:
    require(state, ["encoder.weight", "encoder.bias", "decoder.weight", "decoder.bias"],
            source, hint)
    return "relu", {"pre_encoder_bias": False}, _linear(state, "decoder.bias")


def _gated(state: dict[str, Tensor], source: Path, hint: str) -> Translated:
    names = ["encoder.weight", "decoder.weight", "decoder_bias", "gate_bias", "mag_bias", "r_mag"]
    require(state, names, source, hint)
    return "gated", {}, {"W_enc": state["encoder.weight"].T, "b_enc": state["gate_bias"],
                         "W_dec": state["decoder.weight"].T, "b_dec": state["decoder_bias"],
                         "r_mag": state["r_mag"], "b_mag": state["mag_bias"]}


def _topk(state: dict[str, Tensor], source: Path, hint: str) -> Translated:
    require(state, ["encoder.weight", "encoder.bias", "decoder.weight", "b_dec", "k"],
            source, hint)
    return "topk", {"k": int(state["k"])}, _linear(state, "b_dec")


def _batch_topk(state: dict[str, Tensor], source: Path, hint: str) -> Translated:
    require(state, ["encoder.weight", "encoder.bias", "decoder.weight", "b_dec", "k",
                    "threshold"], source, hint)
    tensors = _linear(state, "b_dec")
    tensors["threshold"] = _threshold(state)
    return "batchtopk", {"k": int(state["k"]), "token_cap": None}, tensors


def _matryoshka(state: dict[str, Tensor], source: Path, hint: str) -> Translated:
    require(state, ["W_enc", "b_enc", "W_dec", "b_dec", "k", "threshold", "group_sizes"],
            source, hint)
    tensors = {name: state[name] for name in ("W_enc", "b_enc", "W_dec", "b_dec")}
    tensors["threshold"] = _threshold(state)
    config = {"k": int(state["k"]), "group_sizes": [int(s) for s in state["group_sizes"]],
              "token_cap": None}
    return "matryoshka", config, tensors


def _jumprelu(state: dict[str, Tensor], source: Path, hint: str) -> Translated:
    require(state, ["W_enc", "b_enc", "W_dec", "b_dec", "threshold"], source, hint)
    tensors = {name: state[name] for name in ("W_enc", "b_enc", "W_dec", "b_dec")}
    tensors["threshold"] = state["threshold"].float().clamp_min(0)
    return "jumprelu", {"pre_encoder_bias": False}, tensors


def _threshold(state: dict[str, Tensor]) -> Tensor:
    """The scalar inference threshold on ``relu(pre)``: below zero it passes every positive
    value, which is the same as a threshold of zero on ``pre``."""
    return state["threshold"].float().clamp_min(0).reshape(())


_READERS: dict[str, Reader] = {
    "AutoEncoder": _autoencoder,
    "AutoEncoderNew": _autoencoder_new,
    "GatedAutoEncoder": _gated,
    "AutoEncoderTopK": _topk,
    "BatchTopKSAE": _batch_topk,
    "MatryoshkaBatchTopKSAE": _matryoshka,
    "JumpReluAutoEncoder": _jumprelu,
}
