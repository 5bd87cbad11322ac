"""Steering on the embedded model with a trained SAE: choose a latent by output score, record
its dose-response on its logit-lens token family, the generation overhead of an active edit,
an ablation study, and a concept/fluency sweep (a concept given as words: latent chosen by
contrast prompts and output score) against the dense mean-difference baseline.

    python benchmarks/steer.py [--sae runs/default/sae] [--candidates 96] [--quick]

Prints tables; writes benchmarks/results/steer.json and steer_sweep.png. Timings depend on
the machine and its load (no timing is ever a test).
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from pathlib import Path

import torch

from sparselens.data.builtin_corpus import document_refs, load_document
from sparselens.io.atomic import atomic_write_json
from sparselens.lens import AddLatent, Lens
from sparselens.steering import (
    ablation_study,
    family_probability,
    latent_steer,
    mean_difference_vector,
    output_scores,
    sweep,
    vector_steer,
)
from sparselens.steering.concepts import (
    SWEEP_PROMPTS,
    contrast_prompts,
    latent_words,
    latents_for_concept,
)
from sparselens.steering.output_scores import NEUTRAL_PROMPT

RESULTS = Path(__file__).parent / "results"
DOSE_PROMPTS = ["From my experience,", "I think that", "The next thing is", "She said that"]


def corpus_texts(n: int, chars: int = 300) -> list[str]:
    """`n` plain-text snippets of the built-in corpus (deterministic)."""
    texts = []
    for ref in document_refs():
        doc = load_document(ref)
        for start in range(0, len(doc) - chars, chars * 7):
            snippet = doc[start:start + chars].strip()
            if len(snippet) > chars // 2:
                texts.append(snippet)
        if len(texts) >= n * 4:
            break
    random.Random(0).shuffle(texts)
    return texts[:n]


def alive_candidates(lens: Lens, name: str, texts: list[str], n: int) -> list[int]:
    """`n` random latents among those that fire on `texts`."""
    fired = torch.zeros(lens.dictionaries[name].cfg.n_latents, dtype=torch.bool)
    for start in range(0, len(texts), 4):
        codes = lens.encode(texts[start:start + 4]).codes[name]
        fired[codes.indices[codes.values > 0].unique().cpu()] = True
    alive = fired.nonzero().flatten().tolist()
    return sorted(random.Random(1).sample(alive, min(n, len(alive))))


def residual_norm(lens: Lens, name: str, texts: list[str]) -> float:
    """Median norm of the dictionary's input activation over ordinary tokens."""
    enc = lens.encode(texts[:4])
    acts = enc.activations[name].float()
    return float(acts[~enc.tokens.special].norm(dim=-1).median())


def seconds_per_token(lens: Lens, edits: list, tokens: int) -> float:
    """Seconds per generated token of one greedy generation of `tokens` new tokens."""
    start = time.perf_counter()
    gen = lens.generate(NEUTRAL_PROMPT, max_new_tokens=tokens, edits=edits)
    return (time.perf_counter() - start) / (gen.ids.shape[1] - gen.prompt_length)


