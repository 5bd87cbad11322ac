"""Token ids to the text a reader should see for each token in a highlighted context.

Decoding a whole context and then splitting it cannot attribute characters to tokens, so each
token is turned into text on its own, from its vocabulary piece:

- SentencePiece marks a leading space with '▁'; it becomes a space.
- Byte-fallback pieces ``<0xNN>`` become that byte (printable ASCII) or a visible ``\\xNN``.
- Byte-level BPE (GPT-2 style) maps every byte to a printable stand-in character ('Ġ' for a
  space); the stand-ins are mapped back to bytes and decoded as UTF-8. A token holding part of
  a multi-byte character shows its bytes as ``\\xNN`` instead of a replacement character.

Whitespace is kept as-is here; the page makes newlines, tabs and runs of spaces visible.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Sequence
from functools import cache

_BYTE_FALLBACK = re.compile(r"^<0x([0-9A-Fa-f]{2})>$")


@cache
def _byte_level_decoder() -> dict[str, int]:
    """Inverse of the GPT-2 byte-to-printable-character table."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1),
                 *range(ord("®"), ord("ÿ") + 1)]
    table = {b: b for b in printable}
    extra = 0
    for b in range(256):
        if b not in table:
            table[b] = 256 + extra
            extra += 1
    return {chr(char): b for b, char in table.items()}


def is_byte_level(tokenizer: object) -> bool:
    """Whether the vocabulary pieces are GPT-2 style byte-level stand-ins."""
    return _is_byte_level(tokenizer)


@functools.lru_cache(maxsize=8)
def _is_byte_level(tokenizer: object) -> bool:
    """Cached per tokenizer, and read from the decoder's own state (a few hundred bytes) when
    it exposes it: serialising the whole tokenizer takes seconds for a 262k vocabulary."""
    if hasattr(tokenizer, "byte_decoder"):
        return True
    from_decoder = _byte_level_from_decoder(tokenizer)
    return _byte_level_from_json(tokenizer) if from_decoder is None else from_decoder


def _byte_level_from_decoder(tokenizer: object) -> bool | None:
    decoder = getattr(getattr(tokenizer, "backend_tokenizer", None), "decoder", None)
    state = getattr(decoder, "__getstate__", None)
    if state is None:
        return None
    try:
        return '"ByteLevel"' in json.dumps(json.loads(state()))
    except (TypeError, ValueError):
        return None


def _byte_level_from_json(tokenizer: object) -> bool:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return False
    try:
        decoder = json.loads(backend.to_str()).get("decoder") or {}
    except (AttributeError, TypeError, ValueError):
        return False
    return '"ByteLevel"' in json.dumps(decoder)


def _bytes_text(data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("utf-8", errors="backslashreplace")


def piece_text(piece: str, byte_level: bool) -> str:
    """The display text of one vocabulary piece."""
    match = _BYTE_FALLBACK.match(piece)
    if match:
        value = int(match.group(1), 16)
        return chr(value) if value < 0x80 else f"\\x{value:02x}"
    if byte_level:
        decoder = _byte_level_decoder()
        if all(char in decoder for char in piece):
            return _bytes_text(bytes(decoder[char] for char in piece))
    return piece.replace("▁", " ")


def token_texts(tokenizer: object, ids: Sequence[int], byte_level: bool | None = None
                ) -> list[str]:
    """Display text of each token id, via the tokenizer's vocabulary pieces (`byte_level`:
    the tokenizer's `is_byte_level`, found when not given).

    Tokenizers without ``convert_ids_to_tokens`` fall back to decoding each id alone.
    """
    ids = [int(i) for i in ids]
    to_pieces = getattr(tokenizer, "convert_ids_to_tokens", None)
    if to_pieces is None:
        return [tokenizer.decode([i]) for i in ids]  # type: ignore[attr-defined]
    byte_level = _is_byte_level(tokenizer) if byte_level is None else byte_level
    pieces = to_pieces(ids)
    return [f"<{i}>" if piece is None else piece_text(piece, byte_level)
            for i, piece in zip(ids, pieces)]


def special_ids(tokenizer: object) -> set[int]:
    """Ids of special tokens (BOS, padding, ...), shown greyed out in contexts."""
    return {int(i) for i in getattr(tokenizer, "all_special_ids", None) or []}
