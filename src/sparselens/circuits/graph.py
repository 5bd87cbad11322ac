"""Attribution graphs through transcoders (Ameisen et al., "Circuit tracing", 2025; Dunefsky et
al., "Transcoders find interpretable LLM feature circuits", 2024).

Every MLP is replaced by a transcoder whose codes and error term are autograd leaves, and
attention patterns and norm denominators are frozen (`Lens.frozen`). The model is then linear
from the leaves (token embeddings, active latents, error nodes) to the logits and to every
latent's pre-activation, so one backward from a target gives the exact direct effect of every
upstream leaf on it: the edge weight ``A[target, source] = activation(source) *
d target / d activation(source)``.

Nodes: an embedding node per token, a latent node per active latent per token, an error node
per transcoder per token, and the metric node. Edges into the metric come from one backward;
edges into latents come from backwards of their pre-activations, batched by running copies of
the prompt as rows of one batch (a row's leaves only see its own target). Which latents get
their incoming edges computed is decided greedily by influence on the metric (as circuit-tracer
does), up to `max_latents`; pruning (`prune`) then keeps the nodes and edges that carry a given
fraction of the influence.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from sparselens.circuits.metrics import Metric
from sparselens.lens import Lens, Tokens
from sparselens.lens.tokens import Inputs

KINDS = ("embedding", "latent", "error", "metric")


@dataclass(frozen=True)
class Node:
    kind: str
    """One of `KINDS`."""
    position: int
    layer: int
    """Index of the transcoder in layer order; -1 for embeddings, n_layers for the metric."""
    latent: int = -1
    dictionary: str = ""
    activation: float = 0.0
    """The code for latents; the vector norm for embeddings and errors; the value for the
    metric."""

    @property
    def id(self) -> str:
        if self.kind == "latent":
            return f"L{self.layer}/P{self.position}/F{self.latent}"
        if self.kind == "error":
            return f"E{self.layer}/P{self.position}"
        if self.kind == "embedding":
            return f"T/P{self.position}"
        return "metric"


@dataclass
class Graph:
    """Nodes, the direct effects into every expanded target, and each node's influence.

    Only the metric and the expanded latents have incoming edges, so edges are stored as one
    row per target: ``rows[r, s]`` is the direct effect of node ``s`` on node ``targets[r]``
    (row 0 is the metric). With 18 layers the nodes number about ten thousand; a dense square
    matrix would take most of a gigabyte, the rows a few megabytes.
    """

    prompt_tokens: list[str]
    metric: str
    value: float
    nodes: list[Node]
    rows: Tensor
    """float64 ``(n_targets, n_nodes)``."""
    targets: Tensor
    """int64 ``(n_targets,)``: the node each row is the incoming edges of."""
    influence: Tensor = field(default_factory=lambda: torch.zeros(0))
    settings: dict[str, Any] = field(default_factory=dict)
    bias: float = 0.0
    """What the transcoders' output biases add to the metric: with the edges into the metric
    it sums to the metric's value (the replacement model is linear)."""

    @property
    def metric_index(self) -> int:
        return len(self.nodes) - 1

    @property
    def computed(self) -> Tensor:
        """Bool ``(n_nodes,)``: nodes whose incoming edges were computed."""
        mask = torch.zeros(len(self.nodes), dtype=torch.bool)
        mask[self.targets] = True
        return mask

    @property
    def adjacency(self) -> Tensor:
        """Dense ``(n_nodes, n_nodes)`` view ``A[target, source]`` (small graphs, tests)."""
        dense = torch.zeros(len(self.nodes), len(self.nodes), dtype=self.rows.dtype)
        dense[self.targets] = self.rows
        return dense

    def normalised_rows(self) -> Tensor:
        weights = self.rows.abs()
        return weights / weights.sum(1, keepdim=True).clamp_min(1e-30)

    def compute_influence(self) -> Tensor:
        """Influence of every node on the metric: the sum over paths of products of the
        row-normalised absolute edge weights (circuit-tracer's definition)."""
        weights = self.normalised_rows()
        x = torch.zeros(len(self.targets), dtype=weights.dtype)
        x[0] = 1.0
        total = torch.zeros(len(self.nodes), dtype=weights.dtype)
        for _ in range(len(self.nodes)):
            spread = x @ weights
            total += spread
            x = spread[self.targets]
            if float(x.abs().sum()) < 1e-12:
                break
        self.influence = total
        return total

    def total_effects(self) -> Tensor:
        """Signed d(metric)/d(activation) of every node in the linear replacement model,
        through all computed paths (for latents ``d a / d pre = 1`` on their active side)."""
        act = torch.tensor([n.activation for n in self.nodes], dtype=self.rows.dtype)
        per_unit = self.rows / act.masked_fill(act == 0, 1.0)  # d target / d source
        direct = per_unit[0]
        total = direct.clone()
        for _ in range(len(self.nodes)):
            new = direct + total[self.targets[1:]] @ per_unit[1:]
            if torch.allclose(new, total, rtol=0, atol=1e-9):
                break
            total = new
        return total

    def to_json(self) -> dict[str, Any]:
        """The documented export (docs/circuits.md): nodes and non-zero edges."""
        influence = self.influence if len(self.influence) else self.compute_influence()
        nodes = [{"id": n.id, "kind": n.kind, "layer": n.layer, "position": n.position,
                  "latent": n.latent if n.kind == "latent" else None,
                  "dictionary": n.dictionary or None, "activation": n.activation,
                  "influence": float(influence[i]),
                  "token": self.prompt_tokens[n.position]} for i, n in enumerate(self.nodes)]
        r, c = self.rows.nonzero(as_tuple=True)
        edges = [{"source": self.nodes[s].id, "target": self.nodes[int(self.targets[t])].id,
                  "weight": float(self.rows[t, s])} for t, s in zip(r.tolist(), c.tolist())]
        return {"format": "sparselens.attribution-graph/1", "metric": self.metric,
                "value": self.value, "tokens": self.prompt_tokens, "nodes": nodes,
                "edges": edges, "settings": self.settings}


