"""``load_any(path)``: open a dictionary saved by sparselens or by another library, by looking.

Each format is recognised by the weights file it always writes, so detection never guesses
from contents: ``weights.safetensors`` (sparselens), ``sae_weights.safetensors`` (SAELens),
``sae.safetensors`` (sparsify), ``params.npz`` / ``params.safetensors`` (Gemma Scope),
``ae.pt`` (dictionary_learning). A folder of several dictionaries (a sparsify run with one
sub-folder per hookpoint, a dictionary_learning sweep) is refused with the list to choose from.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sparselens.io.dictionary_learning import load_dictionary_learning
from sparselens.io.gemmascope import load_gemmascope
from sparselens.io.saelens import load_saelens
from sparselens.io.sparsify_format import load_sparsify

if TYPE_CHECKING:
    from sparselens.dictionaries.base import Dictionary


def load_native(path: str | os.PathLike, *, dtype: str | None = None,
                device: str = "cpu") -> Dictionary:
    """A sparselens checkpoint, optionally cast to `dtype`."""
    from sparselens.core.dtypes import parse_dtype
    from sparselens.io.native import load_dictionary

    dictionary = load_dictionary(path, device=device)
    return dictionary.to(parse_dtype(dtype)) if dtype else dictionary


@dataclass(frozen=True)
class Format:
    """A checkpoint format and the file that proves a folder holds one."""

    name: str
    marker: str
    loader: Callable[..., Dictionary]
    loads_file: bool = False
    """The loader takes the marker file itself (else the folder holding it)."""


FORMATS = (
    Format("native", "weights.safetensors", load_native),
    Format("saelens", "sae_weights.safetensors", load_saelens),
    Format("sparsify", "sae.safetensors", load_sparsify),
    Format("gemmascope", "params.npz", load_gemmascope, loads_file=True),
    Format("gemmascope", "params.safetensors", load_gemmascope, loads_file=True),
    Format("dictionary_learning", "ae.pt", load_dictionary_learning, loads_file=True),
)
FORMAT_NAMES = tuple(dict.fromkeys(f.name for f in FORMATS))
_SUFFIXES = {".npz": "gemmascope", ".pt": "dictionary_learning"}
_CONFIG_NAMES = ("cfg.json", "config.json")


def load_any(path: str | os.PathLike, *, format: str | None = None,
             **options: Any) -> Dictionary:
    """Load a dictionary from a folder or file in any supported format.

    `format` skips detection (one of `FORMAT_NAMES`); `options` go to that format's loader,
    e.g. ``norm_scaling_factor`` for SAELens or ``dtype`` for all of them.
    """
    found, target = detect(Path(path), format)
    accepted = set(inspect.signature(found.loader).parameters) - {"path"}
    unknown = sorted(set(options) - accepted)
    if unknown:
        raise ValueError(f"option(s) {unknown} do not apply to {found.name} checkpoints "
                         f"(accepted: {sorted(accepted)})")
    return found.loader(target, **options)


def detect(path: Path, format: str | None = None) -> tuple[Format, Path]:
    """(format, path to hand its loader) for a file or folder."""
    if format is not None and format not in FORMAT_NAMES:
        raise ValueError(f"unknown format {format!r}; known: {list(FORMAT_NAMES)}")
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist")
    if path.is_file():
        return _detect_file(path, format)
    matches = [f for f in FORMATS if (path / f.marker).is_file()
               and (format is None or f.name == format)]
    if len(matches) > 1:
        names = ", ".join(f"{f.marker} ({f.name})" for f in matches)
        raise ValueError(f"{path} holds weights of several formats: {names}; pass format=... "
                         "to choose one")
    if matches:
        found = matches[0]
        return found, (path / found.marker if found.loads_file else path)
    raise _nothing_found(path)


def _detect_file(path: Path, format: str | None) -> tuple[Format, Path]:
    if path.name in _CONFIG_NAMES:
        return detect(path.parent, format)
    by_marker = [f for f in FORMATS if f.marker == path.name]
    name = format or (by_marker[0].name if by_marker else _SUFFIXES.get(path.suffix))
    if name is None:
        raise ValueError(f"{path} is not a file sparselens recognises; expected one of "
                         f"{[f.marker for f in FORMATS]} or the folder holding it")
    found = next(f for f in FORMATS if f.name == name)
    return found, (path if found.loads_file else path.parent)


def _nothing_found(path: Path) -> Exception:
    children = sorted(child for child in path.iterdir() if child.is_dir()
                      and any((child / f.marker).is_file() for f in FORMATS))
    if children:
        listed = ", ".join(child.name for child in children[:8])
        more = f" and {len(children) - 8} more" if len(children) > 8 else ""
        return ValueError(f"{path} holds {len(children)} dictionaries ({listed}{more}); pass "
                          f"one of them, e.g. {children[0]}")
    markers = ", ".join(f"{f.marker} ({f.name})" for f in FORMATS)
    return FileNotFoundError(f"no dictionary found in {path}: expected one of {markers}")
