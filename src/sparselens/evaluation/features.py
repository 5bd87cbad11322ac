"""Text in, per-text features out: the suite's one call into the feature API (`Lens.encode`).

Probing-style metrics (sparse probing, TPP, SCR) describe each text by the mean over its
non-special tokens of the dictionary's codes and of the raw activation the dictionary reads,
as SAEBench does (mean pooling over the sequence, BOS/EOS/padding excluded).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor
from tqdm.auto import tqdm

from sparselens.lens import Lens


@dataclass
class PooledFeatures:
    """Mean-pooled codes ``(n_texts, n_latents)`` and activations ``(n_texts, d_in)``."""

    codes: Tensor
    activations: Tensor


@torch.no_grad()
def pooled_features(lens: Lens, name: str, texts: Sequence[str], *, batch_size: int = 16,
                    max_length: int = 128, progress: bool = True,
                    desc: str = "encoding") -> PooledFeatures:
    """Mean of codes and input activations over each text's non-special tokens (float32).

    Texts are truncated to `max_length` tokens. Raises if a text has no ordinary token.
    """
    codes, acts = [], []
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))  # less padding per batch
    for start in tqdm(range(0, len(texts), batch_size), desc=desc, disable=not progress,
                      leave=False):
        chunk = [texts[i] for i in order[start:start + batch_size]]
        tokens = lens.tokenize(chunk, max_length=max_length)
        enc = lens.encode(tokens, name)
        keep = (~enc.tokens.special).float()
        count = keep.sum(1, keepdim=True)
        if bool((count == 0).any()):
            raise ValueError("a text has no ordinary (non-special) token; drop empty texts")
        dense = enc.codes[name].dense().float()
        codes.append((dense * keep.unsqueeze(-1)).sum(1) / count)
        act = enc.activations[name].float()
        acts.append((act * keep.unsqueeze(-1)).sum(1) / count)
    inverse = torch.empty(len(texts), dtype=torch.long)
    inverse[torch.tensor(order)] = torch.arange(len(texts))
    return PooledFeatures(torch.cat(codes).cpu()[inverse], torch.cat(acts).cpu()[inverse])
