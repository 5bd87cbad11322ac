"""Ask a language model what a latent means, from its highlighted top-activating contexts.

Two prompt styles. ``short`` (the default, written for small local models): a system prompt
asking for one short noun phrase, three worked examples as earlier chat turns (few-shot: a
1.5B model imitates an answer far better than it follows an instruction), then the latent's
examples with the firing tokens wrapped in ``<<...>>`` and nothing else: no list of frequent
tokens or activation levels, which small models copied instead of generalising. ``delphi``:
the prompt of the large-model literature, described next.

The delphi prompt follows the explainer of Bills et al. (2023) as adapted by Paulo et al. (2024,
"Automatically interpreting millions of features in LLMs"; the delphi library): each example
shows the text with the activating tokens wrapped in ``<<...>>``, then those tokens with their
activation on a 0-10 scale (relative to the latent's largest activation); optionally a few
contexts where the latent is silent (contrast) and a request to reason before answering
(chain of thought). The answer's last line holds the explanation after ``[EXPLANATION]:``.
The exact template (system prompt and the layout of the examples) is returned with every
explanation, with its sha256, so any explanation can be traced to the prompt that made it.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from dataclasses import dataclass

from sparselens.interpretation.contexts import Context
from sparselens.interpretation.llm.base import ChatRequest

SYSTEM = """You are a meticulous AI researcher investigating a single feature of a language \
model. You get text examples in which the feature is active. In each example the tokens where \
the feature fires are marked like <<this>>, and after the example the marked tokens are listed \
with how strongly the feature fired on each (0 to 10).

Find what the marked tokens have in common: a word or token, a kind of word, a topic, a \
syntactic role, a pattern in code or formatting. Pay most attention to the strongest \
activations. Write a short, concrete explanation (a few words, at most one sentence); do not \
mention the marks or the activation numbers, and do not list every example.

{reasoning}The last line of your answer must be:
[EXPLANATION]: <your explanation>"""

REASONING = {False: "", True: ("First think step by step: list the marked tokens, what is "
                               "around them, and what they share. Then give the explanation.\n\n")}

EXAMPLE = "Example {i}: {text}\nActivations: {levels}"
CONTRAST = ("Texts where the feature does NOT fire (anything common to these is not the "
            "feature):\n{texts}")
COMMON = "Most frequent marked tokens: {tokens}"

SHORT_SYSTEM = """You name features of a language model. You see short texts; the feature \
fires on the tokens marked <<like this>>. Reply with one short noun phrase (at most eight \
words) saying what the marked tokens have in common: their meaning, their kind, or the \
pattern around them. Do not describe the task, do not mention the marks, do not list \
the tokens."""
SHORT_QUESTION = "What do the marked tokens have in common?"
SHORT_EXAMPLE = "Example {i}: {text}"
SHORT_HINT = "Marked tokens: {tokens}"
HINT_SHARE = 0.5
"""The short prompt lists the marked tokens only when one token makes up at least this share
of the marks: a 1.5B model reading `<<self>>` in every example still answered "variable
names", while a list on every prompt made it copy tokens instead of generalising."""
SHOTS = (
    (("She said that <<she>> would call later.", "Ask Anna whether <<her>> sister is home.",
      "The queen raised <<her>> glass and <<she>> smiled."), "female pronouns"),
    (("def area(r<<)>>:\n    return 3.14 * r * r", "print(len(items<<)>>)",
      "if (count > limit<<)>> {"), "closing parentheses in code"),
    (("The ticket costs <<$>>40 at the door.", "Shares fell to <<€>>12 on Monday.",
      "Prices start at <<£>>9.99 a month."), "currency symbols before prices"),
)
"""Worked answers: a category of differing marked tokens."""
TOKEN_SHOT = (("She left early<< because>> it rained.", "We won<< because>> we trained hard.",
               "It failed<< because>> the key was wrong."), "the word because")
"""With `token_hint`, a last worked answer naming one word marked everywhere by itself
(without it the 1.5B model named `self` "instance variables" and `break` "control flow
statement" even with the hint)."""


