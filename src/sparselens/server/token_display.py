"""Token ids to display text for the viewer: `interpretation.token_text` rules, with the
tokenizer's byte-level test read from its decoder alone.

`token_text.token_texts` decides byte-level by serialising the whole tokenizer to JSON, which
takes seconds for gemma's 262k vocabulary, on every call; a server calling it per request
would spend most of its time there. The decoder's own state (a few hundred bytes) says the
same thing in microseconds.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from sparselens.interpretation import token_text


def is_byte_level(tokenizer: object) -> bool:
    if hasattr(tokenizer, "byte_decoder"):
        return True
    decoder = getattr(getattr(tokenizer, "backend_tokenizer", None), "decoder", None)
    state = getattr(decoder, "__getstate__", None)
    if state is None:
        return token_text._is_byte_level(tokenizer)
    try:
        return '"ByteLevel"' in json.dumps(json.loads(state()))
    except (TypeError, ValueError):
        return token_text._is_byte_level(tokenizer)


def display_texts(tokenizer: object, ids: Sequence[int], byte_level: bool | None = None
                  ) -> list[str]:
    """The text a reader sees for each token id (`token_text.piece_text` per piece)."""
    to_pieces = getattr(tokenizer, "convert_ids_to_tokens", None)
    if to_pieces is None:
        return token_text.token_texts(tokenizer, ids)
    byte_level = is_byte_level(tokenizer) if byte_level is None else byte_level
    ids = [int(i) for i in ids]
    return [f"<{i}>" if piece is None else token_text.piece_text(piece, byte_level)
            for i, piece in zip(ids, to_pieces(ids))]
