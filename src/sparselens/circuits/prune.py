"""Pruning an attribution graph to what carries the metric (circuit-tracer's recipe).

Nodes: sorted by influence on the metric, the smallest set that holds `node_threshold` of the
total influence (the metric node always stays). Edges: among the kept nodes, an edge's score is
its row-normalised absolute weight times its target's influence (the metric counts 1); the
highest-scoring edges holding `edge_threshold` of the total stay. Nodes left with no edge are
dropped, unless they are the metric.
"""

from __future__ import annotations

import torch
from torch import Tensor

from sparselens.circuits.graph import Graph


def _cumulative_keep(scores: Tensor, threshold: float) -> Tensor:
    """Bool mask of the largest scores whose sum first reaches `threshold` of the total."""
    if not 0 < threshold <= 1:
        raise ValueError(f"a pruning threshold is a fraction in (0, 1], got {threshold}")
    total = float(scores.sum())
    keep = torch.zeros_like(scores, dtype=torch.bool)
    if total <= 0:
        return keep
    order = scores.argsort(descending=True)
    cumulative = scores[order].cumsum(0) / total
    count = int((cumulative < threshold).sum()) + 1
    keep[order[:count]] = True
    return keep & (scores > 0)


def prune(graph: Graph, node_threshold: float = 0.8, edge_threshold: float = 0.98) -> Graph:
    """A smaller graph with the nodes and edges that carry most of the influence."""
    influence = graph.influence if len(graph.influence) else graph.compute_influence()
    metric = graph.metric_index
    scores = influence.clone()
    scores[metric] = 0
    keep = _cumulative_keep(scores, node_threshold)
    keep[metric] = True
    target_weight = influence[graph.targets].clone()
    target_weight[0] = 1.0  # row 0 is the metric
    row_kept = keep[graph.targets]
    edge_scores = graph.normalised_rows() * (target_weight * row_kept)[:, None] * keep[None, :]
    edges = _cumulative_keep(edge_scores.flatten(), edge_threshold).reshape(edge_scores.shape)
    connected = edges.any(0)
    connected[graph.targets[edges.any(1)]] = True
    connected[metric] = True
    kept = (keep & connected).nonzero().flatten()
    new_index = torch.full((len(graph.nodes),), -1, dtype=torch.long)
    new_index[kept] = torch.arange(len(kept))
    rows_kept = (new_index[graph.targets] >= 0).nonzero().flatten()
    rows = (graph.rows * edges)[rows_kept][:, kept]
    return Graph(graph.prompt_tokens, graph.metric, graph.value,
                 [graph.nodes[i] for i in kept.tolist()], rows,
                 new_index[graph.targets[rows_kept]], influence[kept],
                 {**graph.settings, "node_threshold": node_threshold,
                  "edge_threshold": edge_threshold}, graph.bias)