def check_transcoders(lens: Lens, names: list[str]) -> None:
    """Every block's MLP path must be replaced by exactly one attached transcoder: one that
    reads and writes inside that block (``mlp_in.L -> mlp_out.L``, or, as circuit-tracer's Gemma
    mapping does, through the norm after the MLP) at two different sites."""
    from sparselens.models.hookpoints import find_blocks

    prefix, blocks = find_blocks(lens.model)
    per_block: dict[int, list[str]] = {}
    for name in names:
        att = lens.attached[name]
        inside = [i for i in range(len(blocks))
                  if att.write.module.startswith(f"{prefix}.{i}.")
                  and att.read.module.startswith(f"{prefix}.{i}.")]
        if not inside or att.read == att.write:
            raise ValueError(f"dictionary {name!r} reads {att.read} and writes {att.write}: not "
                             "a transcoder of one block's MLP (read mlp_in.L, write mlp_out.L)")
        per_block.setdefault(inside[0], []).append(name)
    missing = [i for i in range(len(blocks)) if i not in per_block]
    if missing:
        raise ValueError(f"attribution graphs need a transcoder for every layer's MLP; none "
                         f"writes mlp_out of layer(s) {missing}. Train them with `sparselens "
                         "train --hookpoint mlp_in.L --target-hookpoint mlp_out.L` and pass one "
                         "per layer")
    doubled = {i: n for i, n in per_block.items() if len(n) > 1}
    if doubled:
        raise ValueError(f"more than one transcoder per layer: {doubled}; pass one per layer")


def layer_order(lens: Lens, names: list[str]) -> list[str]:
    """Transcoder names sorted by the order of their sites in the model."""
    order = {name: i for i, (name, _) in enumerate(lens.model.named_modules())}
    return sorted(names, key=lambda n: order[lens.attached[n].write.module])


def attribution_graph(lens: Lens, prompt: Inputs | Tokens, metric: Metric,
                      names: list[str] | None = None, *, max_latents: int = 256,
                      batch_size: int = 8, keep_error: bool = True,
                      progress: bool = True) -> Graph:
    """The attribution graph of `metric` on `prompt` (see the module docstring).

    `keep_error=False` builds the graph of the spliced model (transcoders only, no error
    nodes), which is not the model's own computation but is fully explained by its latents."""
    names = layer_order(lens, names or lens.names)
    check_transcoders(lens, names)
    tokens = lens.tokenize(prompt)
    if tokens.shape[0] != 1:
        raise ValueError("build a graph for one prompt at a time")
    with lens.frozen(), lens.attribution(names, embeddings=True, active_only=True,
                                         keep_error=keep_error) as leaves:
        value = metric(lens.forward(tokens).logits, tokens.ids).sum()
        value.backward()
    keep = ~tokens.special[0]
    nodes, index = _nodes(leaves, names, keep, float(value.detach()))
    n = len(nodes)
    pieces = [lens.tokenizer.decode([t]) for t in tokens.ids[0].tolist()]
    graph = Graph(pieces, metric.name, float(value.detach()), nodes,
                  _row(leaves, names, index, n, row=0)[None], torch.tensor([n - 1]),
                  settings={"max_latents": max_latents, "transcoders": names,
                            "keep_error": keep_error},
                  bias=_bias(lens, leaves, names, keep))
    latent_ids = [i for i, node in enumerate(nodes) if node.kind == "latent"]
    budget = min(max_latents, len(latent_ids))
    expanded: set[int] = set()
    bar = tqdm(total=budget, desc="graph", unit="latent", disable=not progress)
    while len(expanded) < budget:
        influence = graph.compute_influence()
        pending = [i for i in latent_ids if i not in expanded]
        pending.sort(key=lambda i: (-float(influence[i]), -abs(nodes[i].activation)))
        batch = pending[:min(batch_size, budget - len(expanded))]
        rows = _incoming(lens, tokens, names, [nodes[i] for i in batch], index, n, keep_error,
                         leaves)
        graph.rows = torch.cat([graph.rows, torch.stack(rows)])
        graph.targets = torch.cat([graph.targets, torch.tensor(batch)])
        expanded.update(batch)
        bar.update(len(batch))
    bar.close()
    graph.compute_influence()
    return graph


