"""Documents -> fixed windows: nothing lost, nothing doubled, specials marked, doc ids right."""

from __future__ import annotations

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from sparselens.data.chunking import chunk_texts, start_token_id

WORDS = ["the", "cat", "sat", "on", "a", "mat", "dog", "ran", "far", "away", "big", "small",
         "red", "blue", "tree", "house", "river", "stone", "light", "dark", "fast", "slow",
         "cold", "warm", "old", "new", "one", "two", "three", "four", "five", "six"]
SPECIALS = {"pad_token": "<pad>", "bos_token": "<bos>", "eos_token": "<eos>",
            "unk_token": "<unk>"}


def word_tokenizer(specials: dict[str, str] | None = None) -> PreTrainedTokenizerFast:
    """A real fast tokenizer over a small fixed vocabulary: one id per word."""
    specials = SPECIALS if specials is None else specials
    vocab = {w: i for i, w in enumerate([*specials.values(), *WORDS])}
    backend = Tokenizer(models.WordLevel(vocab, unk_token=specials.get("unk_token", WORDS[0])))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=backend, **specials)


DOCS = ["the cat sat on a mat", "", "dog ran far away big red house tree",
        "one two three", "small blue river stone light dark fast slow cold warm old new",
        "four five six"]


def text_ids(tok: PreTrainedTokenizerFast, text: str) -> list[int]:
    return tok(text, add_special_tokens=False)["input_ids"]


def test_windows_keep_every_text_token_once_and_start_with_bos() -> None:
    tok = word_tokenizer()
    chunks = list(chunk_texts(DOCS, tok, context_len=5))
    stream = [i for doc in DOCS for i in text_ids(tok, doc)]
    kept = [int(i) for c in chunks for i, s in zip(c.ids, c.special) if not s]
    assert all(c.ids.shape == (5,) and c.ids.dtype == torch.long for c in chunks)
    assert all(int(c.ids[0]) == tok.bos_token_id and bool(c.special[0]) for c in chunks)
    assert kept == stream[:len(kept)]
    assert len(stream) - len(kept) < 5  # only the final partial window is dropped


def test_separator_marks_document_boundaries_and_is_not_doubled() -> None:
    tok = word_tokenizer()
    # 4 tokens each: with context 5 every window is BOS + exactly one document.
    docs = ["the cat sat on", "a mat dog ran", "far away big small"]
    chunks = list(chunk_texts(docs, tok, context_len=5))
    assert [c.ids.tolist() for c in chunks] == [[tok.bos_token_id, *text_ids(tok, d)]
                                                for d in docs]
    assert [c.doc_id for c in chunks] == [0, 1, 2]
    # With a longer window the next document's BOS sits inside the window, marked special.
    (joined,) = chunk_texts(docs[:2], tok, context_len=10)
    assert joined.ids.tolist() == [tok.bos_token_id, *text_ids(tok, docs[0]), tok.bos_token_id,
                                   *text_ids(tok, docs[1])]
    assert joined.special.tolist() == [True, False, False, False, False, True] + [False] * 4


def test_doc_id_is_the_document_of_the_first_text_token() -> None:
    tok = word_tokenizer()
    owner = {}
    for index, doc in enumerate(DOCS):
        for token in text_ids(tok, doc):
            owner.setdefault(token, index)  # the words of DOCS are unique per document
    chunks = list(chunk_texts(DOCS, tok, context_len=4))
    for chunk in chunks:
        first_text = next(int(i) for i, s in zip(chunk.ids, chunk.special) if not s)
        assert chunk.doc_id == owner[first_text]
    assert 1 not in {c.doc_id for c in chunks}  # the empty document adds no tokens


def test_deterministic_and_independent_of_tokenizer_batching() -> None:
    tok = word_tokenizer()
    one = [c.ids.tolist() for c in chunk_texts(DOCS, tok, 6, docs_per_call=1)]
    many = [c.ids.tolist() for c in chunk_texts(DOCS, tok, 6, docs_per_call=64)]
    assert one == many and len(one) > 2


def test_without_bos_windows_start_with_eos_gpt2_style() -> None:
    specials = {"eos_token": "<eos>", "unk_token": "<unk>"}
    tok = word_tokenizer(specials)
    assert tok.bos_token_id is None
    assert start_token_id(tok) == tok.eos_token_id
    chunks = list(chunk_texts(DOCS, tok, context_len=6))
    assert all(int(c.ids[0]) == tok.eos_token_id for c in chunks)
    inner = [int(i) for c in chunks for i in c.ids[1:]]
    assert tok.eos_token_id in inner  # documents inside a window are separated by EOS


def test_tokenizer_without_bos_or_eos_is_refused() -> None:
    tok = word_tokenizer({"unk_token": "<unk>"})
    with pytest.raises(ValueError, match="neither a BOS nor an EOS"):
        list(chunk_texts(DOCS, tok, 8))


def test_add_bos_false_gives_plain_windows() -> None:
    tok = word_tokenizer()
    chunks = list(chunk_texts(["the cat sat on", "a mat"], tok, context_len=4, add_bos=False))
    bos = tok.bos_token_id
    flat = [int(i) for c in chunks for i in c.ids]
    assert flat == [bos, *text_ids(tok, "the cat sat on"), bos, *text_ids(tok, "a mat")][:8]


def test_text_spelling_a_special_token_stays_text() -> None:
    tok = word_tokenizer()
    (chunk,) = chunk_texts(["the <eos> cat <bos> sat"], tok, context_len=12, pad_last=True)
    body = chunk.ids[1:].tolist()
    assert tok.eos_token_id not in body and tok.bos_token_id not in body


def test_pad_last_keeps_the_tail_and_marks_the_padding() -> None:
    tok = word_tokenizer()
    assert list(chunk_texts(["the cat sat"], tok, context_len=8)) == []
    (chunk,) = chunk_texts(["the cat sat"], tok, context_len=8, pad_last=True)
    assert chunk.ids.tolist() == [tok.bos_token_id, *text_ids(tok, "the cat sat")] + \
        [tok.pad_token_id] * 4
    assert chunk.special.tolist() == [True, False, False, False] + [True] * 4


def test_too_short_context_is_refused() -> None:
    with pytest.raises(ValueError, match="context_len"):
        list(chunk_texts(DOCS, word_tokenizer(), context_len=1))


@pytest.mark.slow
def test_gemma_tokenizer_windows() -> None:
    from transformers import AutoTokenizer

    from sparselens.models.source import resolve_model_dir

    tok = AutoTokenizer.from_pretrained(resolve_model_dir("gemma-3-270m"))
    docs = ["The quick brown fox jumps over the lazy dog. " * 5, "def f(x):\n    return x\n"]
    chunks = list(chunk_texts(docs, tok, context_len=16))
    assert chunks and all(c.ids[0] == tok.bos_token_id == 2 for c in chunks)
    assert all(c.special.tolist() == (c.ids == 2).tolist() for c in chunks)
    decoded = tok.decode(torch.cat([c.ids[1:] for c in chunks]), skip_special_tokens=True)
    assert decoded.startswith("The quick brown fox")
