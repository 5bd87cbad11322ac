"""`sparselens diff` on the embedded gemma-3-270m against a copy of it fine-tuned in the test.

The fine-tuning is brief and targeted so that it runs in about a minute on 2 cores: language
modelling on a distinctive corpus (word lists made of one random half of a small vocabulary),
training only one vector added to the input embeddings of the tokens of those words
(embedding-offset tuning). The tuned model B then differs from the base A on the tuned words
and nowhere else, while the corpus the diff reads also holds the other half of the words and
general text, on which the models agree.

What the crosscoder does with such a change is measured, not assumed: one latent per affected
concept keeps writing to both models, in directions that differ (a low decoder cosine), rather
than splitting into a shared latent plus a B-only one (which would cost an extra active latent
on every affected token). The test requires the diff to report these *changed* latents and
every one of them to fire on tuned words, and requires the latents on which the models agree
to be the vast majority; B-only detection by relative norm is covered on a tiny model in
``test_diffing.py``, where the base model cannot tell the changed tokens from others.
"""

from __future__ import annotations

import copy
import json
import random
from itertools import islice

import pytest
import torch

from conftest import fine_tune_embedding_offset
from sparselens.cli.main import main
from sparselens.data.cache import ActivationCache
from sparselens.data.corpus import CorpusConfig, iter_texts
from sparselens.models.source import LoadedModel

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]

WORDS = ["river", "stone", "house", "tree", "cloud", "field", "garden", "window", "door", "bread",
         "apple", "horse", "bird", "fish", "mountain", "forest", "road", "bridge", "lamp",
         "chair", "table", "glass", "paper", "letter", "candle", "basket", "ship", "island",
         "storm", "winter", "summer", "morning", "evening", "music", "color", "flower"]


def _texts(seed: int = 0) -> tuple[list[str], list[str], list[str], list[str]]:
    """(the fine-tuning corpus, word lists of the other half, of all words, general text)."""
    rng = random.Random(seed)
    words = WORDS[:]
    rng.shuffle(words)
    tuned, other = words[::2], words[1::2]

    def lists(vocabulary: list[str], n: int) -> list[str]:
        return [" ".join(rng.choice(vocabulary) for _ in range(50)) + "." for _ in range(n)]

    general = [text[:1200] for text in islice(iter_texts(CorpusConfig()), 30)]
    return lists(tuned, 20), lists(other, 20), lists(words, 20), general


def _token_ids(tokenizer, texts: list[str]) -> set[int]:
    return {t for text in texts for t in tokenizer(text, add_special_tokens=False)["input_ids"]}


@pytest.fixture(scope="module")
def tuned_gemma(gemma: LoadedModel, tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("gemma-diff")
    tuning, other, mixed, general = _texts()
    tokens = sorted(_token_ids(gemma.tokenizer, tuning) - _token_ids(gemma.tokenizer, other))
    assert len(tokens) >= 10, "the tuned words should have tokens of their own"
    tokenizer = gemma.tokenizer
    ids = torch.tensor([[tokenizer.bos_token_id, *tokenizer(text, add_special_tokens=False)
                         ["input_ids"][:31]] for text in tuning])
    offset = fine_tune_embedding_offset(gemma.model, tokens, ids, steps=12, lr=2.0,
                                        batch_size=4)
    tuned = copy.deepcopy(gemma.model)
    embedding = tuned.get_input_embeddings()
    scale = float(getattr(embedding, "embed_scale", 1.0))  # gemma scales embeddings by sqrt(d)
    with torch.no_grad():
        embedding.weight[tokens] += offset / scale
    tuned.save_pretrained(root / "tuned")
    gemma.tokenizer.save_pretrained(root / "tuned")
    del tuned
    corpus = root / "corpus"
    corpus.mkdir()
    for index, text in enumerate(general + other + mixed):
        (corpus / f"doc{index:03d}.txt").write_text(text, encoding="utf-8")
    return {"tuned": root / "tuned", "corpus": corpus, "tokens": torch.tensor(tokens)}


def test_diff_finds_what_fine_tuning_changed_in_gemma(tuned_gemma, tmp_path, capsys) -> None:
    out = tmp_path / "diff"
    code = main(["diff", "--model-a", "gemma-3-270m", "--model-b", str(tuned_gemma["tuned"]),
                 "--hookpoint", "resid.3", "--n-tokens", "6000", "--out", str(out),
                 "--corpus.source", "text", "--corpus.path", str(tuned_gemma["corpus"]),
                 "--context-len", "32", "--n-latents", "256", "--k", "16", "--epochs", "40",
                 "--batch-size", "512", "--progress", "false", "--spliced-sequences", "2"])
    assert code == 0, capsys.readouterr().err
    record = json.loads((out / "diff.json").read_text())
    tokens = ActivationCache.open(out / "activations").tokens()
    tuned = torch.isin(tokens, tuned_gemma["tokens"])
    assert 0 < tuned.float().mean() < 0.2  # the tuned words are a small part of what is read
    changed = [r for r in record["latents"] if r["changed"]]
    assert len(changed) >= 3, f"no changed latents found; counts {record['counts']}"
    for latent in changed:
        on_tuned = [bool(tuned[c["seq"], c["pos"]]) for c in latent["top"]]
        assert all(on_tuned), latent  # each fires most strongly on tuned words
        assert latent["decoder_cosine"] < 0.5
    counts = record["counts"]
    assert counts["shared"] > 0.8 * sum(counts[k] for k in ("a_only", "b_only", "shared",
                                                            "between"))
    assert record["reconstruction"]["split"] == "heldout"
    fvu = {r["source"]: r["fvu"] for r in record["reconstruction"]["per_source"]}
    assert set(fvu) == {"A/resid.3", "B/resid.3"} and max(fvu.values()) < 0.3, fvu
    page = (out / "index.html").read_text()
    assert "Changed: in both models" in page and f"#feature-{changed[0]['latent']}" in page
