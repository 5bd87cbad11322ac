"""Search across the served dictionaries: by latent id, by token, by explanation text.

- ``42`` or ``#42``: latent 42 of every dictionary that has it.
- a token (`` Paris``): latents whose top examples sit on that token, from the viewer index;
  the exact token text first (leading space significant), then its case variants with and
  without a leading space (`index.find_token_entries`); ranked by how many of their top
  examples are on it.
- words: latents whose explanation contains all of them.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from sparselens.server.index import find_token_entries
from sparselens.server.store import DictionaryStore

_ID = re.compile(r"^#?(\d+)$")


def _hit(store: DictionaryStore, latent: int, kind: str, detail: str) -> dict[str, Any]:
    ex = store.examples
    density = (int(ex.counts[latent]) / max(1, ex.n_tokens)) if ex is not None else None
    explanation = store.explanations.of(latent)
    return {"dictionary": store.name, "latent": latent, "kind": kind, "detail": detail,
            "density": density, "explanation": explanation[0]["text"] if explanation else None}


def by_id(stores: Sequence[DictionaryStore], latent: int) -> list[dict[str, Any]]:
    return [_hit(s, latent, "id", f"latent {latent}") for s in stores if latent < s.n_latents]


def by_token(stores: Sequence[DictionaryStore], query: str, limit: int) -> list[dict[str, Any]]:
    hits: list[tuple[float, dict[str, Any]]] = []
    for store in stores:
        if store.index is None:
            continue
        n_top = store.examples.n_top if store.examples is not None else 1
        for entry in find_token_entries(store.index, query):
            text = store.index.text_of(entry)
            exact = text == query
            for latent, count in store.index.latents_on_token(entry, limit):
                detail = f"{int(count)} of its top {n_top} examples on {text!r}"
                hits.append(((0 if exact else 1, -count, latent),
                             _hit(store, latent, "token", detail)))
    hits.sort(key=lambda h: h[0])
    seen, unique = set(), []
    for _, hit in hits:
        key = (hit["dictionary"], hit["latent"])
        if key not in seen:
            seen.add(key)
            unique.append(hit)
    return unique[:limit]


def by_explanation(stores: Sequence[DictionaryStore], query: str,
                   limit: int) -> list[dict[str, Any]]:
    return [_hit(s, latent, "explanation", text) for s in stores
            for latent, text in s.explanations.search(query, limit)][:limit]


def search(stores: Sequence[DictionaryStore], query: str, limit: int) -> list[dict[str, Any]]:
    """Id matches, then token matches, then explanation matches."""
    match = _ID.match(query.strip())
    if match:
        return by_id(stores, int(match.group(1)))
    if not query.strip():
        return []
    results = by_token(stores, query, limit)
    return results + by_explanation(stores, query, limit - len(results))