@dataclass(frozen=True)
class ExplainerConfig:
    n_examples: int = 10
    """Top-activating train examples shown."""
    n_contrast: int = 0
    """Non-activating train contexts shown as contrast (0: none)."""
    chain_of_thought: bool = False
    """Ask for reasoning before the explanation (more tokens, often better answers)."""
    max_tokens: int = 32
    """Answer budget; at least 96 for the delphi style, 400 with chain of thought."""
    mark_fraction: float = 0.1
    """Tokens are marked when the latent reaches this fraction of its largest activation in
    the shown examples (weak firings on every token would bury the pattern)."""
    style: str = "short"
    """"short" (few-shot, a noun phrase, marks only: for small models) or "delphi" (marks,
    activation levels and the most frequent marked tokens, as in delphi)."""
    token_hint: bool = True
    """Short style: list the marked tokens (with counts) when one token makes up at least half
    of the marks, and add a worked answer that names such a token, so a single-token feature
    is named by its token. False gives the short prompt without either."""

    def shots(self) -> tuple[tuple[tuple[str, ...], str], ...]:
        """The worked answers of the short prompt."""
        return (*SHOTS, TOKEN_SHOT) if self.token_hint else SHOTS

    def __post_init__(self) -> None:
        if self.style not in ("short", "delphi"):
            raise ValueError(f"explainer style must be 'short' or 'delphi', got {self.style!r}")

    def template(self) -> str:
        """The full prompt template this configuration uses."""
        if self.style == "short":
            shots = "\n".join(f"[shot] {' | '.join(t)} -> {a}" for t, a in self.shots())
            parts = [SHORT_SYSTEM, shots, SHORT_EXAMPLE,
                     *([f"{SHORT_HINT} (when one token has {HINT_SHARE:.0%} of the marks)"]
                       if self.token_hint else []), SHORT_QUESTION]
            if self.n_contrast:
                parts.append(CONTRAST)
            return "\n----\n".join(parts)
        parts = [SYSTEM.format(reasoning=REASONING[self.chain_of_thought]), EXAMPLE, COMMON]
        if self.n_contrast:
            parts.append(CONTRAST)
        return "\n----\n".join(parts)

    def template_id(self) -> str:
        return hashlib.sha256(self.template().encode()).hexdigest()[:16]


class ExplanationParseError(ValueError):
    pass


def _level(value: float, scale: float) -> int:
    return max(1, min(10, round(10 * value / scale))) if scale > 0 else 0


def _token(text: str) -> str:
    """A token as the prompt lists it: whitespace-only tokens made visible."""
    if not text.strip():
        return text.replace(" ", "␣").replace("\n", "\\n").replace("\t", "\\t") or "∅"
    return text.replace("\n", "\\n")


def explanation_request(examples: list[Context], contrast: list[Context],
                        cfg: ExplainerConfig) -> ChatRequest:
    """The chat request for one latent. `examples` are its activating train contexts."""
    if not examples:
        raise ValueError("no activating examples to explain")
    if cfg.style == "short":
        return _short_request(examples, contrast, cfg)
    scale = max(c.max_activation for c in examples)
    blocks, counts = [], Counter()
    for i, context in enumerate(examples, start=1):
        firing = [j for j in context.firing
                  if context.activations[j] >= cfg.mark_fraction * scale]
        levels = ", ".join(f"{_token(context.tokens[j])} ({_level(context.activations[j], scale)})"
                           for j in firing)
        counts.update(_token(context.tokens[j]) for j in firing)
        blocks.append(EXAMPLE.format(i=i, text=context.marked(firing), levels=levels))
    common = ", ".join(f"'{tok}' x{n}" for tok, n in counts.most_common(5))
    user = "\n\n".join(blocks) + "\n\n" + COMMON.format(tokens=common)
    if contrast:
        user += "\n\n" + CONTRAST.format(texts="\n".join(f"- {c.text}" for c in contrast))
    max_tokens = max(cfg.max_tokens, 400 if cfg.chain_of_thought else 96)
    return ChatRequest(messages=(("system", SYSTEM.format(
        reasoning=REASONING[cfg.chain_of_thought])), ("user", user)), max_tokens=max_tokens)


