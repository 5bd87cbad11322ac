"""Edge weights of sparselens's attribution graph against circuit-tracer's, same transcoders.

circuit-tracer (PyPI `circuit-tracer` 0.5.0, nnsight backend) runs offline on the embedded
gemma-3-270m. It must live in its own environment (it pins transformers <= 4.57.3 and nnsight
0.7.0); pass its interpreter with ``--peer-python`` (default ``/work/venvs/ctracer/bin/python``;
create it with ``python -m venv DIR && DIR/bin/pip install torch==2.13.0 circuit-tracer==0.5.0
nnsight==0.7.0 'transformers<=4.57.3'``).

Both tools get the same 18 random TopK transcoders, written where circuit-tracer's Gemma 3
mapping puts them: reading the output of ``pre_feedforward_layernorm`` (sparselens ``mlp_in.L``)
and writing the output of ``post_feedforward_layernorm``. Every active latent is expanded by both
(no greedy selection), so the graphs hold the same rows. Compared: every edge into a latent
from a latent, an error node or a token embedding (circuit-tracer's logit nodes use de-meaned
logits, a different metric, so the metric row is left out). Prints the agreement and writes
``benchmarks/results/circuits_vs_circuit_tracer.json``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
import textwrap
import time
from pathlib import Path

import torch
from safetensors.torch import save_file

from circuits import random_transcoders  # benchmarks/circuits.py, beside this script
from sparselens.circuits.graph import attribution_graph
from sparselens.circuits.metrics import logit
from sparselens.lens import Lens
from sparselens.models.source import load_model, resolve_model_dir

RESULTS = Path(__file__).parent / "results" / "circuits_vs_circuit_tracer.json"
PROMPT = "The Eiffel Tower is in the city of"

PEER_SCRIPT = textwrap.dedent('''
    import json, sys, time, torch
    from circuit_tracer import ReplacementModel, attribute
    from circuit_tracer.transcoder.single_layer_transcoder import (SingleLayerTranscoder,
                                                                   TranscoderSet)
    from safetensors.torch import load_file
    model_dir, folder, k, n_layers, target = sys.argv[1:6]
    k, n_layers, target = int(k), int(n_layers), int(target)

    def topk_relu(pre):
        values, index = pre.topk(k, dim=-1)
        return torch.zeros_like(pre).scatter(-1, index, torch.relu(values))

    layers = {}
    for layer in range(n_layers):
        w = load_file(f"{folder}/layer{layer}.safetensors")
        tc = SingleLayerTranscoder(w["W_enc"].shape[1], w["W_enc"].shape[0], topk_relu, layer,
                                   device=torch.device("cpu"), dtype=torch.float32)
        tc.load_state_dict(w, strict=False)
        layers[layer] = tc
    transcoders = TranscoderSet(layers, feature_input_hook="mlp.hook_in",
                                feature_output_hook="hook_mlp_out")
    model = ReplacementModel.from_pretrained_and_transcoders(
        model_dir, transcoders, backend="nnsight", dtype=torch.float32)
    ids = torch.load(f"{folder}/ids.pt")
    start = time.perf_counter()
    graph = attribute(ids, model, attribution_targets=torch.tensor([target]),
                      batch_size=64, max_feature_nodes=None)
    seconds = time.perf_counter() - start
    torch.save({"adjacency": graph.adjacency_matrix, "active": graph.active_features,
                "selected": graph.selected_features, "seconds": seconds},
               f"{folder}/peer.pt")
''')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--peer-python", default="/work/venvs/ctracer/bin/python")
    parser.add_argument("--latents", type=int, default=2048)
    parser.add_argument("--k", type=int, default=4)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    loaded = load_model("gemma-3-270m")
    n_layers = len(loaded.model.model.layers)
    folder = Path(tempfile.mkdtemp(prefix="ct-compare-"))
    transcoders = random_transcoders(n_layers, args.latents, args.k,
                                     "model.layers.{}.post_feedforward_layernorm",
                                     unit_norm_decoder=False)
    for layer, tc in enumerate(transcoders.values()):
        with torch.no_grad():
            tc.W_dec.mul_(0.5)
            tc.b_enc.normal_(std=0.1)
            tc.b_dec.normal_(std=0.1)
        save_file({"W_enc": tc.W_enc.detach().T.contiguous(), "W_dec": tc.W_dec.detach().clone(),
                   "b_enc": tc.b_enc.detach().clone(), "b_dec": tc.b_dec.detach().clone()},
                  str(folder / f"layer{layer}.safetensors"))
    lens = Lens(loaded, transcoders)
    tokens = lens.tokenize(PROMPT)
    torch.save(tokens.ids[0].clone(), folder / "ids.pt")
    metric = logit(loaded.tokenizer, " Paris")
    n_active = sum(int(c.l0().sum()) for c in lens.encode(tokens).codes.values())
    start = time.perf_counter()
    graph = attribution_graph(lens, tokens, metric, max_latents=n_active, batch_size=16)
    ours_seconds = time.perf_counter() - start

    subprocess.run([args.peer_python, "-c", PEER_SCRIPT, str(resolve_model_dir("gemma-3-270m")),
                    str(folder), str(args.k), str(n_layers), str(metric.token_ids[0])],
                   check=True)
    peer = torch.load(folder / "peer.pt")
    row = compare(graph, peer, n_layers, int(tokens.ids.shape[1]))
    row |= {"prompt_tokens": int(tokens.ids.shape[1]), "active_latents": n_active,
            "sparselens_seconds": round(ours_seconds, 1),
            "circuit_tracer_seconds": round(float(peer["seconds"]), 1)}
    for key, value in row.items():
        print(f"{key:<34} {value}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(row, indent=2) + "\n")
    print(f"-> {args.out}")


def compare(graph, peer: dict, n_layers: int, n_pos: int) -> dict:
    """Edges into latents, matched node by node between the two graphs, by kind of source.

    Two conventions differ and are reported apart: circuit-tracer's token nodes are the
    embedding rows before Gemma's sqrt(d_model) scaling (sparselens uses the embedding
    module's output, which is what enters the residual stream, so its edges satisfy
    completeness), and it gives the BOS position no error node edges (sparselens makes BOS's
    whole MLP output an error leaf, a constant of the prompt)."""
    active = peer["active"].tolist()  # (layer, position, feature)
    n_feat = len(active)
    peer_index = {f"L{a}/P{b}/F{c}": i for i, (a, b, c) in enumerate(active)}
    for layer in range(n_layers):
        for pos in range(n_pos):
            peer_index[f"E{layer}/P{pos}"] = n_feat + layer * n_pos + pos
    for pos in range(n_pos):
        peer_index[f"T/P{pos}"] = n_feat + n_layers * n_pos + pos
    ours_ids = [n.id for n in graph.nodes]
    ours_latents = {i for i in ours_ids if i.startswith("L")}
    peer_latents = {f"L{a}/P{b}/F{c}" for a, b, c in active}
    adjacency = peer["adjacency"].double()
    pairs: dict[str, tuple[list[float], list[float]]] = {}
    for row, target in zip(graph.rows[1:], graph.targets[1:].tolist()):
        peer_row = adjacency[peer_index[ours_ids[target]]]
        for s in row.nonzero().flatten().tolist():
            source = ours_ids[s]
            kind = ("latent" if source.startswith("L") else "token" if source.startswith("T")
                    else "error_bos" if source.endswith("/P0") else "error")
            ours, theirs = pairs.setdefault(kind, ([], []))
            ours.append(float(row[s]))
            theirs.append(float(peer_row[peer_index[source]]))
    out: dict = {"same_active_latents": ours_latents == peer_latents,
                 "active_only_sparselens": len(ours_latents - peer_latents),
                 "active_only_circuit_tracer": len(peer_latents - ours_latents)}
    for kind, (ours, theirs) in sorted(pairs.items()):
        a, b = torch.tensor(ours), torch.tensor(theirs)
        out[f"{kind}_edges"] = len(a)
        if kind == "token":
            ratio = float((a / b).median())
            out["token_ratio_sparselens_over_circuit_tracer"] = ratio
            b = b * ratio
        if kind == "error_bos":
            out["error_bos_max_abs_circuit_tracer"] = float(b.abs().max())
            continue
        out[f"{kind}_max_abs_diff"] = float((a - b).abs().max())
        out[f"{kind}_max_abs_weight"] = float(a.abs().max())
        out[f"{kind}_relative_l2_diff"] = float((a - b).norm() / a.norm())
    return out


if __name__ == "__main__":
    main()
