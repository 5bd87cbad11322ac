"""Documents -> fixed-length token windows, the unit a model is run on while harvesting.

Documents are tokenized in batches, joined into one token stream with a separator in front of
each document, and cut into windows of exactly ``context_len`` tokens, so no token is padding
and none is thrown away except the final partial window. Every window can start with the start
token, so each sees the same kind of first position the model saw in training.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from itertools import islice
from typing import Any

import torch
from torch import Tensor


@dataclass
class Chunk:
    """One window of ``context_len`` tokens."""

    ids: Tensor
    """``(L,)`` int64 token ids."""
    special: Tensor
    """``(L,)`` bool: True at BOS/EOS/pad and other special tokens, to leave out of training and
    statistics (their activations are outliers that say nothing about the text)."""
    doc_id: int
    """Index, in the input documents, of the document the window's first text token belongs to."""


def start_token_id(tokenizer: Any) -> int:
    """The token that opens every window and separates documents.

    BOS when the tokenizer has one. GPT-2-style tokenizers have no BOS: there the model was
    trained on documents joined by EOS (``<|endoftext|>``), so EOS is what it has seen at a
    document start, and it serves as both opener and separator.
    """
    for token_id in (tokenizer.bos_token_id, tokenizer.eos_token_id):
        if token_id is not None:
            return int(token_id)
    raise ValueError("the tokenizer has neither a BOS nor an EOS token, so documents cannot be "
                     "separated; set tokenizer.bos_token or tokenizer.eos_token first")


def special_token_ids(tokenizer: Any) -> list[int]:
    ids = set(getattr(tokenizer, "all_special_ids", []) or [])
    for name in ("bos_token_id", "eos_token_id", "pad_token_id", "unk_token_id"):
        if getattr(tokenizer, name, None) is not None:
            ids.add(int(getattr(tokenizer, name)))
    return sorted(ids)


def _tokenized(texts: Iterable[str], tokenizer: Any, docs_per_call: int) -> Iterator[list[int]]:
    """Token ids per document. Text that spells a special token (say ``<eos>``) is tokenized as
    plain text: a corpus must not be able to inject control tokens."""
    texts = iter(texts)
    while batch := list(islice(texts, docs_per_call)):
        yield from tokenizer(batch, add_special_tokens=False, split_special_tokens=True,
                             verbose=False)["input_ids"]


class _Stream:
    """A growing token buffer that remembers at which offset each document begins."""

    def __init__(self) -> None:
        self.ids: list[int] = []
        self.doc_starts: list[int] = []
        self.doc_ids: list[int] = []

    def add(self, tokens: list[int], doc_id: int) -> None:
        self.doc_starts.append(len(self.ids))
        self.doc_ids.append(doc_id)
        self.ids.extend(tokens)

    def doc_at(self, offset: int) -> int:
        return self.doc_ids[bisect.bisect_right(self.doc_starts, offset) - 1]

    def drop_before(self, offset: int) -> None:
        """Forget consumed tokens; the document containing `offset` is kept."""
        keep = bisect.bisect_right(self.doc_starts, offset) - 1
        del self.ids[:offset]
        self.doc_ids = self.doc_ids[keep:]
        self.doc_starts = [max(s - offset, 0) for s in self.doc_starts[keep:]]


def chunk_texts(texts: Iterable[str], tokenizer: Any, context_len: int, add_bos: bool = True,
                *, docs_per_call: int = 64, pad_last: bool = False) -> Iterator[Chunk]:
    """Cut documents into ``context_len`` windows; deterministic for a given input order.

    With `add_bos`, each window is the start token (see `start_token_id`) followed by
    ``context_len - 1`` stream tokens; a document separator that would follow it directly is
    skipped rather than doubled. The final partial window is dropped unless `pad_last`, which
    fills it with the pad token (EOS if there is none), marked special. Empty documents add no
    tokens but still count for ``doc_id``.
    """
    if context_len < 2:
        raise ValueError(f"context_len must be >= 2, got {context_len}")
    start_id = start_token_id(tokenizer)
    specials = torch.tensor(special_token_ids(tokenizer), dtype=torch.long)
    body = context_len - 1 if add_bos else context_len

    def make(tokens: list[int], doc_id: int) -> Chunk:
        ids = torch.tensor(([start_id] if add_bos else []) + tokens, dtype=torch.long)
        return Chunk(ids=ids, special=torch.isin(ids, specials), doc_id=doc_id)

    stream = _Stream()
    for doc_id, tokens in enumerate(_tokenized(texts, tokenizer, docs_per_call)):
        if tokens:
            stream.add([start_id] + tokens, doc_id)
        pos = 0
        while True:
            first = pos + 1 if add_bos and stream.ids[pos:pos + 1] == [start_id] else pos
            if len(stream.ids) - first < body:
                break
            yield make(stream.ids[first:first + body], stream.doc_at(first))
            pos = first + body
        stream.drop_before(pos)
    first = 1 if add_bos and stream.ids[:1] == [start_id] else 0
    if pad_last and len(stream.ids) > first:
        pad_id = next(i for i in (tokenizer.pad_token_id, tokenizer.eos_token_id, start_id)
                      if i is not None)
        tail = stream.ids[first:]
        yield make(tail + [pad_id] * (body - len(tail)), stream.doc_at(first))
