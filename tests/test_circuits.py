"""Circuits: attribution to a metric, attribution graphs through transcoders (linearity of the
replacement model, a circuit planted by construction), pruning and export."""

from __future__ import annotations

import json

import pytest
import torch

from conftest import make_tiny_llama
from sparselens.circuits.attribution import attribute
from sparselens.circuits.flow import activation_agreement, flow, trace
from sparselens.circuits.graph import attribution_graph
from sparselens.circuits.metrics import logit, logit_diff, loss
from sparselens.circuits.prune import prune
from sparselens.circuits.validate import validate
from sparselens.dictionaries import Dictionary, DictionaryConfig, build
from sparselens.io.native import save_dictionary
from sparselens.lens import Lens

pytestmark = pytest.mark.usefixtures("one_thread")
LAYERS = 4


def random_transcoders(seed: int = 0) -> dict[str, Dictionary]:
    torch.manual_seed(seed)
    out = {}
    for layer in range(LAYERS):
        tc = build("topk", d_in=32, n_latents=64, k=4, pre_encoder_bias=False,
                   hookpoint=f"mlp_in.{layer}", target_hookpoint=f"mlp_out.{layer}")
        with torch.no_grad():  # outputs on the scale of the tiny model's residual stream
            tc.W_dec.mul_(0.05)
            tc.b_dec.normal_(std=0.02)
        out[f"tc{layer}"] = tc
    return out


@pytest.fixture(scope="module")
def lens() -> Lens:
    return Lens(make_tiny_llama(seed=5), random_transcoders())


def test_the_replacement_model_is_the_model_and_is_linear_in_its_leaves(lens) -> None:
    tokens = lens.tokenize("hello world")
    clean = lens.forward(tokens).logits
    with lens.frozen(), lens.attribution(embeddings=True) as leaves:
        logits = lens.forward(tokens).logits
        logits[0, -1, 100].backward()
    assert torch.allclose(logits.detach(), clean, atol=1e-5)
    total = (leaves.embeddings * leaves.embeddings.grad).sum()
    for name, tc in lens.dictionaries.items():
        total = total + (leaves.codes[name] * leaves.codes[name].grad).sum()
        total = total + (leaves.errors[name] * leaves.errors[name].grad).sum()
        total = total + (tc.b_dec * leaves.errors[name].grad).sum()
    assert float(total.detach()) == pytest.approx(float(clean[0, -1, 100]), abs=1e-4)


def test_graph_edges_into_the_metric_plus_biases_sum_to_the_metric(lens) -> None:
    metric = logit(lens.tokenizer, "d")
    graph = attribution_graph(lens, "hello world", metric, max_latents=12, progress=False)
    assert int(graph.computed.sum()) == 13
    incoming = float(graph.adjacency[graph.metric_index].sum())
    assert incoming + graph.bias == pytest.approx(graph.value, abs=1e-4)
    kinds = {n.kind for n in graph.nodes}
    assert kinds == {"embedding", "latent", "error", "metric"}


def test_edges_into_a_latent_sum_to_its_pre_activation(lens) -> None:
    """The same linearity for a latent target: edges + upstream biases + its encoder bias."""
    graph = attribution_graph(lens, "hello world", logit(lens.tokenizer, "d"), max_latents=6,
                              progress=False)
    rows = [i for i, n in enumerate(graph.nodes) if n.kind == "latent" and graph.computed[i]
            and n.layer == 0]
    for i in rows:  # layer-0 latents: only embeddings feed them
        node = graph.nodes[i]
        tc = lens.dictionaries[node.dictionary]
        assert float(graph.adjacency[i].sum() + tc.b_enc[node.latent]) == pytest.approx(
            node.activation, abs=1e-4)  # TopK codes are the pre-activations that won


