"""`sparselens circuit` and `sparselens flow` as library functions returning results."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from sparselens.circuits import metrics
from sparselens.circuits.flow import FlowStep, flow, trace
from sparselens.circuits.graph import Graph, attribution_graph
from sparselens.circuits.prune import prune
from sparselens.circuits.validate import Validation, validate
from sparselens.io.atomic import atomic_write_json
from sparselens.lens import Lens


@dataclass
class CircuitResult:
    graph: Graph
    """The pruned graph."""
    full_graph: Graph
    validation: Validation | None
    seconds: float
    out: Path | None

    def summary(self) -> dict[str, Any]:
        latents = [n for n in self.graph.nodes if n.kind == "latent"]
        return {"metric": self.graph.metric, "value": self.graph.value,
                "nodes": len(self.graph.nodes), "latent_nodes": len(latents),
                "nodes_before_pruning": len(self.full_graph.nodes),
                "seconds": round(self.seconds, 2),
                "validation_correlation": (self.validation.correlation if self.validation
                                           else None)}


def trace_circuit(lens: Lens, prompt: str, target: str, *, contrast: str | None = None,
                  max_latents: int = 256, batch_size: int = 8, node_threshold: float = 0.8,
                  edge_threshold: float = 0.98, validate_top: int = 10,
                  out: str | Path | None = None, progress: bool = True) -> CircuitResult:
    """Graph of ``logit(target)`` (minus ``logit(contrast)``) on `prompt` through every
    attached transcoder, pruned, checked by ablation, written as JSON to `out`."""
    metric = (metrics.logit_diff(lens.tokenizer, target, contrast) if contrast
              else metrics.logit(lens.tokenizer, target))
    start = time.perf_counter()
    full = attribution_graph(lens, prompt, metric, max_latents=max_latents,
                             batch_size=batch_size, progress=progress)
    pruned = prune(full, node_threshold, edge_threshold)
    checked = validate(lens, prompt, metric, full, top=validate_top) if validate_top else None
    seconds = time.perf_counter() - start
    result = CircuitResult(pruned, full, checked, seconds, Path(out) if out else None)
    if out is not None:
        payload = pruned.to_json() | {"prompt": prompt, "summary": result.summary()}
        if checked is not None:
            payload["validation"] = checked.to_json()
        atomic_write_json(out, payload)
    return result


@dataclass
class FlowResult:
    steps: list[FlowStep]
    names: list[str]

    def to_json(self, threshold: float, traces: list[list[tuple[int, int, float]]]
                ) -> dict[str, Any]:
        return {"dictionaries": self.names, "threshold": threshold,
                "steps": [{"from": self.names[s.index - 1], "to": self.names[s.index],
                           "matched_fraction": float((s.cosine >= threshold).float().mean()),
                           "mean_cosine": float(s.cosine.mean())} for s in self.steps],
                "traces": [[{"dictionary": self.names[i], "latent": j,
                             "cosine": None if c != c else c} for i, j, c in path]
                           for path in traces]}


def feature_flow(paths: list[str | Path], *, by: Literal["decoder", "encoder"] = "decoder",
                 threshold: float = 0.5, follow: list[int] = (), start: int = 0,
                 out: str | Path | None = None) -> dict[str, Any]:
    """Match latents between consecutive dictionaries and trace `follow` latents of the
    dictionary at index `start`; returns (and writes to `out`) the JSON summary."""
    from sparselens.io.detect import load_any

    dictionaries = [load_any(p) for p in paths]
    with torch.no_grad():
        steps = flow(dictionaries, by)
    result = FlowResult(steps, [str(p) for p in paths])
    payload = result.to_json(threshold, [trace(steps, start, j, threshold) for j in follow])
    if out is not None:
        atomic_write_json(out, payload)
    return payload
