"""Attribution graph files for the viewer's graph page, traced on tiny models with the
circuit tests' helpers (so they are what `sparselens circuit` writes, not hand-made JSON)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from conftest import make_tiny_llama
from sparselens.circuits.graph import attribution_graph
from sparselens.circuits.metrics import logit
from sparselens.circuits.prune import prune
from sparselens.lens import Lens
from test_circuits import chain_lens, random_transcoders

SERVED_AS = "run_a-sae"
"""The chain graph's layer-0 transcoder is renamed to this served dictionary's name, so its
latent node links to a feature page (latent 2 exists there too)."""


def chain_graph() -> dict[str, Any]:
    """The planted circuit T/P2 -> L0/P2/F2 -> L1/P2/F5 -> metric (4 nodes, 3 edges)."""
    lens, _ = chain_lens()
    graph = attribution_graph(lens, "xya", logit(lens.tokenizer, "z"), keep_error=False,
                              progress=False)
    data = prune(graph, node_threshold=0.8).to_json()
    for node in data["nodes"]:
        if node["dictionary"] == "tc0":
            node["dictionary"] = SERVED_AS
    return data


def random_graph() -> dict[str, Any]:
    """A busier graph (error nodes, many latents) on random transcoders."""
    lens = Lens(make_tiny_llama(seed=5), random_transcoders())
    graph = attribution_graph(lens, "hello world", logit(lens.tokenizer, "d"), max_latents=16,
                              progress=False)
    return prune(graph, node_threshold=0.8, edge_threshold=0.98).to_json() | {
        "prompt": "hello world"}


def write_graphs(folder: Path) -> dict[str, Path]:
    """`chain.json` and `random.json` in `folder`; returns their paths by served name."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, data in (("chain", chain_graph()), ("random", random_graph())):
        paths[name] = folder / f"{name}.json"
        paths[name].write_text(json.dumps(data))
    return paths