def token_hint(marked_tokens: list[str]) -> str | None:
    """The short prompt's "Marked tokens: 'self' x8, ..." line (three most frequent, tokens
    stripped of surrounding space), or None unless one token has `HINT_SHARE` of the marks."""
    counts = Counter(_token(t.strip() or t) for t in marked_tokens)
    if not counts or counts.most_common(1)[0][1] < HINT_SHARE * sum(counts.values()):
        return None
    return SHORT_HINT.format(tokens=", ".join(f"'{t}' x{n}" for t, n in counts.most_common(3)))


def _short_user(texts: list[str], hint: str | None = None) -> str:
    body = "\n".join(SHORT_EXAMPLE.format(i=i, text=t.replace("\n", "\\n"))
                     for i, t in enumerate(texts, start=1))
    return f"{body}\n\n{hint}\n\n{SHORT_QUESTION}" if hint else f"{body}\n\n{SHORT_QUESTION}"


def _short_request(examples: list[Context], contrast: list[Context],
                   cfg: ExplainerConfig) -> ChatRequest:
    """System prompt, the worked examples as earlier turns, then this latent's marked texts."""
    scale = max(c.max_activation for c in examples)
    marks = [[j for j in c.firing if c.activations[j] >= cfg.mark_fraction * scale]
             for c in examples]
    texts = [c.marked(m) for c, m in zip(examples, marks)]

    def hint(tokens: list[str]) -> str | None:
        return token_hint(tokens) if cfg.token_hint else None

    messages: list[tuple[str, str]] = [("system", SHORT_SYSTEM)]
    for shot_texts, answer in cfg.shots():
        shot_marks = [t for text in shot_texts for t in re.findall(r"<<(.*?)>>", text)]
        messages += [("user", _short_user(list(shot_texts), hint(shot_marks))),
                     ("assistant", answer)]
    user = _short_user(texts, hint([c.tokens[j] for c, m in zip(examples, marks) for j in m]))
    if contrast:
        user = CONTRAST.format(texts="\n".join(f"- {c.text}" for c in contrast)) + "\n\n" + user
    max_tokens = max(cfg.max_tokens, 400) if cfg.chain_of_thought else cfg.max_tokens
    return ChatRequest(messages=(*messages, ("user", user)), max_tokens=max_tokens)


FOLLOW_UP = ("Your answer did not end with the required line. Reply with one line only: "
             "[EXPLANATION]: <your explanation>")


def follow_up_request(request: ChatRequest, answer: str) -> ChatRequest:
    """The same conversation plus the unparsable answer and a request for the one line."""
    return ChatRequest(messages=(*request.messages, ("assistant", answer), ("user", FOLLOW_UP)),
                       max_tokens=min(64, request.max_tokens), temperature=request.temperature)


_MARKER = re.compile(r"\[?\**\s*explanation\s*\**\]?\s*\**\s*[:：\-]\s*(.*)", re.IGNORECASE)


def parse_explanation(answer: str, first_line: bool = False) -> str:
    """The explanation in a model's answer: the text after the last ``[EXPLANATION]:``
    (tolerating case, bold, missing brackets, the text on the next line); without a marker,
    a short answer of one line is taken as it is (with `first_line`, the first line of a
    longer answer: the short prompt asks for a phrase, and small models sometimes go on
    writing after it). Raises `ExplanationParseError`."""
    lines = [line.strip() for line in answer.strip().splitlines()]
    for i in range(len(lines) - 1, -1, -1):
        match = _MARKER.search(lines[i])
        if match:
            text = match.group(1).strip() or next((line for line in lines[i + 1:] if line), "")
            cleaned = _clean(text)
            if cleaned:
                return cleaned
    content = [line for line in lines if line]
    if (first_line and len(content) > 1 and not _MARKER.search(answer)
            and len(content[0].split()) <= 10):
        content = content[:1]  # a short phrase, then chatter: the phrase is the answer
    if len(content) == 1 and len(content[0].split()) <= 25 and not _MARKER.search(content[0]):
        cleaned = _clean(content[0])
        if cleaned:
            return cleaned
    raise ExplanationParseError(f"no explanation found in the answer {answer[:200]!r}")


def _clean(text: str) -> str:
    text = text.strip().strip("*").strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'`":
        text = text[1:-1]
    text = text.replace("<<", "").replace(">>", "").strip().rstrip(".").strip()
    return text if text and not text.startswith("<your") else ""
