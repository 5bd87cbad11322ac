"""What passes between the trainer and a dictionary at each step: the step's context in, the
loss and its parts out. Its own module so that the training kernels (`kernels.py`) and the base
class (`base.py`) both build on it without importing each other."""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import Tensor


@dataclass
class StepContext:
    """What the trainer tells a dictionary about the current step."""

    step: int = 0
    total_steps: int = 1
    dead_mask: Tensor | None = None
    """Bool ``(n_latents,)``: latents that have not fired for the configured number of tokens."""

    @property
    def progress(self) -> float:
        return min(1.0, self.step / max(1, self.total_steps))


@dataclass
class LossOutput:
    """A training step's loss, the reconstruction, codes, and scalars to log."""

    loss: Tensor
    recon: Tensor
    codes: Tensor
    terms: dict[str, Tensor] = field(default_factory=dict)