def chain_lens() -> tuple[Lens, int]:
    """A model whose circuit is known: attention writes nothing, token 'a' fires latent A of
    the layer-0 transcoder, A's output fires latent B at layer 1, B writes the unembedding of
    'z'. Every other latent is silent. Returns the lens (spliced: no error nodes) and 'z'."""
    loaded = make_tiny_llama(seed=7)
    model, tok = loaded.model, loaded.tokenizer
    a, x, y, z = (tok(c)["input_ids"][0] for c in "axyz")
    d = 32
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
        emb = model.model.embed_tokens.weight
        basis = torch.linalg.qr(torch.randn(d, d))[0].T  # orthonormal rows
        for i, token in enumerate((a, x, y)):
            emb[token] = basis[i] * 0.1
        u = basis[3]
        w_z = model.lm_head.weight[z]
        w_z -= (w_z @ u) * u  # A's direction does not reach the logit directly
    transcoders = {}
    for layer in range(LAYERS):
        tc = Dictionary(DictionaryConfig(d_in=d, n_latents=8, pre_encoder_bias=False,
                                         hookpoint=f"mlp_in.{layer}",
                                         target_hookpoint=f"mlp_out.{layer}"))
        with torch.no_grad():
            tc.W_enc.zero_()
            tc.b_enc.fill_(-1.0)
            tc.b_dec.zero_()
            if layer == 0:
                tc.W_enc[:, 2] = basis[0] / d**0.5
                tc.b_enc[2] = -0.5
                tc.W_dec[2] = 10 * u
            if layer == 1:
                tc.W_enc[:, 5] = u
                tc.b_enc[5] = -1.0
                tc.W_dec[5] = 10 * w_z / w_z.norm()
        transcoders[f"tc{layer}"] = tc
    return Lens(loaded, transcoders), z


def test_the_graph_recovers_a_circuit_planted_by_construction() -> None:
    lens, _ = chain_lens()
    metric = logit(lens.tokenizer, "z")
    graph = attribution_graph(lens, "xya", metric, keep_error=False, progress=False)
    latents = {n.id for n in graph.nodes if n.kind == "latent"}
    assert latents == {"L0/P2/F2", "L1/P2/F5"}
    ids = [n.id for n in graph.nodes]
    a, b, m = ids.index("L0/P2/F2"), ids.index("L1/P2/F5"), graph.metric_index
    assert graph.adjacency[b, a] > 0 and graph.adjacency[a, ids.index("T/P2")] > 0
    assert graph.adjacency[m, b] > 0
    assert abs(float(graph.adjacency[m, a])) < 1e-6 * float(graph.adjacency[m, b])
    assert float(graph.adjacency[m].sum()) + graph.bias == pytest.approx(graph.value, rel=1e-4)
    pruned = prune(graph, node_threshold=0.8)
    assert {"L0/P2/F2", "L1/P2/F5", "T/P2", "metric"} <= {n.id for n in pruned.nodes}
    exported = json.loads(json.dumps(pruned.to_json()))
    assert exported["format"] == "sparselens.attribution-graph/1"
    edges = {(e["source"], e["target"]) for e in exported["edges"]}
    assert {("T/P2", "L0/P2/F2"), ("L0/P2/F2", "L1/P2/F5"), ("L1/P2/F5", "metric")} <= edges


def test_latent_attribution_grad_and_integrated_gradients(lens) -> None:
    metric = logit_diff(lens.tokenizer, "d", "e")
    grad = attribute(lens, "hello world", metric, method="grad")
    ig = attribute(lens, "hello world", metric, method="ig", steps=32)
    assert grad.value == pytest.approx(ig.value)
    top = grad.top(5, lens.tokenizer)
    assert len(top) == 5 and abs(top[0]["attribution"]) >= abs(top[-1]["attribution"])
    # completeness of IG: attributions sum to metric(codes) - metric(codes = 0), errors fixed
    tokens = lens.tokenize("hello world")
    with lens.attribution() as clean:
        lens.forward(tokens)
    with torch.no_grad(), lens.attribution(scale=0.0, reference=clean):
        zero = float(metric(lens.forward(tokens).logits, tokens.ids))
    ig_sum = sum(float(s.sum()) for s in ig.scores.values())
    assert ig_sum == pytest.approx(ig.value - zero, rel=0.02, abs=1e-3)
    assert float(loss()(lens.forward(tokens).logits, tokens.ids)) > 0