def _nodes(leaves, names: list[str], keep: Tensor, value: float
           ) -> tuple[list[Node], dict[tuple[str, int], tuple[Tensor, ...]]]:
    """The node list and, per (kind, layer), where its nodes sit in it: ``(node ids,
    positions, latents)`` tensors, so a gradient is scattered into a row in a few ops."""
    nodes: list[Node] = []
    positions = list(range(len(keep)))  # special tokens keep embedding and error nodes
    groups: dict[tuple[str, int], list[tuple[int, int, int]]] = {}

    def add(node: Node) -> None:
        groups.setdefault((node.kind, node.layer), []).append(
            (len(nodes), node.position, node.latent))
        nodes.append(node)

    for p in positions:
        add(Node("embedding", p, -1, activation=float(leaves.embeddings[0, p].detach().norm())))
    for layer, name in enumerate(names):
        codes = leaves.codes[name][0].detach()
        for p in positions:
            for j in codes[p].nonzero().flatten().tolist():
                add(Node("latent", p, layer, j, name, float(codes[p, j])))
            if name in leaves.errors:
                add(Node("error", p, layer, dictionary=name,
                         activation=float(leaves.errors[name][0, p].detach().norm())))
    nodes.append(Node("metric", len(keep) - 1, len(names), activation=value))
    index = {key: tuple(torch.tensor(col) for col in zip(*rows)) for key, rows in groups.items()}
    return nodes, index


def _row(leaves, names: list[str], index: dict[tuple[str, int], tuple[Tensor, ...]], n: int,
         row: int) -> Tensor:
    """Direct effects on one target from the gradients of batch row `row` of the leaves."""
    out = torch.zeros(n, dtype=torch.float64)
    emb = leaves.embeddings
    if emb is not None and emb.grad is not None and ("embedding", -1) in index:
        ids, pos, _ = index[("embedding", -1)]
        out[ids] = (emb[row].detach() * emb.grad[row]).sum(-1).double()[pos]
    for layer, name in enumerate(names):
        codes = leaves.codes.get(name)
        if codes is None or codes.grad is None:
            continue  # the pass stopped before this layer: nothing here feeds the target
        if ("latent", layer) in index:
            ids, pos, lat = index[("latent", layer)]
            out[ids] = (codes[row].detach() * codes.grad[row]).double()[pos, lat]
        if ("error", layer) in index:
            errors = leaves.errors[name]
            ids, pos, _ = index[("error", layer)]
            out[ids] = (errors[row].detach() * errors.grad[row]).sum(-1).double()[pos]
    return out


def _incoming(lens: Lens, tokens: Tokens, names: list[str], targets: list[Node],
              index: dict[tuple[str, int], tuple[Tensor, ...]], n: int,
              keep_error: bool, reference) -> list[Tensor]:
    """Rows of direct effects into each target latent's pre-activation, one batch row each."""
    batch = Tokens(tokens.ids.expand(len(targets), -1), tokens.attention_mask.expand(
        len(targets), -1), tokens.special.expand(len(targets), -1))
    sites = {t.dictionary: str(lens.attached[t.dictionary].read) for t in targets}
    with lens.frozen(), lens.attribution(names, embeddings=True, active_only=True,
                                         keep_error=keep_error, reference=reference) as leaves:
        captured = lens.capture(batch, list(dict.fromkeys(sites.values())), grad=True)
        total = torch.zeros(())
        for row, target in enumerate(targets):
            dictionary = lens.attached[target.dictionary].dictionary
            x = captured[sites[target.dictionary]][row, target.position]
            pre = dictionary.pre_acts(dictionary.scale_input(x.to(dictionary.W_dec.dtype)))
            total = total + pre[target.latent]
        total.backward()
    return [_row(leaves, names, index, n, row) for row in range(len(targets))]


def _bias(lens: Lens, leaves, names: list[str], keep: Tensor) -> float:
    """``sum over transcoders of decode(0) . d metric / d output`` at the edited tokens: the
    gradient at a write site is the codes' upstream gradient through the decoder, so it is
    recovered from the code gradients by least squares when there is no error leaf."""
    total = 0.0
    for name in names:
        att = lens.attached[name]
        with torch.no_grad():
            bias = att.decode(torch.zeros(1, att.n_latents, dtype=att.dtype))[0]
        if name in leaves.errors:
            grad = leaves.errors[name].grad[0]  # every position: special ones too
        else:  # codes.grad = grad_out @ W_dec.T for a linear decoder
            w = att.dictionary.W_dec.detach()
            grad = torch.linalg.lstsq(w, leaves.codes[name].grad[0][keep].T).solution.T
        total += float((grad.double() @ bias.double()).sum())
    return total
