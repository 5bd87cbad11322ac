"""Detection and fuzzing (Paulo et al. 2024, section 3): a language model reads the
explanation and one test context at a time and answers Yes or No.

- Detection: is the explained feature present in this text? Activating test contexts are
  positives, quiet test contexts negatives.
- Fuzzing: in an activating test context some tokens are marked; are they the right ones?
  Half the contexts carry the true marks (the latent's firing tokens), the other half the same
  number of marks on tokens where the latent is silent, chosen by a seeded hash.

Each answer is read as P(Yes) from the first token's log-probabilities (Paulo et al. read
the text; probabilities also give an AUROC). The headline value is balanced accuracy at
P(Yes) > 0.5, as in the paper; AUROC is in the details. Deviations: one context per prompt
(the paper batches several), which removes position effects inside a batch and gives a
probability per context; the text comes before the explanation and the explanation's
baselines are asked right after it, so a llama.cpp server's prompt cache computes each text
once for all of them; four worked answers precede every question (few-shot, cached too).
"""

from __future__ import annotations

import random
import re

from sparselens.interpretation.contexts import Context
from sparselens.interpretation.llm.base import ChatRequest, ChatResponse, LLMClient
from sparselens.interpretation.scoring.base import HeldOutData, Score
from sparselens.interpretation.scoring.stats import auroc, balanced_accuracy

DETECTION_SYSTEM = (
    "You check explanations of features of a language model. You get a text and an "
    "explanation of a feature (for example 'female pronouns' or 'the word import in Python "
    "code'). Does the feature occur in the text? Answer Yes if something the explanation "
    "describes occurs in the text, and No if nothing in the text fits it. Answer with Yes or "
    "No only.")
FUZZING_SYSTEM = (
    "You check explanations of features of a language model. You get a text in which some "
    "tokens are marked like <<this>>, and an explanation of a feature. Are the marked tokens "
    "the ones the explanation describes? Answer Yes if they are the kind of tokens the "
    "explanation describes, and No if the marks sit on tokens unrelated to it. Answer with "
    "Yes or No only.")
SHOTS = {
    "detection": (("The queen raised her glass and smiled.", "female pronouns", "Yes"),
                  ("The stock fell two points on Friday.", "female pronouns", "No"),
                  ("for item in items: print(item)", "closing parentheses in code", "Yes"),
                  ("We walked home along the quiet river.", "closing parentheses in code",
                   "No")),
    "fuzzing": (("The queen raised <<her>> glass and smiled.", "female pronouns", "Yes"),
                ("The <<queen>> raised her glass and smiled.", "female pronouns", "No"),
                ("print(len(items<<)>>)", "closing parentheses in code", "Yes"),
                ("print<<(>>len(items))", "closing parentheses in code", "No")),
}
"""Worked answers shown before every question (few-shot): they sit in the shared prompt
prefix, so a llama.cpp server computes them once, and they keep a small judge on Yes/No."""


def _user(text: str, explanation: str, task: str) -> str:
    """The text, then the explanation; the question is in the system prompt, so each
    explanation after a cached text costs only its own tokens. For fuzzing the marked tokens
    are also listed after the text: a 1.5B judge ignored marks inside the text (its P(Yes)
    was the same for true and wrong marks), and the list is the same information."""
    if task == "fuzzing":
        marked = ", ".join(f"'{m.strip() or m}'" for m in re.findall(r"<<(.*?)>>", text, re.S))
        text = f"{text}\nMarked tokens: {marked}"
    return f"Text: {text}\n\nExplanation: {explanation}"


def _request(task: str, explanation: str, text: str) -> ChatRequest:
    """System prompt and worked answers, then the text, then the explanation: requests for
    one text share everything up to the explanation, so a server's prompt cache reuses the
    text across the explanation and its baselines (they are sent one after the other)."""
    system = DETECTION_SYSTEM if task == "detection" else FUZZING_SYSTEM
    messages: list[tuple[str, str]] = [("system", system)]
    for shot_text, shot_explanation, answer in SHOTS[task]:
        messages += [("user", _user(shot_text, shot_explanation, task)), ("assistant", answer)]
    messages.append(("user", _user(text, explanation, task)))
    return ChatRequest(messages=tuple(messages), max_tokens=1, top_logprobs=10)


def _judge_many(task: str, candidates: dict[str, str], texts: list[str], labels: list[int],
                llm: LLMClient) -> dict[str, Score]:
    """Every candidate explanation judged on every text in one call, text by text."""
    names = list(candidates)
    requests = [_request(task, candidates[name], text) for text in texts for name in names]
    results = llm.complete(requests) if requests else []
    return {name: _read(results[k::len(names)], labels) for k, name in enumerate(names)}


def _read(results: list, labels: list[int]) -> Score:
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


class _YesNoScorer:
    """A judge asked Yes/No per text: one explanation is scored as a batch of one, so that
    the explanation and its baselines can go through `score_many` together."""

    name = ""
    uses_explanation = True
    chance = 0.5

    def score(self, explanation: str | None, data: HeldOutData, llm: LLMClient) -> Score:
        return self.score_many({"explanation": explanation or ""}, data, llm)["explanation"]

    def score_many(self, candidates: dict[str, str], data: HeldOutData,
                   llm: LLMClient) -> dict[str, Score]:
        raise NotImplementedError


class DetectionScorer(_YesNoScorer):
    name = "detection"

    def score_many(self, candidates: dict[str, str], data: HeldOutData,
                   llm: LLMClient) -> dict[str, Score]:
        contexts, labels = data.labelled()
        return _judge_many("detection", candidates, [c.text for c in contexts], labels, llm)


def wrong_marks(context: Context, seed: int) -> list[int]:
    """As many marks as the context has firing tokens, on tokens where the latent is zero
    (and that are not empty special tokens)."""
    quiet = [i for i, (t, a) in enumerate(zip(context.tokens, context.activations))
             if a == 0 and t.strip()]
    n = min(len(context.firing), len(quiet))
    return sorted(random.Random(seed).sample(quiet, n))


class FuzzingScorer(_YesNoScorer):
    name = "fuzzing"

    def score_many(self, candidates: dict[str, str], data: HeldOutData,
                   llm: LLMClient) -> dict[str, Score]:
        texts, labels = [], []
        for i, context in enumerate(data.activating):
            correct = i % 2 == 0  # contexts come sorted by activation: both halves span it
            marks = context.firing if correct else wrong_marks(
                context, seed=data.latent * 1_000_003 + i)
            if not marks:
                continue
            texts.append(context.marked(marks))
            labels.append(int(correct))
        return _judge_many("fuzzing", candidates, texts, labels, llm)
