"""Attribution graphs on the embedded model with a transcoder at every layer (18).

Measures, for a 32-token prompt: the time to build the graph (greedy, `--max-latents` latents
get their incoming edges), the peak resident memory, and two exactness checks of the
linearised replacement model: its logits against the clean model's, and the edges into the
metric plus the transcoders' biases against the metric's value.

The transcoders are random TopK transcoders (no trained set of 18 exists offline): timing and
memory depend only on their sizes and the number of active latents, not on what they learned.
Prints a table and writes ``benchmarks/results/circuits.json``.
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from pathlib import Path

import torch

from sparselens.circuits.graph import attribution_graph
from sparselens.circuits.metrics import logit
from sparselens.dictionaries import Dictionary, build
from sparselens.lens import Lens
from sparselens.models.source import load_model

RESULTS = Path(__file__).parent / "results" / "circuits.json"
PROMPT = ("The Eiffel Tower is a wrought-iron lattice tower on the Champ de Mars in Paris, "
          "France. It is named after the engineer Gustave Eiffel, whose company designed")


def random_transcoders(n_layers: int, latents: int, k: int, target: str = "mlp_out.{}",
                       **config: object) -> dict[str, Dictionary]:
    """One random TopK transcoder per layer (seed 0), reading mlp_in.L and writing `target`."""
    torch.manual_seed(0)
    return {f"tc{layer:02d}": build("topk", d_in=640, n_latents=latents, k=k,
                                    pre_encoder_bias=False, hookpoint=f"mlp_in.{layer}",
                                    target_hookpoint=target.format(layer), **config)
            for layer in range(n_layers)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--latents", type=int, default=8192, help="latents per transcoder")
    parser.add_argument("--k", type=int, default=16, help="active latents per token")
    parser.add_argument("--max-latents", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    loaded = load_model("gemma-3-270m")
    n_layers = len(loaded.model.model.layers)
    lens = Lens(loaded, random_transcoders(n_layers, args.latents, args.k))
    ids = lens.tokenize(PROMPT).ids[:, :args.tokens]
    tokens = lens.tokenize(ids)
    metric = logit(loaded.tokenizer, " the")

    clean = lens.forward(tokens).logits
    with lens.frozen(), lens.attribution(embeddings=True):
        replaced = lens.forward(tokens).logits
    logits_error = float((replaced.detach() - clean).abs().max())

    start = time.perf_counter()
    graph = attribution_graph(lens, tokens, metric, max_latents=args.max_latents,
                              batch_size=args.batch_size)
    seconds = time.perf_counter() - start
    completeness = abs(float(graph.rows[0].sum()) + graph.bias  # row 0: into the metric
                       - graph.value)
    row = {"tokens": int(tokens.ids.shape[1]), "layers": n_layers,
           "latents_per_transcoder": args.latents, "k": args.k,
           "nodes": len(graph.nodes),
           "active_latents": sum(n.kind == "latent" for n in graph.nodes),
           "latents_with_edges": int(graph.computed.sum()) - 1,
           "batch_size": args.batch_size, "seconds": round(seconds, 1),
           "seconds_per_latent_row": round(seconds / max(1, int(graph.computed.sum()) - 1), 3),
           "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
           "replacement_logits_max_abs_error": logits_error,
           "metric_value": graph.value, "completeness_abs_error": completeness,
           "threads": torch.get_num_threads()}
    width = max(map(len, row))
    for key, value in row.items():
        print(f"{key:<{width}}  {value}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(row, indent=2) + "\n")
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