def test_bad_input_is_named(lens) -> None:
    with pytest.raises(ValueError, match="is 2 tokens"):
        logit(lens.tokenizer, "ab")
    partial = Lens(make_tiny_llama(seed=5), dict(list(random_transcoders().items())[:2]))
    with pytest.raises(ValueError, match=r"none writes mlp_out of layer\(s\) \[2, 3\]"):
        attribution_graph(partial, "hi", logit(lens.tokenizer, "d"), progress=False)
    sae = build("topk", d_in=32, n_latents=16, k=2, hookpoint="resid.1")
    with pytest.raises(ValueError, match="not a transcoder of one block's MLP"):
        attribution_graph(Lens(make_tiny_llama(seed=5), {**random_transcoders(), "sae": sae}),
                          "hi", logit(lens.tokenizer, "d"), progress=False)
    twice = {**random_transcoders(), "again": random_transcoders(seed=1)["tc2"]}
    with pytest.raises(ValueError, match="more than one transcoder per layer"):
        attribution_graph(Lens(make_tiny_llama(seed=5), twice), "hi", logit(lens.tokenizer, "d"),
                          progress=False)
    with pytest.raises(ValueError, match="model context"):
        attribution_graph(lens, "q" * 100, logit(lens.tokenizer, "d"), progress=False)


def test_ablating_last_layer_latents_moves_the_metric_as_predicted(lens) -> None:
    """Downstream of the last transcoder only the final norm is nonlinear, so the graph's
    first-order prediction must match the real ablation closely there."""
    metric = logit(lens.tokenizer, "d")
    graph = attribution_graph(lens, "hello world", metric, max_latents=40, progress=False)
    checks = validate(lens, "hello world", metric, graph, top=40).checks
    last = [c for c in checks if c.node.startswith("L3/")]
    assert last, "no last-layer latent among the top nodes"
    for check in last:
        assert check.measured == pytest.approx(check.predicted, rel=0.1, abs=1e-4), check


def test_feature_flow_finds_a_permutation_and_traces_through_it() -> None:
    torch.manual_seed(0)
    first = build("topk", d_in=16, n_latents=32, k=4)
    second = build("topk", d_in=16, n_latents=32, k=4)
    third = build("topk", d_in=16, n_latents=32, k=4)
    perm, perm2 = torch.randperm(32), torch.randperm(32)
    with torch.no_grad():
        second.W_dec.copy_(first.W_dec[perm] + 0.05 * torch.randn(32, 16))
        third.W_dec.copy_(second.W_dec[perm2])
        third.W_dec[0] = torch.randn(16)  # a latent born at the third layer
    steps = flow([first, second, third])
    assert torch.equal(steps[0].predecessor, perm)
    assert steps[0].cosine.min() > 0.9
    path = trace(steps, 1, 3, threshold=0.9)
    assert [(i, j) for i, j, _ in path[:2]] == [(0, int(perm[3])), (1, 3)]
    assert trace(steps, 2, 0, threshold=0.9)[0][:2] == (2, 0)
    codes = torch.relu(torch.randn(500, 32))
    later = codes[:, perm] + 0.1 * torch.rand(500, 32)
    agreement = activation_agreement(codes, later, steps[0], threshold=0.9)
    assert agreement["matched"] > 0.9 > agreement["random"] + 0.5
    with pytest.raises(ValueError, match="same residual width"):
        flow([first, build("topk", d_in=8, n_latents=32, k=4)])


def test_circuit_and_flow_commands_write_json(tmp_path) -> None:
    from sparselens.cli.main import main

    loaded = make_tiny_llama(seed=5)
    model_dir = tmp_path / "model"
    loaded.model.save_pretrained(model_dir)
    loaded.tokenizer.save_pretrained(model_dir)
    folders = []
    for name, tc in random_transcoders().items():
        save_dictionary(tc, tmp_path / name)
        folders.append(str(tmp_path / name))
    out = tmp_path / "graph.json"
    assert main(["circuit", "--model", str(model_dir), "--transcoders", *folders,
                 "--prompt", "hello world", "--target", "d", "--max-latents", "8",
                 "--validate", "3", "--out", str(out)]) == 0
    graph = json.loads(out.read_text())
    assert graph["format"] == "sparselens.attribution-graph/1"
    assert len(graph["validation"]["checks"]) == 3 and graph["nodes"][-1]["id"] == "metric"
    flow_out = tmp_path / "flow.json"
    assert main(["flow", *folders, "--follow", "1", "2", "--out", str(flow_out)]) == 0
    payload = json.loads(flow_out.read_text())
    assert len(payload["steps"]) == LAYERS - 1 and len(payload["traces"]) == 2
