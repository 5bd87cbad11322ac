"""Feature flow on real dictionaries: data-free matches checked against activations.

Harvests the residual stream after blocks 5 and 6 of the embedded model, trains a TopK SAE on
each (the library's CLI), matches the layer-6 latents to the layer-5 ones by decoder cosine
and by encoder-to-decoder cosine (`sparselens.circuits.flow`), then encodes held-out text with
both SAEs attached to the model (one pass) and compares the activation correlation of matched
pairs with random pairs, at several cosine thresholds. Prints a table and writes
``benchmarks/results/flow.json``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import torch

from sparselens.circuits.flow import activation_agreement, flow
from sparselens.data.cache import ActivationCache
from sparselens.data.factory import heldout_sequences
from sparselens.io.detect import load_any
from sparselens.lens import Lens
from sparselens.models.source import load_model

RESULTS = Path(__file__).parent / "results" / "flow.json"
CLI = [sys.executable, "-m", "sparselens.cli.main"]


def sh(*args: str) -> None:
    print("$ sparselens", " ".join(args), flush=True)
    subprocess.run([*CLI, *args], check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--work", type=Path, default=Path("runs/bench-flow"))
    parser.add_argument("--harvest-tokens", type=int, default=300_000)
    parser.add_argument("--train-tokens", type=int, default=900_000)
    parser.add_argument("--latents", type=int, default=4096)
    parser.add_argument("--sequences", type=int, default=64, help="held-out sequences encoded")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    cache_dir = args.work / "cache"
    sh("harvest", "--hookpoints", "resid.5", "resid.6", "--n-tokens",
       str(args.harvest_tokens), "--out", str(cache_dir))  # a finished cache is reused
    folders = {}
    for site in ("resid.5", "resid.6"):
        folders[site] = args.work / site
        if (folders[site] / "config.json").exists():
            continue  # trained by an earlier run of this script
        sh("train", str(cache_dir), "--hookpoint", site, "--architecture", "topk",
           "--n-latents", str(args.latents), "--dictionary", "k=32",
           "--n-tokens", str(args.train_tokens), "--out", str(folders[site]))

    earlier, later = (load_any(folders[s]) for s in ("resid.5", "resid.6"))
    rows = []
    lens = Lens(load_model("gemma-3-270m"), {"resid.5": earlier, "resid.6": later})
    ids = heldout_sequences(ActivationCache.open(cache_dir), args.sequences)
    codes = {name: [] for name in lens.names}
    for start in range(0, len(ids), 8):
        enc = lens.encode(ids[start:start + 8])
        keep = ~enc.tokens.special
        for name in lens.names:
            codes[name].append(enc.codes[name].select(keep).dense())
    dense = {name: torch.cat(parts) for name, parts in codes.items()}
    for by in ("decoder", "encoder"):
        with torch.no_grad():
            (step,) = flow([earlier, later], by=by)  # type: ignore[arg-type]
        for threshold in (0.5, 0.7, 0.9):
            try:
                agree = activation_agreement(dense["resid.5"], dense["resid.6"], step,
                                             threshold=threshold)
            except ValueError:
                agree = {"matched": float("nan"), "random": float("nan"), "n_matched": 0}
            rows.append({"by": by, "threshold": threshold,
                         "matched_fraction": float((step.cosine >= threshold).float().mean()),
                         "mean_best_cosine": float(step.cosine.mean()),
                         "corr_matched": agree["matched"], "corr_random": agree["random"],
                         "n_matched": agree["n_matched"]})
    print(f"\n{'by':8} {'cos>=':>5} {'matched':>8} {'corr matched':>13} {'corr random':>12}")
    for r in rows:
        print(f"{r['by']:8} {r['threshold']:5.1f} {r['matched_fraction']:8.1%} "
              f"{r['corr_matched']:13.3f} {r['corr_random']:12.3f}")
    result = {"tokens_encoded": int(dense["resid.5"].shape[0]), "latents": args.latents,
              "train_tokens": args.train_tokens, "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
