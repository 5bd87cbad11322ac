"""ITDA across two models with different tokenizers, and ITDA's time against training an SAE.

    python benchmarks/itda_models.py                       # gemma-3-270m vs Qwen2.5-Coder-0.5B
    python benchmarks/itda_models.py --positions 2048      # quicker

Both models read the same documents of the built-in corpus (first `--max-tokens` tokens of
each, per model); their tokens are paired at shared character boundaries
(`comparison.alignment`, the activation of the token ending at each boundary), so every ITDA
atom is labelled (document, character offset) in both models. One ITDA dictionary is built per
(model, hookpoint) from the same `--positions` positions, and the Jaccard similarity of every
pair of label sets is reported beside its chance level (random label subsets of the same sizes,
`itda_run.random_jaccard`). Gemma has 18 blocks, Qwen2.5-0.5B 24, so the layer pairs are at
equal relative depth.

Timing: at gemma `resid.6`, ITDA built from all but the last 1,024 positions, and a TopK SAE
with as many latents as ITDA kept atoms (k as ITDA's pursuit steps) trained one epoch on the
same rows; both reconstruct the last 1,024 positions (FVU). Writes
``benchmarks/results/itda_models.json`` with the load average.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from compare import heldout_fvu, timed_itda, timed_topk  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
QWEN = "qwen2.5-coder-0.5b-instruct"


def sae_against_itda(x: torch.Tensor, doc: torch.Tensor, offset: torch.Tensor, k: int,
                     threshold: float, hookpoint: str) -> dict:
    train, held = x[:-1024], x[-1024:]
    itda, itda_s = timed_itda(train, doc, offset, k, threshold, 256)
    n_latents = itda.n_atoms
    sae, sae_s = timed_topk(train, doc, offset, hookpoint, n_latents, min(k, n_latents), 256)
    with torch.no_grad():
        sae_fvu = heldout_fvu(held, sae(held))
    return {"hookpoint": hookpoint, "train_positions": int(train.shape[0]),
            "heldout_positions": 1024, "k": k, "threshold": threshold,
            "itda_s": itda_s, "itda_atoms": n_latents,
            "itda_fvu": heldout_fvu(held, itda.encode(held) @ itda.atoms),
            "sae_s": sae_s, "sae_latents": n_latents, "sae_fvu": sae_fvu}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--positions", type=int, default=8192)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--documents", type=int, default=400)
    parser.add_argument("--k", type=int, default=32)
    parser.add_argument("--threshold", type=float, default=0.1)
    parser.add_argument("--gemma", nargs="+", default=["resid.3", "resid.6", "resid.9",
                                                       "resid.12"])
    parser.add_argument("--qwen", nargs="+", default=["resid.4", "resid.8", "resid.12",
                                                      "resid.16"])
    args = parser.parse_args()
    torch.set_num_threads(2)

    from sparselens.comparison.alignment import aligned_activations
    from sparselens.comparison.datadiff_run import read_corpus
    from sparselens.comparison.itda_run import ITDAOptions, compare_itda
    from sparselens.interpretation.llm.models import explainer_gguf
    from sparselens.lens import Lens
    from sparselens.models.source import load_model

    texts = read_corpus("builtin", max_documents=args.documents)
    start = time.perf_counter()
    gemma = Lens(load_model("gemma-3-270m"))
    qwen = Lens(load_model(str(explainer_gguf(QWEN))))
    load_s = time.perf_counter() - start
    start = time.perf_counter()
    aligned = aligned_activations(gemma, args.gemma, qwen, args.qwen, texts,
                                  max_tokens=args.max_tokens, max_positions=args.positions)
    align_s = time.perf_counter() - start
    print(f"{aligned.n} aligned positions from {int(aligned.doc.max()) + 1} documents in "
          f"{align_s:.0f} s; coverage gemma {aligned.coverage()[0]:.1%}, qwen "
          f"{aligned.coverage()[1]:.1%}", flush=True)
    options = ITDAOptions(k=args.k, threshold=args.threshold)
    result = compare_itda(aligned, options)
    record = result.record()
    names = result.names
    print(f"{'site':<14}" + "".join(f"{n:>14}" for n in names))
    for i, a in enumerate(names):
        print(f"{a:<14}" + "".join(f"{result.jaccard[i, j]:14.4f}" for j in range(len(names))))
    print("atoms: " + ", ".join(f"{n} {record['atoms'][n]} ({result.seconds[n]:.1f} s)"
                                for n in names))
    print(f"{'pair':<30} {'Jaccard':>8} {'random':>16} {'ratio':>6}")
    for p in record["pairs"]:
        print(f"{p['a'] + ' / ' + p['b']:<30} {p['jaccard']:8.4f} {p['random_mean']:9.4f} ± "
              f"{p['random_std']:.4f} {p['ratio_to_random']:6.2f}")
    site = "resid.6" if "resid.6" in aligned.acts_a else args.gemma[0]
    timing = sae_against_itda(aligned.acts_a[site], aligned.doc, aligned.offset, args.k,
                              args.threshold, site)
    print(json.dumps(timing, indent=1))
    record.update({"models": {"A": "gemma-3-270m", "B": QWEN + " (Q4_K_M, dequantised)"},
                   "coverage": list(aligned.coverage()), "documents": int(aligned.doc.max()) + 1,
                   "max_tokens": args.max_tokens, "k": args.k, "threshold": args.threshold,
                   "load_s": load_s, "align_s": align_s, "itda_vs_sae": timing,
                   "loadavg": os.getloadavg(), "threads": 2,
                   "args": vars(args)})
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "itda_models.json").write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
