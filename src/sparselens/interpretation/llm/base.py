"""The one interface every language-model backend implements, and the values it passes.

A request is plain data (messages, token budget, temperature, how many first-token
alternatives to return), so it can be hashed into a cache key and replayed against any
backend. Backends answer a list of requests at once (they batch or run them concurrently as
they can) and report each answer through a callback the moment it arrives, so a caller can
persist it before the rest finish. A failed request comes back as an `LLMError` in its slot,
never as an exception that loses its neighbours' answers; only configuration errors (bad key,
unknown model) raise, because every later request would fail the same way.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol, runtime_checkable


@dataclass(frozen=True)
class ChatRequest:
    """One chat completion: ``messages`` are (role, content) pairs."""

    messages: tuple[tuple[str, str], ...]
    max_tokens: int = 256
    temperature: float = 0.0
    top_logprobs: int = 0
    """How many alternatives of the first generated token to return with log-probabilities
    (0: none). Detection and fuzzing read P(Yes) from them."""

    def key(self, model: str) -> str:
        """sha256 of the full request and the model identity: the cache key."""
        payload = json.dumps({"model": model, "request": asdict(self)}, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()


@dataclass
class ChatResponse:
    text: str
    first_token_logprobs: dict[str, float] = field(default_factory=dict)
    """Token text -> log-probability for the first generated token's top alternatives."""
    cached: bool = False

    def to_json(self) -> dict[str, Any]:
        return {"text": self.text, "first_token_logprobs": self.first_token_logprobs}

    @classmethod
    def from_json(cls, data: dict[str, Any], cached: bool = False) -> ChatResponse:
        return cls(text=str(data["text"]),
                   first_token_logprobs={str(k): float(v) for k, v in
                                         data.get("first_token_logprobs", {}).items()},
                   cached=cached)

    def yes_probability(self) -> float | None:
        """P(Yes) / (P(Yes) + P(No)) from the first token's alternatives; falls back to the
        answer text (1.0 / 0.0); None when the answer is neither."""
        mass = {"yes": 0.0, "no": 0.0}
        for token, logprob in self.first_token_logprobs.items():
            word = token.strip().strip("\"'*.").lower()
            if word in mass:
                mass[word] += math.exp(logprob)
        if mass["yes"] + mass["no"] > 0:
            return mass["yes"] / (mass["yes"] + mass["no"])
        word = self.text.strip().strip("\"'*.").lower()
        if word.startswith("yes"):
            return 1.0
        if word.startswith("no"):
            return 0.0
        return None


class LLMError(Exception):
    """A request that failed after retries: ``kind`` is one of unreachable, timeout, http,
    malformed (the answer could not be read)."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(f"{kind}: {message}")
        self.kind = kind


class LLMConfigError(RuntimeError):
    """The backend cannot work at all (wrong key, unknown model): stop and tell the user."""


Result = ChatResponse | LLMError
OnResult = Callable[[int, Result], None]


@runtime_checkable
class LLMClient(Protocol):
    """Anything that answers chat requests."""

    identity: str
    """Names the model for cache keys: two clients with the same identity give the same
    answers to the same requests."""

    def complete(self, requests: Sequence[ChatRequest],
                 on_result: OnResult | None = None) -> list[Result]:
        """Answer every request (in order); call ``on_result(i, result)`` as each arrives."""
        ...
