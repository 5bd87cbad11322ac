"""Pairing the tokens of two models whose tokenizers differ, by character spans of the text.

Two models compared on "the same tokens" (activation correlation, SVCCA/CKA, ITDA's Jaccard)
need a shared grid of positions. With one tokenizer that grid is the token grid. With two, the
shared positions are the **shared token boundaries**: character offsets of the text at which a
token of A and a token of B both end. Each such offset is one aligned position, labelled
``(document, end offset)``, and each model contributes either

- ``pool="last"``: the activation of its token ending there (a causal model's state after
  reading exactly the text up to that offset: both models have seen the same characters), or
- ``pool="mean"``: the mean activation over its tokens since the previous shared boundary
  (the aligned span), so tokens between boundaries also count.

Offsets come from the fast tokenizers' ``return_offsets_mapping``; a slow tokenizer (no
offsets) is refused with what to do. Several byte-level tokens can end inside one multi-byte
character (same end offset): the last of them, which completes the character, stands for it.
Special tokens (BOS, EOS) are never aligned.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from sparselens.comparison.compare import SharedTokens
from sparselens.data.chunking import special_token_ids
from sparselens.dictionaries.base import Dictionary
from sparselens.interpretation.examples import ExampleCollector
from sparselens.lens import Lens
from sparselens.lens.tokens import padded_grid

POOLS = ("last", "mean")


@dataclass
class TokenSpans:
    """One text's tokens: ids and each token's character end offset (-1 on special tokens)."""

    ids: list[int]
    ends: np.ndarray


def token_spans(tokenizer: object, text: str, max_tokens: int | None = None) -> TokenSpans:
    """Token ids of `text` (special tokens as the model expects them, cut to `max_tokens`)
    with each token's character end offset."""
    try:
        enc = tokenizer(text, return_offsets_mapping=True)  # type: ignore[operator]
    except NotImplementedError:
        raise ValueError(f"the tokenizer {type(tokenizer).__name__} gives no character offsets "
                         "(a slow tokenizer): aligning two models' tokens needs fast tokenizers "
                         "(save the model with its tokenizer.json, or use_fast=True)") from None
    ids = list(enc["input_ids"])[:max_tokens]
    offsets = list(enc["offset_mapping"])[:max_tokens]
    specials = set(special_token_ids(tokenizer))
    ends = np.array([-1 if (i in specials or end <= start) else int(end)
                     for i, (start, end) in zip(ids, offsets)], dtype=np.int64)
    return TokenSpans(ids, ends)


def shared_boundaries(ends_a: np.ndarray, ends_b: np.ndarray) -> np.ndarray:
    """Character offsets at which a (non-special) token of each side ends, ascending."""
    return np.intersect1d(ends_a[ends_a > 0], ends_b[ends_b > 0])


def _rows_for(ends: np.ndarray, boundaries: np.ndarray, pool: str) -> list[np.ndarray]:
    """Per boundary, the token positions whose activations stand for it: the last token ending
    there ("last"), or every token ending after the previous boundary and by this one
    ("mean")."""
    positions = np.flatnonzero(ends > 0)
    real_ends = ends[positions]
    last = positions[np.searchsorted(real_ends, boundaries, side="right") - 1]
    if pool == "last":
        return [np.array([p]) for p in last]
    previous = np.r_[0, boundaries[:-1]]
    return [positions[(real_ends > lo) & (real_ends <= hi)]
            for lo, hi in zip(previous, boundaries)]


@dataclass
class AlignedActivations:
    """Both models' activations at the shared boundaries of a set of texts."""

    acts_a: dict[str, Tensor]
    """Per hookpoint of model A, ``(N, d)`` float32 rows, one per aligned position."""
    acts_b: dict[str, Tensor]
    """Per hookpoint of model B, the same positions."""
    doc: Tensor
    """``(N,)`` int64: the text each position is in."""
    offset: Tensor
    """``(N,)`` int64: the character offset (end of the aligned span) in that text."""
    tokens_a: int
    """Non-special tokens of A read (the aligned positions are a subset)."""
    tokens_b: int
    pool: str
    token_a: Tensor | None = None
    """``(N,)`` the id of A's token ending at each aligned position."""
    token_b: Tensor | None = None

    @property
    def n(self) -> int:
        return int(self.doc.shape[0])

    def coverage(self) -> tuple[float, float]:
        """Fraction of each model's tokens that end on a shared boundary."""
        return (self.n / max(self.tokens_a, 1), self.n / max(self.tokens_b, 1))


def _capture(lens: Lens, hookpoints: Sequence[str], spans: list[TokenSpans],
             picks: list[list[np.ndarray]], batch_size: int) -> dict[str, Tensor]:
    """Activations at `hookpoints` pooled over each document's picked token positions."""
    out: dict[str, list[Tensor]] = {hp: [] for hp in hookpoints}
    if not hookpoints:
        return {}
    for start in range(0, len(spans), batch_size):
        chunk = range(start, min(start + batch_size, len(spans)))
        tokens = padded_grid(lens.tokenizer, [spans[i].ids for i in chunk]).to(lens.device)
        seen = lens.capture(tokens, list(hookpoints))
        for hp in hookpoints:
            acts = seen[hp].float().cpu()
            for slot, doc in enumerate(chunk):
                sizes = torch.tensor([p.size for p in picks[doc]])
                flat = torch.as_tensor(np.concatenate(picks[doc]))
                segment = torch.repeat_interleave(torch.arange(sizes.numel()), sizes)
                pooled = torch.zeros(sizes.numel(), acts.shape[-1]).index_add_(
                    0, segment, acts[slot, flat])
                out[hp].append(pooled / sizes.unsqueeze(1))
    return {hp: torch.cat(parts) for hp, parts in out.items()}


