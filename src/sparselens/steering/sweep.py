"""Sweep a steering coefficient and measure concept strength against fluency.

For every steer (a SAE latent, a dense vector, ...) and coefficient, each prompt is continued
greedily with the steer's edits; the continuation is scored for concept strength (MiniLM
similarity to the concept description) and fluency (perplexity under the unedited model,
repetition rate), see `measures`. Coefficient 0 is the unedited model (no edits at all), shared
by every curve. The result writes a JSON record and a trade-off plot (`sweep_plot`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from sparselens.io.atomic import atomic_write_json
from sparselens.steering.checks import SteeringInputError, check_coefficients, check_prompt_fits
from sparselens.steering.lens_access import generate, prompt_ids
from sparselens.steering.measures import ConceptSimilarity, continuation_perplexity, repetition_rate
from sparselens.steering.steer import Steer, check_steer


@dataclass
class SweepPoint:
    """Averages over the prompts at one coefficient."""

    coef: float
    concept_similarity: float
    perplexity: float
    """exp of the mean per-token NLL over all prompts' continuations (unedited model)."""
    repetition: float
    generations: list[str] = field(default_factory=list)


@dataclass
class SweepCurve:
    label: str
    points: list[SweepPoint]


@dataclass
class SweepResult:
    concept: str
    prompts: list[str]
    max_new_tokens: int
    curves: list[SweepCurve]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def write(self, out_dir: str | Path) -> tuple[Path, Path]:
        """``sweep.json`` and ``sweep.png`` in `out_dir` (both written atomically)."""
        from sparselens.steering.sweep_plot import plot_sweep

        out = Path(out_dir)
        atomic_write_json(out / "sweep.json", self.to_dict())
        plot_sweep(self, out / "sweep.png")
        return out / "sweep.json", out / "sweep.png"


@torch.no_grad()
def measure_point(lens: Any, edits: list, coef: float, prompts: Sequence[str], concept: str,
                  max_new_tokens: int, scorer: ConceptSimilarity) -> SweepPoint:
    texts, nll_sum, n_tokens, repetition = [], 0.0, 0, 0.0
    for prompt in prompts:
        text, new_ids = generate(lens, prompt, edits, max_new_tokens)
        texts.append(text)
        n = int(new_ids.numel())
        if n:
            ppl = continuation_perplexity(lens, prompt_ids(lens, prompt), new_ids)
            nll_sum += math.log(ppl) * n
            n_tokens += n
        repetition += repetition_rate(new_ids)
    similarity = sum(scorer(texts, concept)) / len(texts)
    perplexity = math.exp(nll_sum / n_tokens) if n_tokens else float("nan")
    return SweepPoint(coef, similarity, perplexity, repetition / len(prompts), texts)


def sweep(lens: Any, steers: Sequence[Steer], coefs: Sequence[float], prompts: Sequence[str],
          concept: str, *, max_new_tokens: int = 30, scorer: ConceptSimilarity | None = None,
          progress: bool = True) -> SweepResult:
    """Concept similarity, perplexity and repetition for every steer at every coefficient."""
    coefs = [float(c) for c in coefs]
    check_coefficients(coefs)
    if not prompts or not concept:
        raise SteeringInputError("a sweep needs at least one prompt and a concept description")
    for steer in steers:
        check_steer(lens, steer)
    for prompt in prompts:
        check_prompt_fits(lens, prompt, max_new_tokens)
    scorer = scorer or ConceptSimilarity()
    bar = tqdm(total=len(steers) * len(coefs), disable=not progress, desc="sweep")
    unedited: SweepPoint | None = None
    curves = []
    for steer in steers:
        points = []
        for coef in coefs:
            if coef == 0 and unedited is not None:
                points.append(unedited)
            else:
                edits = [] if coef == 0 else steer.edits(coef)
                points.append(measure_point(lens, edits, coef, prompts, concept,
                                            max_new_tokens, scorer))
                if coef == 0:
                    unedited = points[-1]
            bar.update()
        curves.append(SweepCurve(steer.label, points))
    bar.close()
    return SweepResult(concept, list(prompts), max_new_tokens, curves)
