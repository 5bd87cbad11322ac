"""Datadiff on the real model: does it find a topic planted into one corpus?

    python benchmarks/datadiff_planted.py runs/default/sae [--docs 100] [--max-tokens 96]

Both corpora are documents of the built-in corpus (installed packages' descriptions and the
language reference), disjoint, shuffled with a seed; into every document of B one sentence about
cooking is inserted at a random word boundary within its first `--max-tokens` tokens. The
dictionary (any checkpoint `load_any` reads, on the model it names) embeds both with
`sparselens.comparison` exactly as `sparselens datadiff` does; then, for each of the top latents
significantly more frequent in B, the share of its activation mass in B that lies on the planted
sentence's tokens (1.0: it fires only there). As a calibration, A is also tested against B's
documents without the sentence (the same distribution: few latents should pass). Writes
``benchmarks/results/datadiff_planted.json``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import random
import time
from pathlib import Path

import torch

RESULTS = Path(__file__).resolve().parent / "results"
SENTENCES = ["Simmer the tomatoes with garlic, basil and olive oil for twenty minutes.",
             "Knead the dough, let it rise overnight, then bake the bread until golden.",
             "Whisk the eggs with sugar and butter before folding in the flour.",
             "Season the soup with pepper and fresh thyme and serve it warm."]


def corpora(n: int, max_tokens: int, seed: int) -> tuple[list[str], list[str], list[str]]:
    from sparselens.data.corpus import CorpusConfig, iter_texts

    texts = [t for t in itertools.islice(iter_texts(CorpusConfig(
        builtin_parts=("packages", "reference"), seed=seed)), 4 * n) if len(t.split()) > 40]
    rng = random.Random(seed)
    a, plain = texts[:n], texts[n:2 * n]
    b = []
    for text in plain:
        words = text.split()
        cut = rng.randrange(5, min(len(words), max_tokens // 3))
        b.append(" ".join(words[:cut]) + " " + rng.choice(SENTENCES) + " " +
                 " ".join(words[cut:]))
    return a, b, plain


def planted_share(lens, latents: list[int], texts: list[str], max_tokens: int) -> list[float]:
    """Per latent: share of its summed activation over B's tokens that is on planted tokens."""
    tok = lens.tokenizer
    inside = torch.zeros(len(latents))
    total = torch.zeros(len(latents))
    for text in texts:
        enc = tok(text, return_offsets_mapping=True)
        ids, offsets = enc["input_ids"][:max_tokens], enc["offset_mapping"][:max_tokens]
        span = next((text.index(s), text.index(s) + len(s)) for s in SENTENCES if s in text)
        planted = torch.tensor([span[0] <= lo < span[1] for lo, _ in offsets])
        codes = lens.encode(torch.tensor([ids]), names="sae").codes["sae"].dense()[0]
        acts = codes[:, latents]
        inside += acts[planted].sum(0)
        total += acts.sum(0)
    return (inside / total.clamp_min(1e-12)).tolist()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sae")
    parser.add_argument("--docs", type=int, default=100)
    parser.add_argument("--max-tokens", type=int, default=96)
    parser.add_argument("--top", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    from sparselens.comparison.datadiff_run import DatadiffOptions, run_datadiff
    from sparselens.io.detect import load_any
    from sparselens.lens import Lens
    from sparselens.models.source import load_model

    torch.set_num_threads(2)
    sae = load_any(args.sae)
    lens = Lens(load_model(sae.cfg.model or "gemma-3-270m"), {"sae": sae})
    a, b, plain = corpora(args.docs, args.max_tokens, args.seed)
    start = time.perf_counter()
    result = run_datadiff(lens, "sae", a, b, DatadiffOptions(max_tokens=args.max_tokens,
                                                             n_clusters=2))
    seconds = time.perf_counter() - start
    top_b = result.diff.significant("b")[:args.top]
    # Calibration: B's documents without the planted sentence against A (same distribution).
    null = run_datadiff(lens, "sae", a, plain, DatadiffOptions(max_tokens=args.max_tokens,
                                                               n_clusters=0))
    shares = planted_share(lens, [d.latent for d in top_b], b, args.max_tokens)
    rows = [{**d.to_dict(), "planted_share": s} for d, s in zip(top_b, shares)]
    n_tokens = int(result.embeddings[0].n_tokens.sum() + result.embeddings[1].n_tokens.sum())
    record = {"sae": args.sae, "docs_per_corpus": args.docs, "max_tokens": args.max_tokens,
              "tokens_encoded": n_tokens, "seconds": seconds,
              "n_significant_b": len(result.diff.significant("b")),
              "n_significant_a": len(result.diff.significant("a")), "top_b": rows,
              "null_n_significant": len(null.diff.significant("a")) +
              len(null.diff.significant("b")), "null_n_tested": len(null.diff.tested),
              "machine": "2 cores, shared with other jobs"}
    print(f"{n_tokens} tokens in {seconds:.0f} s; {record['n_significant_b']} latents more "
          f"frequent in B, {record['n_significant_a']} in A; without the planted sentence "
          f"{record['null_n_significant']} of {record['null_n_tested']} latents significant")
    print("rank latent  docs_A docs_B      q  share on planted sentence")
    for rank, r in enumerate(rows, 1):
        print(f"{rank:4d} {r['latent']:6d} {r['docs_a']:7d} {r['docs_b']:6d} {r['q_value']:7.1e}"
              f"  {r['planted_share']:.2f}")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "datadiff_planted.json").write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
