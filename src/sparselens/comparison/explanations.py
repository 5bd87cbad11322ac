"""Names for latents: the explanations written next to a dictionary, when there are any.

`sparselens explain` writes one JSON object per line to ``explanations.jsonl`` in the
dictionary's folder. Comparison pages only read it, so they accept the few key spellings such
files use (``latent``/``feature``/``index`` and ``explanation``/``text``/``description``) and
work without the file: a latent without an explanation is shown by its number.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

EXPLANATIONS_FILE = "explanations.jsonl"
_ID_KEYS = ("latent", "feature", "index", "latent_id")
_TEXT_KEYS = ("explanation", "text", "description", "label")


def load_explanations(folder: str | os.PathLike | None) -> dict[int, str]:
    """Latent id -> explanation from ``folder/explanations.jsonl``; {} when absent. Lines that
    are not JSON objects with an id and a text are skipped (a half-written last line too)."""
    if folder is None:
        return {}
    path = Path(folder)
    path = path if path.is_file() else path / EXPLANATIONS_FILE
    if not path.is_file():
        return {}
    names: dict[int, str] = {}
    for line in path.read_text(errors="replace").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if not isinstance(record, dict):
            continue
        latent = next((record[k] for k in _ID_KEYS if isinstance(record.get(k), int)), None)
        text = next((record[k] for k in _TEXT_KEYS if isinstance(record.get(k), str)), None)
        if latent is not None and text:
            names[int(latent)] = text.strip()
    return names
