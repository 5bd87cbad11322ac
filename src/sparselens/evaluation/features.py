"""Text in, per-text features out: the suite's one call into the feature API (`Lens.encode`).

Probing-style metrics (sparse probing, TPP, SCR) describe each text by the mean over its
non-special tokens of the dictionary's codes and of the raw activation the dictionary reads,
as SAEBench does (mean pooling over the sequence, BOS/EOS/padding excluded). Absorption reads
one position of each prompt (`position_features`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor
from tqdm.auto import tqdm

from sparselens.lens import Lens
from sparselens.lens.tokens import Tokens, padded_grid


@dataclass
class PooledFeatures:
    """Codes ``(n, n_latents)`` and the input activations ``(n, d_in)``, float32 on the CPU."""

    codes: Tensor
    activations: Tensor


def token_ids(lens: Lens, texts: Sequence[str], max_length: int) -> list[list[int]]:
    """Each text tokenized the model's way (BOS included) and cut to `max_length` tokens."""
    return [lens.tokenizer(t)["input_ids"][:max_length] for t in texts]


def _grid(lens: Lens, rows: Sequence[Sequence[int]]) -> Tokens:
    """Right-padded `Tokens` on the lens's device."""
    return padded_grid(lens.tokenizer, rows).to(lens.device)


def _batches(n: int, batch_size: int, progress: bool, desc: str):
    return tqdm(range(0, n, batch_size), desc=desc, disable=not progress, leave=False)


@torch.no_grad()
def pooled_features(lens: Lens, name: str, texts: Sequence[str], *, batch_size: int = 16,
                    max_length: int = 128, progress: bool = True,
                    desc: str = "encoding") -> PooledFeatures:
    """Mean of codes and input activations over each text's non-special tokens (texts cut to
    `max_length` tokens). Raises if a text has no ordinary token."""
    rows = token_ids(lens, texts, max_length)
    order = sorted(range(len(rows)), key=lambda i: len(rows[i]))  # less padding per batch
    codes, acts = [], []
    for start in _batches(len(rows), batch_size, progress, desc):
        enc = lens.encode(_grid(lens, [rows[i] for i in order[start:start + batch_size]]), name)
        keep = (~enc.tokens.special).float().unsqueeze(-1)
        count = keep.sum(1)
        if bool((count == 0).any()):
            raise ValueError("a text has no ordinary (non-special) token; drop empty texts")
        codes.append(((enc.codes[name].dense().float() * keep).sum(1) / count).cpu())
        acts.append(((enc.activations[name].float() * keep).sum(1) / count).cpu())
    inverse = torch.empty(len(rows), dtype=torch.long)
    inverse[torch.tensor(order)] = torch.arange(len(rows))
    return PooledFeatures(torch.cat(codes)[inverse], torch.cat(acts)[inverse])


@torch.no_grad()
def position_features(lens: Lens, name: str, sequences: Sequence[Sequence[int]],
                      positions: Sequence[int], *, batch_size: int = 32, progress: bool = True,
                      desc: str = "encoding") -> PooledFeatures:
    """Codes and input activations at one position (counted from the start) of each sequence."""
    if len(sequences) != len(positions):
        raise ValueError(f"{len(sequences)} sequences but {len(positions)} positions")
    order = sorted(range(len(sequences)), key=lambda i: len(sequences[i]))  # less padding
    codes, acts = [], []
    for start in _batches(len(sequences), batch_size, progress, desc):
        chosen = order[start:start + batch_size]
        enc = lens.encode(_grid(lens, [sequences[i] for i in chosen]), name)
        rows = torch.arange(len(chosen))
        where = torch.tensor([positions[i] for i in chosen])
        codes.append(enc.codes[name].dense()[rows, where].float().cpu())
        acts.append(enc.activations[name][rows, where].float().cpu())
    inverse = torch.empty(len(sequences), dtype=torch.long)
    inverse[torch.tensor(order, dtype=torch.long)] = torch.arange(len(sequences))
    return PooledFeatures(torch.cat(codes)[inverse], torch.cat(acts)[inverse])
