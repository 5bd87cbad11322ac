"""Which latents have stopped firing.

Gao et al. call a latent dead when it has not fired for a fixed number of tokens (10M in the
paper); the AuxK loss then uses exactly those latents to model the residual error. The counter
lives on the training device and is updated without reading anything back to the host.
"""

from __future__ import annotations

import torch
from torch import Tensor


class DeadLatentTracker:
    """Tokens since each latent last fired, and the dead mask derived from it."""

    def __init__(self, n_latents: int, window: int, device: str | torch.device = "cpu") -> None:
        if window <= 0:
            raise ValueError(f"the dead-latent window must be a positive token count, got {window}")
        self.window = window
        self.tokens_since_fired = torch.zeros(n_latents, dtype=torch.int64, device=device)

    def update(self, fired: Tensor, n_tokens: int) -> None:
        """Record one batch of `n_tokens` tokens; `fired` is a bool ``(n_latents,)`` mask."""
        self.tokens_since_fired.add_(n_tokens).masked_fill_(fired, 0)

    def dead_mask(self) -> Tensor:
        """Bool ``(n_latents,)``: latents silent for at least `window` tokens."""
        return self.tokens_since_fired >= self.window

    def state_dict(self) -> dict[str, Tensor | int]:
        return {"tokens_since_fired": self.tokens_since_fired.cpu().clone(),
                "window": self.window}

    def load_state_dict(self, state: dict[str, Tensor | int]) -> None:
        counts = state["tokens_since_fired"]
        assert isinstance(counts, Tensor)
        if counts.shape != self.tokens_since_fired.shape:
            raise ValueError(f"dead-latent counters have shape {tuple(counts.shape)}, the "
                             f"dictionary has {self.tokens_since_fired.shape[0]} latents")
        self.tokens_since_fired.copy_(counts)
        self.window = int(state["window"])
