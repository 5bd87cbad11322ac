"""Bounds on what one request may ask of the server, and the checks that apply them.

A viewer runs next to a researcher's data and a model that costs seconds per forward, so no
request may be large or long: bodies, texts, token counts, generation lengths and result
counts are all capped, and an over-limit request gets a 4xx saying the limit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Limits:
    max_body_bytes: int = 64 * 1024
    max_text_chars: int = 4000
    max_tokens: int = 256
    max_new_tokens: int = 64
    max_edits: int = 8
    max_abs_coef: float = 1000.0
    max_query_chars: int = 200
    max_results: int = 100


class BadRequest(ValueError):
    """A request that breaks a rule; the message says which."""


def text_field(body: dict[str, Any], key: str, max_chars: int, required: bool = True) -> str:
    value = body.get(key, "")
    if not isinstance(value, str):
        raise BadRequest(f"{key!r} must be a string")
    if required and not value.strip():
        raise BadRequest(f"{key!r} is empty; give some text")
    if len(value) > max_chars:
        raise BadRequest(f"{key!r} has {len(value)} characters; at most {max_chars} are taken")
    return value


def int_field(body: dict[str, Any], key: str, lo: int, hi: int,
              default: int | None = None) -> int | None:
    value = body.get(key, default)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise BadRequest(f"{key!r} must be an integer from {lo} to {hi}, got {value!r}")
    return value


def number_field(body: dict[str, Any], key: str, bound: float) -> float:
    value = body.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)) \
            or not -bound <= value <= bound:
        raise BadRequest(f"{key!r} must be a number from {-bound} to {bound}, got {value!r}")
    return float(value)
