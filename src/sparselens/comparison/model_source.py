"""Which model a dictionary reads, when the dictionary itself does not say.

A dictionary trained with ``sparselens train CACHE`` records its hookpoint but not always its
model; the model is in the activation cache's manifest. The usual layouts keep the cache beside
the dictionary (``sparselens run``: ``runs/x/sae`` and ``runs/x/cache``), so those manifests are
read: the model is inferred only when exactly one model is found among nearby caches that hold
the dictionary's hookpoint; otherwise the error lists what was found and asks for --model.
"""

from __future__ import annotations

import json
from pathlib import Path

from sparselens.dictionaries.base import Dictionary

MANIFEST = "manifest.json"
CACHE_FORMAT = "sparselens-activation-cache"


def _cache_models(folder: Path, hookpoint: str | None) -> dict[str, Path]:
    """Model name -> manifest, of the single-model caches in `folder`'s subfolders (and
    `folder` itself) that hold `hookpoint` (any, when None)."""
    found: dict[str, Path] = {}
    for manifest in [folder / MANIFEST, *sorted(folder.glob(f"*/{MANIFEST}"))]:
        try:
            data = json.loads(manifest.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if not isinstance(data, dict) or data.get("format") != CACHE_FORMAT:
            continue
        model = data.get("model")
        names = [h.get("name") for h in data.get("hookpoints", []) if isinstance(h, dict)]
        if isinstance(model, str) and (hookpoint is None or hookpoint in names):
            found.setdefault(model, manifest)
    return found


def infer_model(path: str | Path, dictionary: Dictionary) -> tuple[str, str]:
    """(model, where it was found) for the dictionary saved at `path`; ValueError saying what
    to pass when no single model can be told."""
    if dictionary.cfg.model:
        return dictionary.cfg.model, "the dictionary's config"
    folder = Path(path).expanduser().resolve()
    found: dict[str, Path] = {}
    for parent in (folder.parent, folder.parent.parent):
        found = _cache_models(parent, dictionary.cfg.hookpoint)
        if found:
            break
    if len(found) == 1:
        model, manifest = next(iter(found.items()))
        return model, f"the activation cache manifest {manifest}"
    seen = (f"; caches beside it read several models ({', '.join(sorted(found))})" if found
            else f"; no activation cache holding {dictionary.cfg.hookpoint or 'its hookpoint'} "
                 f"was found beside it (in {folder.parent} or {folder.parent.parent})")
    raise ValueError(f"{path} does not record the model it reads{seen}: pass --model (an "
                     "embedded name such as gemma-3-270m, a model folder or a .gguf file)")
