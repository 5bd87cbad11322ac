"""Detection and fuzzing (Paulo et al. 2024, section 3): a language model reads the
explanation and one test context at a time and answers Yes or No.

- Detection: is the explained feature present in this text? Activating test contexts are
  positives, quiet test contexts negatives.
- Fuzzing: in an activating test context some tokens are marked; are they the right ones?
  Half the contexts carry the true marks (the latent's firing tokens), the other half the same
  number of marks on tokens where the latent is silent, chosen by a seeded hash.

Each answer is read as P(Yes) from the first token's log-probabilities (Paulo et al. read
the text; probabilities also give an AUROC). The headline value is balanced accuracy at
P(Yes) > 0.5, as in the paper; AUROC is in the details. Deviation: one context per prompt
(the paper batches several), so every prompt shares its explanation prefix and a llama.cpp
server reuses its cache for it; it also removes position effects inside a batch.
"""

from __future__ import annotations

import random

from sparselens.interpretation.contexts import Context
from sparselens.interpretation.llm.base import ChatRequest, ChatResponse, LLMClient
from sparselens.interpretation.scoring.base import HeldOutData, Score
from sparselens.interpretation.scoring.stats import auroc, balanced_accuracy

DETECTION_SYSTEM = (
    "You are a meticulous linguistics researcher. You get an explanation of a feature of a "
    "language model (for example 'male pronouns' or 'the word import in Python code') and then "
    "a text. Answer Yes if the explained feature is present anywhere in the text, and No if it "
    "is not. Answer with Yes or No only.")
FUZZING_SYSTEM = (
    "You are a meticulous linguistics researcher. You get an explanation of a feature of a "
    "language model and then a text in which some tokens are marked like <<this>>. Answer Yes "
    "if the marked tokens are exactly the kind of tokens the explanation describes, and No if "
    "the marks sit on tokens unrelated to the explanation. Answer with Yes or No only.")
QUESTION = {"detection": "Is the feature present in the text? Answer Yes or No.",
            "fuzzing": "Are the marked tokens correctly marked? Answer Yes or No."}


def _request(system: str, explanation: str, text: str, question: str) -> ChatRequest:
    user = f"Feature explanation: {explanation}\n\nText: {text}\n\n{question}"
    return ChatRequest(messages=(("system", system), ("user", user)), max_tokens=1,
                       top_logprobs=10)


def _judge(requests: list[ChatRequest], labels: list[int], llm: LLMClient) -> Score:
    results = llm.complete(requests)
    probabilities, failed, unreadable = [], 0, 0
    for result in results:
        p = result.yes_probability() if isinstance(result, ChatResponse) else None
        if not isinstance(result, ChatResponse):
            failed += 1
        elif p is None:
            unreadable += 1
        probabilities.append(0.5 if p is None else p)
    if failed == len(results) and results:
        return Score(None, {"error": str(results[0]), "failed": failed})
    return Score(balanced_accuracy(probabilities, labels),
                 {"auroc": auroc(probabilities, labels), "n": len(labels),
                  "positives": sum(labels), "failed": failed, "unreadable": unreadable,
                  "p_yes": [round(p, 4) for p in probabilities], "labels": labels})


class DetectionScorer:
    name = "detection"
    uses_explanation = True
    chance = 0.5

    def score(self, explanation: str | None, data: HeldOutData, llm: LLMClient) -> Score:
        contexts, labels = data.labelled()
        requests = [_request(DETECTION_SYSTEM, explanation or "", c.text,
                             QUESTION["detection"]) for c in contexts]
        return _judge(requests, labels, llm)


def wrong_marks(context: Context, seed: int) -> list[int]:
    """As many marks as the context has firing tokens, on tokens where the latent is zero
    (and that are not empty special tokens)."""
    quiet = [i for i, (t, a) in enumerate(zip(context.tokens, context.activations))
             if a == 0 and t.strip()]
    n = min(len(context.firing), len(quiet))
    return sorted(random.Random(seed).sample(quiet, n))


class FuzzingScorer:
    name = "fuzzing"
    uses_explanation = True
    chance = 0.5

    def score(self, explanation: str | None, data: HeldOutData, llm: LLMClient) -> Score:
        requests, labels = [], []
        for i, context in enumerate(data.activating):
            correct = i % 2 == 0  # contexts come sorted by activation: both halves span it
            marks = context.firing if correct else wrong_marks(
                context, seed=data.latent * 1_000_003 + i)
            if not marks:
                continue
            requests.append(_request(FUZZING_SYSTEM, explanation or "", context.marked(marks),
                                     QUESTION["fuzzing"]))
            labels.append(int(correct))
        return _judge(requests, labels, llm)
