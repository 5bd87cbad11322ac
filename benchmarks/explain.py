"""Explaining and scoring latents: throughput, margins over baselines, known-meaning latents.

On a trained dictionary (default: the `make run` output, runs/default/sae with its cache):
1. the example store (collected once, kept in the work folder's copy of the dictionary);
2. `--latents` randomly chosen live latents plus up to `--known` single-token latents (over
   90% of their top firings on one token id, so their meaning is known in advance) are
   explained and scored (detection, fuzzing, embedding) through the local llama.cpp server
   with the packaged explainer; reported: explanations and scored explanations per minute,
   the mean scores, and the margins over the random-explanation and empty-explanation
   baselines with 95% bootstrap intervals over latents;
3. the same explainer in process with transformers on `--transformers-latents` latents
   (detection only), for the no-server fallback's speed.
A known latent counts as named when its explanation contains the token's text.

Prints a table and writes ``benchmarks/results/explain.json``. The machine is shared:
timings are indicative only. Model answers are cached in the work folder; the benchmark
clears that cache first so the timings are real.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path
from typing import Any

import torch

from sparselens.interpretation.contexts import ContextReader
from sparselens.interpretation.examples import FeatureExamples
from sparselens.interpretation.explain import ExplainConfig, explain_latents
from sparselens.interpretation.explain_setup import default_cache, open_llm, store_tokenizer
from sparselens.interpretation.explainer import ExplainerConfig
from sparselens.interpretation.store import load_or_collect
from sparselens.io.native import load_dictionary

RESULTS = Path(__file__).parent / "results" / "explain.json"


def single_token_latents(examples: FeatureExamples, reader: ContextReader, n: int,
                         purity: float = 0.9, min_top: int = 10) -> list[tuple[int, int]]:
    """(latent, token id) of latents whose top firings sit on one token id that is a word of
    at least three letters (so "named" can be checked by the word appearing)."""
    if examples.tokens is None:
        return []
    top = examples.top
    valid = top.valid
    ids = examples.tokens[top.seq_ids.clamp_min(0), top.positions.clamp_min(0)]
    mode = ids.mode(dim=1).values
    share = ((ids == mode[:, None]) & valid).sum(1).double() / valid.sum(1).clamp_min(1)
    ok = (share >= purity) & (valid.sum(1) >= min_top)
    candidates = torch.nonzero(ok).squeeze(1)
    order = examples.counts[candidates].argsort(descending=True)  # the most frequent first
    found = []
    for j in candidates[order].tolist():
        word = reader.texts([int(mode[j])])[0].strip()
        if len(word) >= 3 and word.isalpha():
            found.append((j, int(mode[j])))
        if len(found) == n:
            break
    return found


def run_explain(examples: FeatureExamples, reader: ContextReader, llm_spec: str,
                model: str | None, cfg: ExplainConfig, out: Path) -> dict[str, Any]:
    shutil.rmtree(out, ignore_errors=True)
    with open_llm(llm_spec, model=model, log_dir=out) as llm:
        start = time.monotonic()
        result = explain_latents(examples, reader, llm, cfg, out)
        seconds = time.monotonic() - start
    ok = [r for r in result.records.values() if r["status"] == "ok"]
    minutes = seconds / 60
    return {"seconds": seconds, "latents": len(cfg.latents), "explained": len(ok),
            "explanations_per_minute": len(ok) / minutes,
            "scored_explanations_per_minute": 3 * len(ok) * len(cfg.scorers) / minutes,
            "requests_per_minute": result.summary["llm_cache"]["misses"] / minutes,
            "summary": result.summary, "records": result.records}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dictionary", default="runs/default/sae")
    parser.add_argument("--cache", default=None)
    parser.add_argument("--work", default="/tmp/sparselens-bench-explain")
    parser.add_argument("--latents", type=int, default=20)
    parser.add_argument("--known", type=int, default=3)
    parser.add_argument("--transformers-latents", type=int, default=2)
    parser.add_argument("--model", default=None, help="packaged explainer name")
    parser.add_argument("--max-tokens", type=int, default=300_000)
    parser.add_argument("--n-test", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--scorers", default="detection,fuzzing,embedding")
    parser.add_argument("--n-examples", type=int, default=10)
    parser.add_argument("--answer-tokens", type=int, default=96)
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args()

    source = Path(args.dictionary)
    work = Path(args.work)
    sae = work / "sae"
    sae.mkdir(parents=True, exist_ok=True)
    for name in ("config.json", "weights.safetensors"):
        shutil.copy2(source / name, sae / name)
    cache = Path(args.cache) if args.cache else default_cache(source)
    dictionary = load_dictionary(sae)
    start = time.monotonic()
    examples = load_or_collect(sae, dictionary, cache, max_tokens=args.max_tokens)
    store_seconds = time.monotonic() - start
    tokenizer = store_tokenizer(source, cache, None)
    reader = ContextReader(examples, tokenizer)

    known = single_token_latents(examples, reader, args.known)
    alive = torch.nonzero(examples.counts >= 20).squeeze(1)
    gen = torch.Generator().manual_seed(args.seed)
    picked = alive[torch.randperm(alive.numel(), generator=gen)[:args.latents]].tolist()
    latents = tuple(dict.fromkeys(picked + [j for j, _ in known]))
    scorers = tuple(args.scorers.split(","))
    explainer = ExplainerConfig(n_examples=args.n_examples, max_tokens=args.answer_tokens)
    cfg = ExplainConfig(latents=latents, scorers=scorers, explainer=explainer,
                        n_test=args.n_test, seed=args.seed)
    server = run_explain(examples, reader, "local", args.model, cfg, work / "server")

    named = []
    for latent, token in known:
        text = reader.texts([token])[0]
        explanation = server["records"][latent].get("explanation", "")
        named.append({"latent": latent, "token": text, "explanation": explanation,
                      "named": text.strip().lower() in explanation.lower()
                      if text.strip() else None})

    local = None
    if args.transformers_latents:
        small = ExplainConfig(latents=tuple(picked[:args.transformers_latents]),
                              scorers=("detection",), explainer=explainer,
                              n_test=args.n_test, seed=args.seed)
        local = run_explain(examples, reader, "transformers", args.model, small,
                            work / "transformers")

    summary_scores = server["summary"]["scorers"]
    report = {
        "machine": "2 shared CPU cores (other jobs running: timings indicative only)",
        "dictionary": str(source), "n_latents": dictionary.cfg.n_latents,
        "store": {"seconds": store_seconds, "n_tokens": examples.n_tokens},
        "explainer": server["summary"]["model"],
        "server": {k: v for k, v in server.items() if k not in ("records", "summary")},
        "transformers": None if local is None else
        {k: v for k, v in local.items() if k not in ("records", "summary")},
        "settings": vars(args), "scorers": summary_scores,
        "status": server["summary"]["status"], "known_latents": named,
        "explanations": {j: r.get("explanation") for j, r in server["records"].items()},
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"explainer {report['explainer']}, {len(latents)} latents "
          f"({len(known)} single-token), store {store_seconds:.0f} s")
    print(f"{'path':<14}{'expl/min':>10}{'scored/min':>12}{'req/min':>10}")
    for name, part in (("server", server), ("transformers", local)):
        if part:
            print(f"{name:<14}{part['explanations_per_minute']:>10.2f}"
                  f"{part['scored_explanations_per_minute']:>12.2f}"
                  f"{part['requests_per_minute']:>10.1f}")
    print(f"{'scorer':<11}{'score':>7}{'random':>8}{'empty':>8}  margin over random [95% CI]")
    for name, part in summary_scores.items():
        if "margin_over_random" not in part or part["explanation"]["mean"] is None:
            continue
        m = part["margin_over_random"]
        low = "-" if m["low"] is None else f"{m['low']:+.3f}"
        high = "-" if m["high"] is None else f"{m['high']:+.3f}"
        print(f"{name:<11}{part['explanation']['mean']:>7.3f}{part['random']['mean'] or 0:>8.3f}"
              f"{part['empty']['mean'] or 0:>8.3f}  {m['mean'] or 0:+.3f} [{low}, {high}]")
    for item in named:
        print(f"known latent {item['latent']} (token {item['token']!r}): "
              f"{item['explanation']!r} -> {'named' if item['named'] else 'NOT named'}")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
