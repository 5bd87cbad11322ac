"""Embedding score (Paulo et al. 2024): how well the explanation, embedded as a query, ranks
the latent's activating test contexts above its quiet ones by cosine similarity (AUROC).
Cheap: no language model, one small sentence embedder (all-MiniLM-L6-v2)."""

from __future__ import annotations

from sparselens.interpretation.embedder import embed
from sparselens.interpretation.llm.base import LLMClient
from sparselens.interpretation.scoring.base import HeldOutData, Score
from sparselens.interpretation.scoring.stats import auroc


class EmbeddingScorer:
    name = "embedding"
    uses_explanation = True
    chance = 0.5

    def score(self, explanation: str | None, data: HeldOutData, llm: LLMClient) -> Score:
        contexts, labels = data.labelled()
        if not contexts:
            return Score(None, {"n": 0})
        vectors = embed([explanation or ""] + [c.text for c in contexts])
        similarity = (vectors[1:] @ vectors[0]).tolist()
        return Score(auroc(similarity, labels), {"n": len(labels), "positives": sum(labels)})
