"""Dataset diffing on synthetic codes: a planted latent is found, nulls are not, bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from scipy.stats import false_discovery_control

from sparselens.comparison.datadiff import (
    benjamini_hochberg,
    cluster_documents,
    diff_corpora,
    embed,
    retrieve,
)
from sparselens.comparison.explanations import load_explanations

N_LATENTS = 200


def _docs(n_docs: int, seed: int, planted: int | None = None, rate: float = 0.0):
    """Per-document token codes: every latent fires on a token with probability 0.01; the
    planted latent additionally fires somewhere in a `rate` share of documents."""
    gen = torch.Generator().manual_seed(seed)
    docs = []
    for _ in range(n_docs):
        codes = torch.rand(20, N_LATENTS, generator=gen) * (
            torch.rand(20, N_LATENTS, generator=gen) < 0.01)
        if planted is not None and torch.rand(1, generator=gen) < rate:
            codes[3, planted] = 2.0 + torch.rand(1, generator=gen)
        docs.append(codes)
    return docs


def test_planted_topic_latent_is_the_top_significant_difference() -> None:
    a = embed(_docs(120, 0, planted=17, rate=0.7), N_LATENTS)
    b = embed(_docs(120, 1), N_LATENTS)
    diff = diff_corpora(a, b, explanations={17: "the planted topic"})
    top = diff.significant("a")
    assert top and top[0].latent == 17 and top[0].explanation == "the planted topic"
    assert top[0].q_value < 1e-6
    assert len(top) <= 3  # the null latents stay (almost always) below the FDR threshold
    assert diff.significant("b") == [] or diff.significant("b")[0].latent != 17
    assert diff.summary()["more_in_a"][0]["latent"] == 17
    assert retrieve(a, 17, n=5)[0][1] >= 2.0


def test_identical_distributions_find_nothing() -> None:
    diff = diff_corpora(embed(_docs(80, 2), N_LATENTS), embed(_docs(80, 3), N_LATENTS))
    assert diff.significant("a") == [] and diff.significant("b") == []
    assert len(diff.tested) > 100


def test_corpora_too_small_are_refused_with_the_number_needed() -> None:
    small = embed(_docs(3, 4, planted=1, rate=1.0), N_LATENTS)
    with pytest.raises(ValueError, match="too small .* at least 4 documents"):
        diff_corpora(small, embed(_docs(3, 5), N_LATENTS))


def test_benjamini_hochberg_equals_scipy() -> None:
    p = np.random.default_rng(0).uniform(size=50) ** 3
    assert benjamini_hochberg(p) == pytest.approx(false_discovery_control(p))


def test_pooling_and_clustering_separate_two_topics() -> None:
    docs = []
    for i in range(40):
        codes = torch.zeros(10, 6)
        codes[i % 10, 0 if i < 20 else 3] = 1.0 + i
        codes[0, 5] = 0.5  # a latent every document has
        docs.append(codes)
    emb = embed(docs, 6, pool="max")
    assert emb.matrix[25, 3] == 26.0 and emb.matrix[25, 0] == 0
    assert embed(docs, 6, pool="mean").matrix[25, 3] == pytest.approx(2.6)
    clusters = cluster_documents(emb, 2, seed=0)
    assert len(set(clusters.labels[:20])) == 1 and len(set(clusters.labels[20:])) == 1
    assert clusters.labels[0] != clusters.labels[39]
    assert {clusters.top_latents[c][0] for c in range(2)} == {0, 3}


def test_explanations_are_read_when_present_and_tolerated_when_absent(tmp_path) -> None:
    assert load_explanations(tmp_path) == {}
    lines = [json.dumps({"latent": 3, "explanation": "French text"}),
             json.dumps({"feature": 5, "text": "code"}), "not json", '{"latent": 9']
    (tmp_path / "explanations.jsonl").write_text("\n".join(lines))
    assert load_explanations(tmp_path) == {3: "French text", 5: "code"}


def test_sparse_and_dense_document_codes_pool_alike() -> None:
    dense = _docs(5, 6)
    k = int(max((d != 0).sum(1).max() for d in dense))
    sparse = [(d.topk(k, dim=1).values, d.topk(k, dim=1).indices) for d in dense]
    for pool in ("max", "mean", "sum"):
        a, b = embed(dense, N_LATENTS, pool), embed(sparse, N_LATENTS, pool)
        assert np.allclose(a.matrix.toarray(), b.matrix.toarray())
        assert np.allclose(a.matrix.toarray()[2], getattr(dense[2], pool)(0).numpy()
                           if pool != "max" else dense[2].max(0).values.numpy())
