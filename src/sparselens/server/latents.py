"""The latent list of one dictionary: sorted, paged, with each latent's strongest example.

Sorting needs one number per latent (firing count, mean or max activation), which the store
keeps or reads once (O(n_latents) floats); a page then renders only its own rows.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from sparselens.server.feature import render_example
from sparselens.server.store import DictionaryStore

SORTS = ("density", "density-asc", "mean", "max", "id")


def _order(store: DictionaryStore, sort: str) -> Tensor:
    ex = store.examples
    assert ex is not None
    counts = ex.counts.double()
    key = {"density": -counts, "density-asc": counts,
           "mean": -(ex.sums / counts.clamp_min(1)),
           "max": -ex.max_activation().double(),
           "id": torch.arange(store.n_latents, dtype=torch.float64)}[sort]
    return torch.argsort(key, stable=True)


def latent_list(store: DictionaryStore, sort: str, page: int, size: int,
                include_dead: bool) -> dict[str, Any]:
    """One page of latents in `sort` order; dead latents last or left out."""
    ex = store.examples
    if ex is None:
        return {"total": 0, "rows": [], "page": page, "size": size}
    order = _order(store, sort)
    if not include_dead:
        order = order[ex.counts[order] > 0]
    rows = []
    for latent in order[page * size:(page + 1) * size].tolist():
        count = int(ex.counts[latent])
        top = ex.examples("top", latent)[:1]
        explanation = store.explanations.of(latent)
        rows.append({"latent": latent, "count": count, "density": count / max(1, ex.n_tokens),
                     "mean": float(ex.sums[latent]) / max(1, count),
                     "max": top[0].activation if top else 0.0,
                     "explanation": explanation[0]["text"] if explanation else None,
                     "example": render_example(store, top[0]) if top else None})
    return {"total": int(order.numel()), "rows": rows, "page": page, "size": size}
