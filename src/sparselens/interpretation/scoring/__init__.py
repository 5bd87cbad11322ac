"""Scores for explanations of latents (Paulo et al. 2024; Bills et al. 2023)."""

from sparselens.interpretation.scoring.base import HeldOutData, Score, Scorer
from sparselens.interpretation.scoring.classify import DetectionScorer, FuzzingScorer
from sparselens.interpretation.scoring.embedding import EmbeddingScorer
from sparselens.interpretation.scoring.intruder import IntruderScorer
from sparselens.interpretation.scoring.surprisal import SurprisalScorer

SCORERS = {"detection": DetectionScorer, "fuzzing": FuzzingScorer,
           "embedding": EmbeddingScorer, "intruder": IntruderScorer,
           "surprisal": SurprisalScorer}


def make_scorers(names: list[str]) -> list[Scorer]:
    unknown = [n for n in names if n not in SCORERS]
    if unknown:
        raise ValueError(f"unknown scorer(s) {', '.join(unknown)}; choose from "
                         f"{', '.join(SCORERS)}")
    return [SCORERS[n]() for n in names]


__all__ = ["SCORERS", "Score", "Scorer", "HeldOutData", "make_scorers"]
