"""Each latent's attribution to a metric on one prompt.

- ``grad``: activation x gradient, ``a_i * d(metric)/d(a_i)`` (the first-order effect of
  removing the latent), from one forward and one backward through the feature API's
  attribution leaves;
- ``ig``: integrated gradients (Sundararajan et al., 2017) along the straight path from all
  codes at 0 to their clean values (every layer's together, each from the clean pass, error
  terms held at their clean value): ``a_i * mean over alpha of d(metric)/d(a_i) at alpha *
  a``. By completeness the attributions sum to ``metric(codes) - metric(codes = 0)`` up to
  the midpoint rule's error; slower by `steps`.

Error nodes (what each dictionary fails to reconstruct) get ``error . gradient`` per token, so
their share of the metric is visible beside the latents'.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor

from sparselens.circuits.metrics import Metric
from sparselens.lens import Lens, Tokens
from sparselens.lens.tokens import Inputs


@dataclass
class LatentAttribution:
    """Attributions of one prompt; tensors are per token ``(L, ...)``."""

    metric: str
    value: float
    """The metric on the clean model."""
    method: str
    tokens: Tokens
    activations: dict[str, Tensor]
    """``(L, n_latents)`` codes per dictionary."""
    scores: dict[str, Tensor]
    """``(L, n_latents)`` attribution per dictionary (0 where a latent is inactive)."""
    errors: dict[str, Tensor]
    """``(L,)`` attribution of each dictionary's error node per token."""

    def top(self, k: int = 20, tokenizer: Any = None) -> list[dict[str, Any]]:
        """The `k` latents with the largest absolute attribution, as JSON-ready rows."""
        rows = []
        for name, scores in self.scores.items():
            flat = scores.flatten()
            n = scores.shape[1]
            for index in flat.abs().topk(min(k, flat.numel())).indices.tolist():
                position, latent = divmod(index, n)
                if flat[index] == 0:
                    continue
                token = int(self.tokens.ids[0, position])
                rows.append({"dictionary": name, "position": position, "latent": latent,
                             "token": tokenizer.decode([token]) if tokenizer else token,
                             "activation": float(self.activations[name][position, latent]),
                             "attribution": float(flat[index])})
        return sorted(rows, key=lambda r: -abs(r["attribution"]))[:k]


def attribute(lens: Lens, prompt: Inputs | Tokens, metric: Metric,
              names: list[str] | None = None, method: Literal["grad", "ig"] = "grad",
              steps: int = 16) -> LatentAttribution:
    """Attribution of every latent of the chosen dictionaries (default: all attached)."""
    if method not in ("grad", "ig"):
        raise ValueError(f"method must be 'grad' or 'ig', got {method!r}")
    if method == "ig" and steps < 1:
        raise ValueError(f"integrated gradients need steps >= 1, got {steps}")
    tokens = lens.tokenize(prompt)
    if tokens.shape[0] != 1:
        raise ValueError("attribute one prompt at a time")
    names = names or lens.names
    with lens.attribution(names) as clean:
        value_at = metric(lens.forward(tokens).logits, tokens.ids).sum()
        value_at.backward()
    value = float(value_at.detach())
    codes = {n: clean.codes[n].detach()[0] for n in names}
    errors = {n: clean.errors[n].detach()[0] for n in names}
    grads = {n: clean.codes[n].grad[0] for n in names}
    error_grads = {n: clean.errors[n].grad[0] for n in names}
    if method == "ig":
        grads = {n: torch.zeros_like(g) for n, g in grads.items()}
        for alpha in [(i + 0.5) / steps for i in range(steps)]:  # midpoint rule
            with lens.attribution(names, scale=alpha, reference=clean) as leaves:
                metric(lens.forward(tokens).logits, tokens.ids).sum().backward()
            for name in names:
                grads[name] += leaves.codes[name].grad[0] / steps
    return LatentAttribution(
        metric=metric.name, value=value, method=method, tokens=tokens, activations=codes,
        scores={n: codes[n] * grads[n] for n in names},
        errors={n: (errors[n] * error_grads[n]).sum(-1) for n in names})
