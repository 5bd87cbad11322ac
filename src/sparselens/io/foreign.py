"""Turn another library's tensors into an ordinary sparselens dictionary, refusing bad files.

Every reader (SAELens, sparsify, Gemma Scope, dictionary_learning) translates its files into
one `ForeignDictionary`: a registry name, config fields, and tensors already in sparselens's
layout and semantics (``W_enc (d_in, n)``, ``W_dec (n, d_out)``, ``W_skip (d_in, d_out)``).
Construction and validation live here once, so every format gives the same clear errors for
missing variants, wrong shapes and non-finite weights, each naming the offending file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

if TYPE_CHECKING:
    from sparselens.dictionaries.base import Dictionary

UNIT_NORM_TOLERANCE = 1e-4
"""Decoder rows within this of norm 1 count as unit-norm (keeps training from rescaling them)."""


@dataclass
class ForeignDictionary:
    """A dictionary read from a foreign format, translated but not yet built."""

    source: Path
    """The file the tensors came from; every error names it."""
    architecture: str
    """sparselens registry name (``relu``, ``topk``, ``jumprelu``, ...)."""
    config: dict[str, Any]
    """Config fields for the variant (widths are checked against the tensors)."""
    tensors: dict[str, Tensor] = field(default_factory=dict)
    """State-dict entries in sparselens layout; every parameter of the variant must be here."""


def variant_class(architecture: str, source: Path, what: str) -> type[Dictionary]:
    """The registered class for `architecture`, or a clear "not supported yet" error."""
    import sparselens.dictionaries  # noqa: F401  (registers the built-in variants)
    from sparselens.dictionaries.base import REGISTRY

    if architecture not in REGISTRY:
        raise ValueError(f"{source}: {what} maps onto the sparselens variant {architecture!r}, "
                         "which this version of sparselens does not have yet (registered: "
                         f"{sorted(REGISTRY)}); upgrade sparselens or convert the file to a "
                         "supported architecture in its own library")
    return REGISTRY[architecture]


def build(foreign: ForeignDictionary, dtype: str = "float32") -> Dictionary:
    """Build the registered variant and load the tensors, checking names, shapes and values."""
    cls = variant_class(foreign.architecture, foreign.source, "this file")
    config = dict(foreign.config, dtype=dtype)
    if "W_dec" in foreign.tensors and "unit_norm_decoder" not in config:
        config["unit_norm_decoder"] = has_unit_rows(foreign.tensors["W_dec"])
    try:
        cfg = cls.config_class.from_dict(config)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{foreign.source}: the file's settings do not make a valid "
                         f"{foreign.architecture!r} dictionary: {err}") from None
    with torch.no_grad():
        model = cls(cfg)
    own = model.state_dict()
    for name, tensor in foreign.tensors.items():
        check_tensor(foreign.source, name, tensor, own)
    params = {name for name, _ in model.named_parameters()}
    missing = sorted(params - set(foreign.tensors))
    if missing:
        raise ValueError(f"{foreign.source}: the {foreign.architecture!r} variant needs tensors "
                         f"{missing} that the reader did not provide; this file layout is not "
                         "supported")
    state = {name: t.detach().to(own[name].dtype).contiguous()
             for name, t in foreign.tensors.items()}
    model.load_state_dict(state, strict=False)
    return model


def check_tensor(source: Path, name: str, tensor: Tensor, own: dict[str, Tensor]) -> None:
    """Refuse unknown names, shapes that contradict the config, and NaN/inf values."""
    if name not in own:
        raise ValueError(f"{source}: tensor {name!r} has no place in this dictionary "
                         f"(expected {sorted(own)}); the file layout is not supported")
    expected = tuple(own[name].shape)
    if tuple(tensor.shape) != expected:
        raise ValueError(f"{source}: tensor {name!r} has shape {tuple(tensor.shape)}, but the "
                         f"file's config implies {expected}; the weights and config do not "
                         "belong together (re-export them from the source library)")
    if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
        raise ValueError(f"{source}: tensor {name!r} contains NaN or infinite values; the "
                         "checkpoint is corrupted or its training diverged: use an earlier "
                         "checkpoint or re-train")


def has_unit_rows(w_dec: Tensor) -> bool:
    norms = w_dec.float().norm(dim=-1)
    return bool(((norms - 1).abs() <= UNIT_NORM_TOLERANCE).all())


def require(tensors: dict[str, Tensor], names: list[str], source: Path, hint: str) -> None:
    """Raise if any of `names` is missing from a foreign state dict."""
    missing = [n for n in names if n not in tensors]
    if missing:
        raise ValueError(f"{source}: missing tensor(s) {missing} (found {sorted(tensors)}); "
                         f"{hint}")


def read_safetensors(path: Path) -> dict[str, Tensor]:
    """All tensors of a safetensors file, with errors that name the file."""
    from safetensors.torch import load_file

    if not path.is_file():
        raise FileNotFoundError(f"weights file {path} does not exist")
    try:
        return load_file(path)
    except Exception as err:  # safetensors raises its own error types for bad headers
        raise ValueError(f"{path} is not a readable safetensors file ({err}); it may be "
                         "truncated or corrupted: download or export it again") from None


def fold_decoder_norms(tensors: dict[str, Tensor]) -> None:
    """Make decoder rows unit-norm without changing the reconstruction, in place.

    For ``codes = act(x W_enc + b_enc)`` with a positively homogeneous activation (ReLU, or a
    TopK that ranks the rescaled pre-activations), scaling latent i's encoder column and bias
    by ``||W_dec[i]||`` and dividing its decoder row by it leaves ``codes @ W_dec`` unchanged.
    """
    norms = tensors["W_dec"].norm(dim=-1).clamp_min(1e-8)
    tensors["W_dec"] = tensors["W_dec"] / norms[:, None]
    tensors["W_enc"] = tensors["W_enc"] * norms[None, :]
    tensors["b_enc"] = tensors["b_enc"] * norms