@torch.no_grad()
def aligned_activations(lens_a: Lens, hookpoints_a: Sequence[str], lens_b: Lens,
                        hookpoints_b: Sequence[str], texts: Sequence[str], max_tokens: int = 128,
                        batch_size: int = 8, pool: str = "last",
                        max_positions: int | None = None) -> AlignedActivations:
    """Run both models over `texts` (each cut to `max_tokens` tokens and the models' contexts)
    and keep their activations at the shared token boundaries; stop adding texts once
    `max_positions` aligned positions are collected."""
    if pool not in POOLS:
        raise ValueError(f"pool must be one of {POOLS}, got {pool!r}")
    hookpoints_a = list(dict.fromkeys(hookpoints_a))
    hookpoints_b = list(dict.fromkeys(hookpoints_b))
    if not texts:
        raise ValueError("no texts to align the two models on")
    limits = [min(max_tokens, lens.context or max_tokens) for lens in (lens_a, lens_b)]
    spans_a, spans_b, picks_a, picks_b, docs, offsets = [], [], [], [], [], []
    last_a: list[np.ndarray] = []
    last_b: list[np.ndarray] = []
    n_tokens = [0, 0]
    total = 0
    for doc, text in enumerate(texts):
        sa = token_spans(lens_a.tokenizer, text, limits[0])
        sb = token_spans(lens_b.tokenizer, text, limits[1])
        # Only up to where both tokenizations still cover the text (each is cut separately).
        reach = min(sa.ends.max(initial=0), sb.ends.max(initial=0))
        bounds = shared_boundaries(sa.ends, sb.ends)
        bounds = bounds[bounds <= reach]
        if max_positions is not None:
            bounds = bounds[:max(0, max_positions - total)]
        if bounds.size == 0:
            continue
        spans_a.append(sa)
        spans_b.append(sb)
        picks_a.append(_rows_for(sa.ends, bounds, pool))
        picks_b.append(_rows_for(sb.ends, bounds, pool))
        n_tokens[0] += int(((sa.ends > 0) & (sa.ends <= bounds[-1])).sum())
        n_tokens[1] += int(((sb.ends > 0) & (sb.ends <= bounds[-1])).sum())
        last_a.append(np.array([sa.ids[p[-1]] for p in picks_a[-1]]))
        last_b.append(np.array([sb.ids[p[-1]] for p in picks_b[-1]]))
        docs.append(np.full(bounds.size, doc))
        offsets.append(bounds)
        total += bounds.size
        if max_positions is not None and total >= max_positions:
            break
    if total == 0:
        raise ValueError("the two tokenizations share no token boundary in these texts; give "
                         "longer texts (words separated by spaces always align)")
    acts_a = _capture(lens_a, hookpoints_a, spans_a, picks_a, batch_size)
    acts_b = _capture(lens_b, hookpoints_b, spans_b, picks_b, batch_size)
    return AlignedActivations(acts_a, acts_b, torch.as_tensor(np.concatenate(docs)),
                              torch.as_tensor(np.concatenate(offsets)), n_tokens[0],
                              n_tokens[1], pool, torch.as_tensor(np.concatenate(last_a)),
                              torch.as_tensor(np.concatenate(last_b)))


@torch.no_grad()
def aligned_shared_codes(a: Dictionary, b: Dictionary, lens_a: Lens, lens_b: Lens,
                         texts: Sequence[str], hookpoints: tuple[str, str] | None = None,
                         n_tokens: int = 100_000, max_tokens: int = 128, pool: str = "last",
                         batch_size: int = 8) -> tuple[SharedTokens, AlignedActivations]:
    """Both dictionaries' codes on the shared token boundaries of two models run over the same
    texts (their tokenizers may differ), as the `SharedTokens` `compare_dictionaries` takes.
    Example stores label rows by (text, character offset), so they show no token contexts."""
    from sparselens.comparison.correlation import codes_matrix
    from sparselens.comparison.lan_filter import semantic_rows

    hp = hookpoints or (a.cfg.hookpoint, b.cfg.hookpoint)
    if hp[0] is None or hp[1] is None:
        raise ValueError("a dictionary does not record its hookpoint; name the hookpoints to "
                         "read (--hookpoint-a / --hookpoint-b)")
    aligned = aligned_activations(lens_a, [hp[0]], lens_b, [hp[1]], texts, max_tokens,
                                  batch_size, pool, max_positions=n_tokens)
    out = []
    sides = ((a, aligned.acts_a[hp[0]], "A"), (b, aligned.acts_b[hp[1]], "B"))
    for dictionary, acts, side in sides:
        if acts.shape[1] != dictionary.cfg.d_in:
            raise ValueError(f"dictionary {side} reads width {dictionary.cfg.d_in} but its model "
                             f"gives {acts.shape[1]} at {hp[0] if side == 'A' else hp[1]}: wrong "
                             "model or hookpoint")
        collector = ExampleCollector(dictionary.cfg.n_latents)
        with dictionary.evaluating():
            codes = torch.cat([dictionary.encode(acts[i:i + 2048].to(dictionary.W_dec.device,
                                                                       dictionary.W_dec.dtype))
                               .float().cpu() for i in range(0, acts.shape[0], 2048)])
        collector.update(codes, aligned.doc, aligned.offset)
        out.append((codes_matrix(codes), collector.result(side)))
    ids = (aligned.token_a.numpy(), aligned.token_b.numpy())
    semantic = (semantic_rows(lens_a.tokenizer, ids[0]), semantic_rows(lens_b.tokenizer, ids[1]))
    shared = SharedTokens(out[0][0], out[1][0], out[0][1], out[1][1], "aligned", ids, semantic)
    return shared, aligned
