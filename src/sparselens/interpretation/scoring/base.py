"""What every scorer gets and returns.

A scorer judges one explanation of one latent on that latent's held-out (test) contexts:
activating ones and quiet ones. Scorers that ask a language model send their requests
through the (cached) client in one call, so a backend can batch or pipeline them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from sparselens.interpretation.contexts import Context
from sparselens.interpretation.llm.base import LLMClient


@dataclass
class HeldOutData:
    """One latent's test contexts (never shown to the explainer)."""

    latent: int
    activating: list[Context]
    quiet: list[Context]
    intruders: list[Context] = field(default_factory=list)
    """Activating test contexts of other latents (for intruder detection)."""

    def labelled(self) -> tuple[list[Context], list[int]]:
        """Activating then quiet contexts, with labels 1 and 0 (what the binary scorers rank)."""
        return (self.activating + self.quiet,
                [1] * len(self.activating) + [0] * len(self.quiet))


@dataclass
class Score:
    value: float | None
    """The headline number (None when it cannot be computed, e.g. one class missing)."""
    details: dict[str, Any] = field(default_factory=dict)


class Scorer(Protocol):
    name: str
    uses_explanation: bool
    """False for scorers that judge the latent itself (intruder): no baselines then."""
    chance: float
    """The expected value of the headline number for an uninformative judge."""

    def score(self, explanation: str | None, data: HeldOutData, llm: LLMClient) -> Score: ...
