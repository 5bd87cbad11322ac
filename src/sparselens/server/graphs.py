"""Attribution graphs (`sparselens circuit --out`) served beside the dictionaries.

Only the files named at startup are served, each under a name (its file stem): the URL picks
a name from that table and never becomes a path. Each file is read and checked once at
startup, so a malformed or foreign JSON stops the server with a message naming the file and
what is wrong, rather than a page failing later. A pruned graph is small (hundreds of nodes),
so it is kept in memory and answered as is.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sparselens.server.files import read_checked_json

GRAPH_FORMAT = "sparselens.attribution-graph/1"
NODE_KINDS = ("embedding", "latent", "error", "metric")
HOW_TO_WRITE = "write one with `sparselens circuit ... --out graph.json`"


@dataclass(frozen=True)
class ServedGraph:
    name: str
    path: Path
    data: dict[str, Any]

    def describe(self) -> dict[str, Any]:
        """The list entry: enough to pick a graph without loading it."""
        data = self.data
        return {"name": self.name, "metric": data.get("metric"), "value": data.get("value"),
                "prompt": data.get("prompt") or "".join(data["tokens"]),
                "n_nodes": len(data["nodes"]), "n_edges": len(data["edges"])}


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and \
        math.isfinite(value)


def _check_node(node: Any, n_tokens: int) -> str | None:
    """What is wrong with one node, or None."""
    if not isinstance(node, dict):
        return "is not an object"
    if not isinstance(node.get("id"), str) or not node["id"]:
        return "has no string 'id'"
    if node.get("kind") not in NODE_KINDS:
        return f"has kind {node.get('kind')!r}, not one of {list(NODE_KINDS)}"
    for key in ("layer", "position"):
        if not isinstance(node.get(key), int) or isinstance(node.get(key), bool):
            return f"has no integer {key!r}"
    if not 0 <= node["position"] < n_tokens:
        return f"has position {node['position']} outside the {n_tokens} tokens"
    for key in ("activation", "influence"):
        if key in node and node[key] is not None and not _number(node[key]):
            return f"has a {key!r} that is not a finite number"
    return None


def check_graph(data: Any) -> str | None:
    """What is wrong with a parsed graph file (the docs/circuits.md export), or None."""
    if not isinstance(data, dict):
        return "it is not a JSON object"
    if data.get("format") != GRAPH_FORMAT:
        return f"its 'format' is {data.get('format')!r}, expected {GRAPH_FORMAT!r}"
    tokens, nodes, edges = data.get("tokens"), data.get("nodes"), data.get("edges")
    if not isinstance(tokens, list) or not all(isinstance(t, str) for t in tokens):
        return "'tokens' is not a list of strings"
    if not isinstance(nodes, list) or not isinstance(edges, list):
        return "'nodes' and 'edges' must be lists"
    ids = set()
    for i, node in enumerate(nodes):
        problem = _check_node(node, len(tokens))
        if problem:
            return f"node {i} {problem}"
        if node["id"] in ids:
            return f"node id {node['id']!r} appears twice"
        ids.add(node["id"])
    for i, edge in enumerate(edges):
        if not isinstance(edge, dict) or not _number(edge.get("weight")):
            return f"edge {i} is not an object with a finite number 'weight'"
        for end in ("source", "target"):
            if edge.get(end) not in ids:
                return f"edge {i} has {end} {edge.get(end)!r}, which is no node"
    return None


def _names(paths: Sequence[Path]) -> list[str]:
    """File stems; where two collide, the parent folder joins the name (run_a-circuit)."""
    stems = [p.stem for p in paths]
    names = [f"{p.resolve().parent.name}-{s}" if stems.count(s) > 1 else s
             for p, s in zip(paths, stems)]
    if len(set(names)) != len(names):
        raise ValueError(f"two graph files would share a name: {names}; rename one")
    return names


def load_graph(path: Path, name: str) -> ServedGraph:
    """Read and check one graph file; ValueError naming the file and the problem."""
    data = read_checked_json(path, "graph", "an attribution graph", check_graph, HOW_TO_WRITE)
    return ServedGraph(name, path, data)


def load_graphs(paths: Sequence[str | Path]) -> list[ServedGraph]:
    """The graphs to serve, in the order given, each checked (see `check_graph`)."""
    files = [Path(p).expanduser() for p in paths]
    return [load_graph(path, name) for path, name in zip(files, _names(files))]
