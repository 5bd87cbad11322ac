"""A latent's examples as texts an explainer or a scorer can read: tokens with the latent's
activation on each, cut from the example store's windows.

The store's train/test split decides which examples a reader gets: explainers read train
examples, scorers test examples, and the two never share a sequence. Non-activating contexts
are the store's random non-firing tokens whose whole window is quiet (the latent is zero on
every token shown), as in Paulo et al.'s scoring.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from sparselens.interpretation.examples import ExampleSet, FeatureExamples
from sparselens.interpretation.token_text import is_byte_level, piece_text, special_ids

Split = Literal["train", "test", "all"]


@dataclass(frozen=True)
class Context:
    """A window of text around an example token."""

    tokens: tuple[str, ...]
    """Display text of each token (special tokens are empty strings)."""
    activations: tuple[float, ...]
    """The latent's activation on each token."""
    seq: int
    pos: int
    """Sequence and position of the example token."""
    kind: str
    """"top", "samples" or "random" (the store set it came from)."""

    @property
    def text(self) -> str:
        return "".join(self.tokens)

    @property
    def max_activation(self) -> float:
        return max(self.activations, default=0.0)

    @property
    def firing(self) -> list[int]:
        """Indices of the tokens where the latent is non-zero."""
        return [i for i, a in enumerate(self.activations) if a != 0]

    def marked(self, marks: list[int] | None = None, levels: list[int] | None = None) -> str:
        """The text with tokens at `marks` (default: the firing tokens) wrapped in
        ``<<...>>``; neighbouring marked tokens share one pair of marks."""
        marks = self.firing if marks is None else marks
        chosen = set(marks)
        out, open_ = [], False
        for i, token in enumerate(self.tokens):
            if i in chosen and not open_:
                out.append("<<")
                open_ = True
            elif i not in chosen and open_:
                out.append(">>")
                open_ = False
            out.append(token)
        if open_:
            out.append(">>")
        return "".join(out)


class ContextReader:
    """Turns store slots into `Context`s; needs the windows pass and the token table."""

    def __init__(self, examples: FeatureExamples, tokenizer: object,
                 tokens: Tensor | None = None, view: tuple[int, int] | None = None) -> None:
        """`view` = (before, after) shows fewer tokens around each example than the store
        keeps (shorter prompts: a small model on a CPU pays for every token); a random
        context still counts as quiet only when the store's whole window is."""
        if examples.window is None:
            raise ValueError("the example store has no activation windows; run "
                             "collect_windows(...) on it before reading contexts")
        table = tokens if tokens is not None else examples.tokens
        if table is None:
            raise ValueError("the example store holds no token table; pass the cache's "
                             "tokens (ActivationCache.tokens())")
        self.examples, self.tokens = examples, table
        store_before, store_after = examples.window
        self.view = view or (store_before, store_after)
        if not (0 <= self.view[0] <= store_before and 0 <= self.view[1] <= store_after):
            raise ValueError(f"view {view} is outside the store's window "
                             f"({store_before}, {store_after})")
        self.tokenizer = tokenizer
        self.specials = special_ids(tokenizer)
        self._texts: dict[int, str] = {}
        self._byte_level = is_byte_level(tokenizer)

    def texts(self, ids: list[int]) -> tuple[str, ...]:
        """Display texts, decoding each distinct id once per reader (decoding inspects the
        tokenizer, which is slow for large vocabularies)."""
        missing = [i for i in dict.fromkeys(ids) if i not in self._texts]
        if missing:
            pieces = self.tokenizer.convert_ids_to_tokens(missing)  # type: ignore[attr-defined]
            for i, piece in zip(missing, pieces):
                self._texts[i] = ("" if i in self.specials or piece is None
                                  else piece_text(piece, self._byte_level))
        return tuple(self._texts[i] for i in ids)

    def contexts(self, latent: int, kind: str, split: Split = "all",
                 limit: int | None = None) -> list[Context]:
        """Contexts of `latent` from store set `kind` ("top", "samples", "random") in
        `split`; random contexts are kept only when the latent is zero on the whole window."""
        part: ExampleSet | None = self.examples.sets().get(kind)
        if part is None or part.windows is None:
            return []
        before, after = self.examples.window  # type: ignore[misc]
        seqs, positions = part.seq_ids[latent], part.positions[latent]
        keep = seqs >= 0
        if split != "all":
            test = self.examples.split.is_test(seqs)
            keep &= test if split == "test" else ~test
        out: list[Context] = []
        for slot in torch.nonzero(keep).squeeze(1).tolist():
            window = part.windows[latent, slot]
            if kind == "random" and bool((window != 0).any()):
                continue
            seq, pos = int(seqs[slot]), int(positions[slot])
            row = self.tokens[seq]
            lo = max(0, pos - self.view[0])
            hi = min(int(row.shape[0]), pos + self.view[1] + 1)
            ids = row[lo:hi].tolist()
            acts = window[lo - (pos - before):hi - (pos - before)].tolist()
            out.append(Context(self.texts([int(i) for i in ids]), tuple(acts), seq, pos,
                               kind))
            if limit is not None and len(out) >= limit:
                break
        return out

    def activating(self, latent: int, split: Split, limit: int) -> list[Context]:
        """Up to `limit` distinct activating contexts: the quantile sample first (it spans
        the activation range), topped up with top examples."""
        seen: set[tuple[int, int]] = set()
        out: list[Context] = []
        for kind in ("samples", "top"):
            for context in self.contexts(latent, kind, split):
                if (context.seq, context.pos) in seen:
                    continue
                seen.add((context.seq, context.pos))
                out.append(context)
        out.sort(key=lambda c: c.max_activation)
        return _spread(out, limit)


def _spread(contexts: list[Context], limit: int) -> list[Context]:
    """`limit` contexts evenly spaced over the list (sorted by activation, so every
    activation quantile stays represented)."""
    if len(contexts) <= limit:
        return contexts
    step = len(contexts) / limit
    return [contexts[int(i * step)] for i in range(limit)]
