"""Documents in, document embeddings out, through the feature API (`sparselens.lens`).

The only place comparison reads a model: each document is tokenized (special tokens as the
model expects them, cut to `max_tokens` and to the model's context: a document embedding
describes the document's start when it is longer), batches go through `Lens.encode` (one
forward that stops after the dictionary's hookpoint), and each document's sparse codes on its
non-special tokens are pooled (`datadiff.embed`). Documents are batched by length so little
padding is computed.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from tqdm import tqdm

from sparselens.comparison.datadiff import DocCodes, DocumentEmbeddings, embed
from sparselens.lens import Lens
from sparselens.lens.tokens import padded_grid


@torch.no_grad()
def embed_texts(lens: Lens, name: str, texts: Sequence[str], max_tokens: int = 256,
                batch_size: int = 8, pool: str = "max", progress: bool = False,
                description: str = "encoding") -> DocumentEmbeddings:
    """Pooled codes of dictionary `name` for every text (order kept)."""
    if max_tokens < 2 or batch_size < 1:
        raise ValueError("max_tokens must be at least 2 and batch_size at least 1")
    texts = list(texts)
    if not texts:
        raise ValueError("no documents to encode: the corpus is empty")
    tokenizer = lens.tokenizer
    if lens.context is not None:
        max_tokens = min(max_tokens, lens.context)
    rows = [tokenizer(text)["input_ids"][:max_tokens] for text in texts]
    order = sorted(range(len(rows)), key=lambda i: len(rows[i]))
    per_doc: list[DocCodes | None] = [None] * len(rows)
    n_latents = lens.dictionaries[name].cfg.n_latents
    for start in tqdm(range(0, len(order), batch_size), desc=description, disable=not progress,
                      unit="batch"):
        chosen = order[start:start + batch_size]
        tokens = padded_grid(tokenizer, [rows[i] for i in chosen])
        codes = lens.encode(tokens.to(lens.device), names=name).codes[name].to("cpu")
        keep = ~tokens.special
        width = tokens.ids.shape[1]
        for slot, doc in enumerate(chosen):
            flat = torch.arange(slot * width, (slot + 1) * width)[keep[slot]]
            per_doc[doc] = (codes.values[flat], codes.indices[flat])
    return embed([c for c in per_doc if c is not None], n_latents, pool, texts)