def time_generation(lens: Lens, edits: list, tokens: int, repeats: int) -> tuple[float, float]:
    """Best-of-`repeats` seconds per token, unedited and under `edits`, measured alternately so
    that load from other processes hits both alike."""
    plain, edited = [], []
    for _ in range(repeats):
        plain.append(seconds_per_token(lens, [], tokens))
        edited.append(seconds_per_token(lens, edits, tokens))
    return min(plain), min(edited)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="gemma-3-270m")
    parser.add_argument("--sae", default="runs/default/sae")
    parser.add_argument("--candidates", type=int, default=96)
    parser.add_argument("--quick", action="store_true", help="fewer candidates and prompts")
    parser.add_argument("--concept", nargs="+", default=["dog", "dogs", "puppy"],
                        help="concept words for the sweep")
    parser.add_argument("--description", default="dogs and puppies",
                        help="concept description the generations are scored against")
    args = parser.parse_args()
    torch.manual_seed(0)
    quick = args.quick
    lens = Lens.load(args.model, [args.sae])
    name = lens.names[0]
    texts = corpus_texts(16 if quick else 32)
    record: dict = {"model": args.model, "sae": str(Path(args.sae).resolve()),
                    "hookpoint": lens.dictionaries[name].cfg.hookpoint,
                    "n_latents": lens.dictionaries[name].cfg.n_latents,
                    "threads": torch.get_num_threads(),
                    "note": "shared machine (up to 8 other agents on 2 cores): timings noisy"}

    # 1. choose a latent by output score
    candidates = alive_candidates(lens, name, texts, 24 if quick else args.candidates)
    t0 = time.perf_counter()
    scores = output_scores(lens, name, candidates, progress=True)
    scores.sort(key=lambda s: s.score, reverse=True)
    record["output_scores"] = {
        "n_candidates": len(candidates), "seconds": time.perf_counter() - t0,
        "top": [{"latent": s.latent, "score": s.score, "rank_score": s.rank_score,
                 "top_probability": s.top_probability,
                 "tokens": latent_words(lens, name, s.latent, 8)} for s in scores[:10]],
        "median_score": statistics.median(s.score for s in scores)}
    print(f"\noutput scores of {len(candidates)} alive latents (top 5):")
    for s in scores[:5]:
        print(f"  latent {s.latent:6d}  score {s.score:.3f}  rank {s.rank_score:.4f}  "
              f"p {s.top_probability:.3f}  {latent_words(lens, name, s.latent, 6)}")
    best = scores[0]

    # 2. dose-response of the top three latents on their logit-lens families
    norm = residual_norm(lens, name, texts)
    fractions = [0.0] + [2.0 ** e for e in range(-9, -1)]
    coefs = [f * norm for f in fractions]
    record["dose_response"] = {"median_residual_norm": norm, "coef_over_norm": fractions,
                               "coefs": coefs, "latents": []}
    print(f"\ndose-response (median residual norm {norm:.1f}); family probability at coef:")
    print("  latent  " + " ".join(f"{c:8.1f}" for c in coefs))
    for score in scores[:3]:
        probs = family_probability(lens, latent_steer(name, score.latent), coefs,
                                   DOSE_PROMPTS, score.tokens)
        increasing = [b > a for a, b in zip(probs, probs[1:])]
        monotone_to = next((i for i, ok in enumerate(increasing) if not ok), len(increasing))
        record["dose_response"]["latents"].append(
            {"latent": score.latent, "family": score.tokens, "family_probability": probs,
             "strictly_increasing_up_to_coef": coefs[monotone_to]})
        print(f"  {score.latent:6d}  " + " ".join(f"{p:8.4f}" for p in probs)
              + f"   increasing up to {coefs[monotone_to]:.1f}")

    # 3. generation overhead of an active edit. An AddLatent with coefficient 0 runs every hook
    # and generates exactly the unedited tokens, so its extra time is the edit's overhead alone;
    # a real steer (1/16 of the norm) also changes which tokens come out.
    tokens, repeats = (16, 2) if quick else (32, 5)
    zero = [AddLatent(name, latent=best.latent, coef=0.0)]
    steer = [AddLatent(name, latent=best.latent, coef=norm / 16)]
    seconds_per_token(lens, zero, 4)  # warm-up
    plain, with_zero = time_generation(lens, zero, tokens, repeats)
    plain_2, with_steer = time_generation(lens, steer, tokens, repeats)
    record["generation_overhead"] = {
        "new_tokens": tokens, "repeats": repeats, "timing": "best of repeats, alternating",
        "ms_per_token_unedited": min(plain, plain_2) * 1e3,
        "ms_per_token_coef0_edit": with_zero * 1e3, "overhead_coef0": with_zero / plain - 1,
        "ms_per_token_steered": with_steer * 1e3, "overhead_steered": with_steer / plain_2 - 1}
    print(f"\ngeneration: unedited {plain * 1e3:.1f} ms/token, AddLatent coef 0 (same tokens) "
          f"{with_zero * 1e3:.1f} ({100 * (with_zero / plain - 1):+.1f}%); unedited "
          f"{plain_2 * 1e3:.1f}, steered at norm/16 {with_steer * 1e3:.1f} "
          f"({100 * (with_steer / plain_2 - 1):+.1f}%)")

    # 4. ablation study of the chosen latent and the next four
    ablated = [s.latent for s in scores[:5]]
    result = ablation_study(lens, name, ablated, texts[:8 if quick else 16], batch_size=4,
                            max_length=96)
    record["ablation"] = result.to_dict()
    print(f"\nablating latents {ablated}: loss {result.overall.loss_clean:.4f} -> "
          f"{result.overall.loss_ablated:.4f} overall ({result.overall.n_predictions} "
          f"predictions), {result.where_fired.loss_clean:.4f} -> "
          f"{result.where_fired.loss_ablated:.4f} where they fired "
          f"({result.where_fired.n_predictions})")

    # 5. concept / fluency sweep for a concept given as words: the latent chosen by contrast
    # prompts then output score, against the dense mean-difference vector of the same prompts
    ranked = latents_for_concept(lens, name, args.concept)
    record["concept_latents"] = [{"latent": r.latent, "code_difference": r.code_difference,
                                  "output_score": r.output_score,
                                  "tokens": latent_words(lens, name, r.latent, 8)}
                                 for r in ranked]
    print(f"\nlatents for {args.concept} (contrast, re-ranked by output score):")
    for r in ranked[:5]:
        print(f"  latent {r.latent:6d}  difference {r.code_difference:8.2f}  output score "
              f"{r.output_score:.3f}  {latent_words(lens, name, r.latent, 6)}")
    chosen = ranked[0].latent
    hookpoint = lens.dictionaries[name].cfg.hookpoint
    positive, negative = contrast_prompts(args.concept)
    vector = mean_difference_vector(lens, hookpoint, positive, negative)
    prompts = list(SWEEP_PROMPTS[:2 if quick else 3])
    fractions = (0.0, 1 / 128, 1 / 64, 1 / 32, 1 / 16, 1 / 8)
    result_sweep = sweep(lens, [latent_steer(name, chosen),
                                vector_steer(hookpoint, vector, label="dense mean-diff")],
                         [f * norm for f in fractions], prompts, args.description,
                         max_new_tokens=16 if quick else 24)
    json_path, png_path = result_sweep.write(RESULTS / "steer_sweep")
    record["sweep"] = {"concept": result_sweep.concept, "words": args.concept,
                       "latent": chosen, "json": str(json_path), "plot": str(png_path),
                       "curves": {c.label: [{"coef": p.coef, "concept": p.concept_similarity,
                                             "perplexity": p.perplexity,
                                             "repetition": p.repetition,
                                             "first_generation": p.generations[0]}
                                            for p in c.points]
                                  for c in result_sweep.curves}}
    print(f"\nsweep, concept {result_sweep.concept!r}:")
    for curve in result_sweep.curves:
        for p in curve.points:
            print(f"  {curve.label:>16s} coef {p.coef:8.1f}  concept {p.concept_similarity:.3f}"
                  f"  perplexity {p.perplexity:9.2f}  repetition {p.repetition:.2f}"
                  f"  | {p.generations[0][:60]!r}")
    out = RESULTS / ("steer_quick.json" if quick else "steer.json")
    atomic_write_json(out, record)
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
