"""Intruder detection (Paulo et al. 2024, following the word-intrusion tests of topic models):
the judge sees several activating test contexts of the latent, marked, and one activating
context of another latent, marked the same way, and names the odd one out. It judges the
latent's coherence, not the explanation: no explanation is shown and no baselines apply;
chance is 1 / (contexts per round)."""

from __future__ import annotations

import re

from sparselens.interpretation.llm.base import ChatRequest, ChatResponse, LLMClient
from sparselens.interpretation.scoring.base import HeldOutData, Score

SYSTEM = (
    "You are a meticulous linguistics researcher. You get numbered text examples in which some "
    "tokens are marked like <<this>>. In all examples but one, the marked tokens share a common "
    "meaning or pattern; one example is an intruder whose marks do not fit. Answer with the "
    "number of the intruder only.")


class IntruderScorer:
    name = "intruder"
    uses_explanation = False

    def __init__(self, per_round: int = 4, rounds: int = 3) -> None:
        self.per_round, self.rounds = per_round, rounds
        self.chance = 1 / (per_round + 1)

    def score(self, explanation: str | None, data: HeldOutData, llm: LLMClient) -> Score:
        requests, answers = [], []
        for r in range(min(self.rounds, len(data.intruders))):
            own = data.activating[r * self.per_round:(r + 1) * self.per_round]
            if len(own) < self.per_round:
                break
            where = (data.latent * 7 + r * 3) % (self.per_round + 1)
            shown = own[:where] + [data.intruders[r]] + own[where:]
            text = "\n".join(f"Example {i}: {c.marked()}" for i, c in enumerate(shown, 1))
            requests.append(ChatRequest(messages=(("system", SYSTEM), ("user", text + "\n\n"
                                        "Which example is the intruder?")), max_tokens=6))
            answers.append(where + 1)
        if not requests:
            return Score(None, {"n": 0, "reason": "too few test contexts"})
        results = llm.complete(requests)
        picks = [_number(r.text) if isinstance(r, ChatResponse) else None for r in results]
        correct = [int(p == a) for p, a in zip(picks, answers)]
        return Score(sum(correct) / len(correct), {"n": len(correct), "picks": picks,
                                                   "answers": answers})


def _number(text: str) -> int | None:
    match = re.search(r"\d+", text)
    return int(match.group()) if match else None
