"""Validation by intervention: does ablating a graph's nodes move the metric by what the graph
predicts?

The graph is a linear model of the replacement model; ablating a latent (zeroing it in its
transcoder, error term kept) in the *real* model tests both the linearisation (frozen attention
and norms) and the first-order reading. Predicted: ``-activation * total effect`` from
`Graph.total_effects`, which follows every computed path through downstream latents.
Measured: the metric with that latent ablated at its position, minus the clean metric.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from sparselens.circuits.graph import Graph
from sparselens.circuits.metrics import Metric
from sparselens.lens import AblateLatents, Lens, Tokens
from sparselens.lens.tokens import Inputs


@dataclass
class Check:
    node: str
    predicted: float
    measured: float


@dataclass
class Validation:
    checks: list[Check]

    @property
    def correlation(self) -> float:
        """Pearson correlation of predicted and measured changes (NaN under 3 checks)."""
        if len(self.checks) < 3:
            return math.nan
        pairs = torch.tensor([[c.predicted, c.measured] for c in self.checks], dtype=torch.float64)
        return float(torch.corrcoef(pairs.T)[0, 1])

    def to_json(self) -> dict:
        return {"correlation": self.correlation,
                "checks": [vars(c) for c in self.checks]}


@torch.no_grad()
def validate(lens: Lens, prompt: Inputs | Tokens, metric: Metric, graph: Graph,
             top: int = 10) -> Validation:
    """Ablate each of the `top` latent nodes by influence in turn; predicted vs measured."""
    tokens = lens.tokenize(prompt)
    clean = float(metric(lens.forward(tokens).logits, tokens.ids).sum())
    effects = graph.total_effects()
    influence = graph.influence if len(graph.influence) else graph.compute_influence()
    latents = [i for i, n in enumerate(graph.nodes) if n.kind == "latent"]
    latents.sort(key=lambda i: -float(influence[i]))
    checks = []
    for i in latents[:top]:
        node = graph.nodes[i]
        edit = AblateLatents(node.dictionary, [node.latent], positions=[node.position])
        ablated = float(metric(lens.forward(tokens, edits=[edit]).logits, tokens.ids).sum())
        checks.append(Check(node.id, -node.activation * float(effects[i]), ablated - clean))
    return Validation(checks)
