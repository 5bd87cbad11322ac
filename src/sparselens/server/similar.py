"""Most similar latents by decoder cosine, in the same dictionary and in the other served ones.

The decoder is scanned in row blocks straight from its memory map, so memory is one block
(``BLOCK_ROWS x d``) whatever the width; a 65,536 x 640 float32 decoder takes a few tens of
milliseconds on 2 cores. Dictionaries whose decoder writes to a different width are skipped.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from sparselens.server.store import DictionaryStore

BLOCK_ROWS = 8192


def top_cosines(decoder: Any, n_rows: int, direction: Tensor, k: int,
                exclude: int | None = None) -> tuple[Tensor, Tensor]:
    """(cosines, row ids) of the `k` rows of `decoder` closest in direction to `direction`."""
    unit = direction / direction.norm().clamp_min(1e-12)
    best_values = torch.empty(0)
    best_ids = torch.empty(0, dtype=torch.long)
    for start in range(0, n_rows, BLOCK_ROWS):
        block = decoder[start:start + BLOCK_ROWS].float()
        cos = (block @ unit) / block.norm(dim=1).clamp_min(1e-12)
        if exclude is not None and start <= exclude < start + block.shape[0]:
            cos[exclude - start] = -2.0
        values, ids = cos.topk(min(k, cos.numel()))
        best_values = torch.cat([best_values, values])
        best_ids = torch.cat([best_ids, ids + start])
        keep = best_values.topk(min(k, best_values.numel())).indices
        best_values, best_ids = best_values[keep], best_ids[keep]
    return best_values, best_ids


def similar_latents(store: DictionaryStore, latent: int, stores: Sequence[DictionaryStore],
                    k: int = 10) -> list[dict[str, Any]]:
    """Per served dictionary with the same decoder width, its `k` nearest latents."""
    shape = store.decoder_shape()
    if len(shape) != 2:
        return []
    direction = store.decoder_row(latent)
    found = []
    for other in stores:
        other_shape = other.decoder_shape()
        if len(other_shape) != 2 or other_shape[1] != shape[1]:
            continue
        values, ids = top_cosines(other.decoder(), other_shape[0], direction, k,
                                  exclude=latent if other is store else None)
        found.append({"dictionary": other.name,
                      "latents": [{"latent": int(i), "cosine": round(float(v), 4),
                                   "explanation": (other.explanations.of(int(i)) or
                                                   [{"text": None}])[0]["text"]}
                                  for v, i in zip(values, ids)]})
    return found
