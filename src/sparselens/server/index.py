"""The viewer index: the token text behind an example store, in one memory-mapped file.

An example store (``examples.safetensors``) says *where* each latent fired, as (sequence,
position) pairs into the activation cache it was collected from; it holds no text. The cache
holds every harvested token, but reading a sequence from it means verifying a whole shard of
activations. So the viewer builds, once per example store, ``viewer_index.safetensors`` beside
it with only what pages need, every table sliceable on its own:

- ``seq_ids`` ``(U,)`` sorted, ``tokens`` ``(U, context_len)``: the token rows of the sequences
  some example lives in (found by binary search, never all read).
- ``vocab_ids`` ``(V,)`` sorted, ``vocab_offsets`` ``(V + 1,)``, ``vocab_bytes``: the UTF-8
  display text (`token_text.token_texts`) of every token id those rows use, so pages need no
  tokenizer.
- ``token_ptr`` ``(V + 1,)``, ``token_latents``, ``token_weight``: for each vocabulary entry the
  latents whose top examples sit on that token, most such examples first (search by token).
- ``special_ids``: ids of special tokens (shown greyed).

The file records the example store's size and modification time; a changed store gets a
fresh index. Building reads the cache's token table once (`ActivationCache.tokens`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from sparselens.interpretation.token_text import special_ids, token_texts
from sparselens.io.atomic import atomic_write_bytes

INDEX_FILE = "viewer_index.safetensors"
INDEX_VERSION = 1


def store_signature(examples_file: Path) -> str:
    """What identifies one written example store: its size and modification time."""
    stat = examples_file.stat()
    return f"{stat.st_size}:{stat.st_mtime_ns}"


def _vocab_tables(texts: Sequence[str]) -> tuple[Tensor, Tensor]:
    encoded = [t.encode("utf-8") for t in texts]
    lengths = torch.tensor([0, *map(len, encoded)], dtype=torch.long)
    data = torch.frombuffer(bytearray(b"".join(encoded)), dtype=torch.uint8) if any(encoded) \
        else torch.zeros(0, dtype=torch.uint8)
    return lengths.cumsum(0), data.clone()


def _token_latent_csr(top_seq: Tensor, top_pos: Tensor, seq_ids: Tensor, tokens: Tensor,
                      vocab_ids: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """For each vocabulary entry, the latents whose top examples are centred on that token."""
    n_vocab = vocab_ids.numel()
    feature = torch.arange(top_seq.shape[0]).unsqueeze(1).expand_as(top_seq)
    valid = top_seq >= 0
    row = torch.searchsorted(seq_ids, top_seq[valid])
    centre = tokens[row, top_pos[valid]].long()
    vocab_index = torch.searchsorted(vocab_ids, centre)
    pairs = vocab_index * top_seq.shape[0] + feature[valid]
    unique, counts = torch.unique(pairs, return_counts=True)
    entry_vocab = torch.div(unique, top_seq.shape[0], rounding_mode="floor")
    entry_latent = unique % top_seq.shape[0]
    # Sort by vocabulary entry, then by descending count (stable, so latent id breaks ties).
    order = torch.argsort(-counts, stable=True)
    order = order[torch.argsort(entry_vocab[order], stable=True)]
    ptr = torch.zeros(n_vocab + 1, dtype=torch.long)
    ptr[1:] = torch.bincount(entry_vocab, minlength=n_vocab).cumsum(0)
    return ptr, entry_latent[order].to(torch.int32), counts[order].to(torch.float32)


def build_index(examples_file: Path, tokens: Tensor, tokenizer: object,
                out: Path | None = None) -> Path:
    """Write the viewer index for the example store `examples_file` whose examples point into
    the ``(n_sequences, context_len)`` token table `tokens`; returns its path."""
    from safetensors import safe_open
    from safetensors.torch import save

    with safe_open(str(examples_file), framework="pt") as store:
        top_seq, top_pos = store.get_tensor("top.seq_ids"), store.get_tensor("top.positions")
        used = torch.unique(torch.cat([top_seq.reshape(-1),
                                       store.get_tensor("samples.seq_ids").reshape(-1)]))
    used = used[used >= 0]
    if used.numel() and int(used.max()) >= tokens.shape[0]:
        raise ValueError(f"{examples_file} refers to sequence {int(used.max())} but the token "
                         f"table has {tokens.shape[0]} sequences: give the cache the examples "
                         "were collected from")
    rows = tokens[used].to(torch.int32).contiguous()
    vocab_ids = torch.unique(rows.long())
    offsets, data = _vocab_tables(token_texts(tokenizer, vocab_ids.tolist()))
    ptr, latents, weight = _token_latent_csr(top_seq, top_pos, used, rows, vocab_ids)
    specials = torch.tensor(sorted(special_ids(tokenizer)), dtype=torch.long)
    tensors = {"seq_ids": used.long(), "tokens": rows, "vocab_ids": vocab_ids,
               "vocab_offsets": offsets, "vocab_bytes": data, "token_ptr": ptr,
               "token_latents": latents, "token_weight": weight, "special_ids": specials}
    meta = {"version": str(INDEX_VERSION), "examples": store_signature(examples_file)}
    path = out or examples_file.parent / INDEX_FILE
    atomic_write_bytes(path, save(tensors, metadata=meta))
    return path


@dataclass
class Context:
    """The tokens around one example: display texts, which are special, where the example is."""

    texts: list[str]
    special: list[bool]
    start: int
    """Position of the first token in its sequence."""


class ViewerIndex:
    """Read side of the index; everything is sliced from the memory map on demand."""

    def __init__(self, path: Path) -> None:
        from safetensors import safe_open

        self.path = path
        self._file = safe_open(str(path), framework="pt")
        self.meta = self._file.metadata() or {}
        self.seq_ids = self._file.get_tensor("seq_ids")
        self._tokens = self._file.get_slice("tokens")
        self.context_len = int(self._tokens.get_shape()[1])
        self.vocab_ids = self._file.get_tensor("vocab_ids")
        self._offsets = self._file.get_tensor("vocab_offsets")
        self._bytes = self._file.get_tensor("vocab_bytes")
        self._raw = memoryview(self._bytes.numpy())
        self._specials = set(self._file.get_tensor("special_ids").tolist())

    @classmethod
    def open_if_current(cls, examples_file: Path) -> ViewerIndex | None:
        """The index beside `examples_file` if it was built from this very store."""
        path = examples_file.parent / INDEX_FILE
        if not path.is_file():
            return None
        index = cls(path)
        current = (index.meta.get("version") == str(INDEX_VERSION)
                   and index.meta.get("examples") == store_signature(examples_file))
        return index if current else None

    def text_of(self, vocab_index: int) -> str:
        a, b = int(self._offsets[vocab_index]), int(self._offsets[vocab_index + 1])
        return str(self._raw[a:b], "utf-8", "replace")

    def texts(self, ids: Tensor) -> list[str]:
        """Display text of token ids (ids absent from the index show as ``<id>``)."""
        if not len(self.vocab_ids):
            return [f"<{int(i)}>" for i in ids.tolist()]
        where = torch.searchsorted(self.vocab_ids, ids).clamp_max(len(self.vocab_ids) - 1)
        known = (self.vocab_ids[where] == ids).tolist()
        starts, ends = self._offsets[where].tolist(), self._offsets[where + 1].tolist()
        raw = self._raw
        return [str(raw[a:b], "utf-8", "replace") if k else f"<{i}>"
                for a, b, k, i in zip(starts, ends, known, ids.tolist())]

    def context(self, seq: int, position: int, before: int, after: int) -> Context | None:
        """The window ``[position - before, position + after]`` of sequence `seq`."""
        row = int(torch.searchsorted(self.seq_ids, torch.tensor(seq)))
        if row >= len(self.seq_ids) or int(self.seq_ids[row]) != seq:
            return None
        start = max(0, position - before)
        end = min(self.context_len, position + after + 1)
        ids = self._tokens[row:row + 1, start:end].reshape(-1).long()
        return Context(self.texts(ids), [int(i) in self._specials for i in ids.tolist()], start)

    def entries_with_text(self, text: str) -> list[int]:
        """Vocabulary entries whose display text is exactly `text`: a vectorised byte
        comparison over the entries of that length (milliseconds for 260k entries, no
        per-entry Python work, nothing kept in memory)."""
        wanted = np.frombuffer(text.encode("utf-8"), dtype=np.uint8)
        if not wanted.size:
            return []
        offsets = self._offsets.numpy()
        same_length = np.nonzero(np.diff(offsets) == wanted.size)[0]
        if not same_length.size:
            return []
        raw = np.frombuffer(self._raw, dtype=np.uint8)
        spans = raw[offsets[same_length][:, None] + np.arange(wanted.size)]
        return same_length[(spans == wanted).all(axis=1)].tolist()

    def latents_on_token(self, vocab_index: int, limit: int) -> list[tuple[int, float]]:
        """(latent, number of its top examples on this token), most first."""
        ptr = self._file.get_slice("token_ptr")[vocab_index:vocab_index + 2].tolist()
        a, b = ptr[0], min(ptr[1], ptr[0] + limit)
        if b <= a:
            return []
        latents = self._file.get_slice("token_latents")[a:b].tolist()
        weights = self._file.get_slice("token_weight")[a:b].tolist()
        return list(zip(latents, weights))


def find_token_entries(index: ViewerIndex, query: str, limit: int = 8) -> list[int]:
    """Vocabulary entries matching `query`: the exact text first (' Paris', leading space
    significant), then its usual variants: lower, Capitalised, UPPER and Title case, each with
    and without a leading space."""
    if not query:
        return []
    base = query.strip()
    variants = [query] + [prefix + form for form in (base, base.lower(), base.capitalize(),
                                                     base.upper(), base.title())
                          for prefix in (" ", "")]
    found: list[int] = []
    for text in dict.fromkeys(variants):
        found += [i for i in index.entries_with_text(text) if i not in found]
    return found[:limit]


def tokenizer_for(model_name: str | os.PathLike) -> object:
    """A tokenizer from an embedded model name or a local folder (never the network)."""
    from transformers import AutoTokenizer

    from sparselens.models.source import resolve_model_dir

    path = Path(model_name).expanduser()
    return AutoTokenizer.from_pretrained(path if path.is_dir() else
                                         resolve_model_dir(str(model_name)))
