"""Explanations of latents, read from whatever JSONL the explainer left next to a dictionary.

The reader is tolerant on purpose: the explainer's schema may grow, and a half-written last
line (a run still going) must not stop the viewer. A record needs a latent id (``latent``,
``feature``, ``latent_id`` or ``index``) and a text (``explanation``, ``text`` or ``label``);
numbers under ``scores`` (or top-level keys ending in ``score``), or a scorer's nested result
for the explanation (``{"detection": {"explanation": {"value": 0.8}, "random": ...}}``), are
shown as its scores.
Anything else is skipped with a count, never an error.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ID_KEYS = ("latent", "feature", "latent_id", "feature_id", "index")
TEXT_KEYS = ("explanation", "text", "label", "description")


@dataclass
class Explanation:
    text: str
    scores: dict[str, float] = field(default_factory=dict)
    source: str = ""

    def as_json(self) -> dict[str, Any]:
        return {"text": self.text, "scores": self.scores, "source": self.source}


def _number(value: Any) -> float | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def _score_value(value: Any) -> float | None:
    """A score given as a number, or as ``{"explanation": {"value": v}, ...}`` (a scorer's
    result for the explanation beside its baselines), or ``{"value": v}``."""
    if isinstance(value, dict):
        for inner in (value.get("explanation"), value.get("latent"), value):
            if isinstance(inner, dict) and _number(inner.get("value")) is not None:
                return _number(inner["value"])
        return None
    return _number(value)


def _scores(record: dict[str, Any]) -> dict[str, float]:
    found: dict[str, Any] = {}
    nested = record.get("scores")
    if isinstance(nested, dict):
        found |= nested
    found |= {k: v for k, v in record.items() if k.endswith("score")}
    scores = {str(k): _score_value(v) for k, v in found.items()}
    return {k: v for k, v in scores.items() if v is not None}


def parse_record(record: Any) -> tuple[int, Explanation] | None:
    if not isinstance(record, dict):
        return None
    latent = next((record[k] for k in ID_KEYS if isinstance(record.get(k), int)), None)
    text = next((record[k] for k in TEXT_KEYS if isinstance(record.get(k), str)), None)
    if latent is None or text is None:
        return None
    source = record.get("explainer") or record.get("model") or ""
    return latent, Explanation(text.strip(), _scores(record), str(source))


class Explanations:
    """Every explanation of one dictionary, by latent (several explainers may each add one)."""

    def __init__(self) -> None:
        self.by_latent: dict[int, list[Explanation]] = {}
        self.files: list[str] = []
        self.skipped = 0

    @classmethod
    def read(cls, files: list[Path]) -> Explanations:
        found = cls()
        for path in files:
            found.files.append(path.name)
            with open(path, encoding="utf-8", errors="replace") as handle:
                for line in handle:
                    if not line.strip():
                        continue
                    try:
                        parsed = parse_record(json.loads(line))
                    except json.JSONDecodeError:
                        parsed = None
                    if parsed is None:
                        found.skipped += 1
                        continue
                    found.by_latent.setdefault(parsed[0], []).append(parsed[1])
        return found

    def __len__(self) -> int:
        return len(self.by_latent)

    def of(self, latent: int) -> list[dict[str, Any]]:
        return [e.as_json() for e in self.by_latent.get(latent, [])]

    def search(self, query: str, limit: int) -> list[tuple[int, str]]:
        """Latents whose explanation contains every word of `query` (case-insensitive)."""
        words = query.lower().split()
        hits = []
        for latent, explanations in self.by_latent.items():
            for explanation in explanations:
                text = explanation.text.lower()
                if words and all(w in text for w in words):
                    hits.append((latent, explanation.text))
                    break
        hits.sort()
        return hits[:limit]
