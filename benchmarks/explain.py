"""Explaining and scoring latents: margins over baselines, throughput, known meanings.

On a trained dictionary (default: the `make run` output, runs/default/sae with its cache):

1. the example store (collected once, kept in the work folder's copy of the dictionary);
2. **known meanings**: (a) with ``--latents 0`` only: synthetic token-family features over
   the built-in corpus: a feature that is 1 exactly on the tokens of a family (days of the
   week, months, digits, colour words) and 0 elsewhere, shown to the explainer like a
   latent's examples; (b) the dictionary's latents whose top firings sit at least 95% on one
   word token. An explanation
   "names" the meaning when it contains one of the family's keywords (listed in FAMILIES) or,
   for a single-token latent, the token's word (case-insensitive);
3. **margins**: `--latents` latents drawn uniformly at random (torch.randperm with `--seed`)
   among the live ones (at least `--min-firings` firings in the store, so that every one has
   test contexts), explained and scored (detection, fuzzing by the judge's P(Yes); embedding
   by MiniLM) beside the random-explanation baseline (and the empty one with `--baselines`),
   in chunks of `--chunk` latents in the drawn order: a partial run is still a uniform
   sample, and the JSON is rewritten after every chunk;
4. throughput: explanations per minute and scored explanations per minute through the local
   llama.cpp server, with the load average beside them (the machine is shared).

Resumable: the work folder keeps the store, the finished records and every model answer;
rerunning the same command continues where it stopped (`--fresh` starts over).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import time
from pathlib import Path
from typing import Any

import torch

from sparselens.data.corpus import CorpusConfig, iter_texts
from sparselens.interpretation.contexts import Context, ContextReader
from sparselens.interpretation.examples import FeatureExamples
from sparselens.interpretation.explain import ExplainConfig, explain_latents
from sparselens.interpretation.explain_setup import default_cache, open_llm, store_tokenizer
from sparselens.interpretation.explainer import (
    ExplainerConfig,
    ExplanationParseError,
    explanation_request,
    parse_explanation,
)
from sparselens.interpretation.llm.base import ChatResponse, LLMClient
from sparselens.interpretation.llm.cache import CachedClient
from sparselens.interpretation.store import load_or_collect
from sparselens.interpretation.token_text import is_byte_level, piece_text, special_ids
from sparselens.io.native import load_dictionary

RESULTS = Path(__file__).parent / "results" / "explain.json"
FAMILIES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "days of the week": (("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday",
                          "Sunday"), ("day", "week")),
    "months": (("January", "February", "March", "April", "June", "July", "August",
                "September", "October", "November", "December"), ("month",)),
    "digits": (tuple("0123456789"), ("digit", "number", "numeral", "numeric")),
    "colour words": (("red", "blue", "green", "yellow", "black", "white", "purple", "orange",
                      "pink", "brown"), ("colo",)),
}
"""Family -> (its words, the keywords an explanation must contain to name it)."""


class TokenTexts:
    """Display text of token ids (as the context reader shows them), decoded once each."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer, self.specials = tokenizer, special_ids(tokenizer)
        self.byte_level, self.cache = is_byte_level(tokenizer), {}

    def __call__(self, ids: list[int]) -> tuple[str, ...]:
        missing = [i for i in dict.fromkeys(ids) if i not in self.cache]
        for i, piece in zip(missing, self.tokenizer.convert_ids_to_tokens(missing)):
            self.cache[i] = ("" if i in self.specials or piece is None
                             else piece_text(piece, self.byte_level))
        return tuple(self.cache[i] for i in ids)


def corpus_table(tokenizer: Any, n_tokens: int, length: int = 128) -> torch.Tensor:
    """The built-in corpus tokenized into rows of `length` tokens (for the synthetic
    features when no dictionary's cache is at hand)."""
    ids: list[int] = []
    for text in iter_texts(CorpusConfig()):
        ids.extend(tokenizer(text).input_ids)
        if len(ids) >= n_tokens:
            break
    rows = len(ids) // length
    return torch.tensor(ids[:rows * length]).view(rows, length)


def family_contexts(texts: TokenTexts, table: torch.Tensor, train: torch.Tensor,
                    view: tuple[int, int], words: tuple[str, ...], n: int) -> list[Context]:
    """Up to `n` contexts (one per row, rows in `train` only) where a token of the family
    occurs, with a synthetic activation of 1 on every family token and 0 elsewhere."""
    vocab_hits = {}
    uniques = torch.unique(table).tolist()
    for token, text in zip(uniques, texts(uniques)):
        word = text.strip()
        if word in words and (text == " " + word or (word.isdigit() and len(word) == 1)):
            vocab_hits[token] = text
    if not vocab_hits:
        return []
    member = torch.isin(table, torch.tensor(sorted(vocab_hits)))
    before, after = view
    hits = torch.nonzero(member & train[:, None]).tolist()
    first: dict[int, int] = {}
    for seq, pos in hits:  # one occurrence per row
        first.setdefault(seq, pos)
    rows = sorted(first)
    # rows spread evenly over the corpus (neighbouring rows often come from one document)
    picked = [rows[int(i * len(rows) / n)] for i in range(n)] if len(rows) > n else rows
    out: list[Context] = []
    seen: set[str] = set()
    for seq in picked:
        pos = first[seq]
        lo, hi = max(0, pos - before), min(table.shape[1], pos + after + 1)
        ids = table[seq, lo:hi].tolist()
        context = Context(texts(ids), tuple(float(i in vocab_hits) for i in ids), seq, pos,
                          "synthetic")
        if context.text not in seen:
            seen.add(context.text)
            out.append(context)
    return out


def single_token_latents(examples: FeatureExamples, reader: ContextReader, n: int,
                         purity: float = 0.95, min_top: int = 10) -> list[tuple[int, int]]:
    """(latent, token id) of latents whose top firings sit at least `purity` on one token id
    that is a word of at least three letters (the most frequent latents first)."""
    if examples.tokens is None:
        return []
    top = examples.top
    valid = top.valid
    ids = examples.tokens[top.seq_ids.clamp_min(0), top.positions.clamp_min(0)]
    mode = ids.mode(dim=1).values
    share = ((ids == mode[:, None]) & valid).sum(1).double() / valid.sum(1).clamp_min(1)
    ok = (share >= purity) & (valid.sum(1) >= min_top)
    candidates = torch.nonzero(ok).squeeze(1)
    order = examples.counts[candidates].argsort(descending=True)
    found = []
    for j in candidates[order].tolist():
        word = reader.texts([int(mode[j])])[0].strip()
        if len(word) >= 3 and word.isalpha():
            found.append((j, int(mode[j])))
        if len(found) == n:
            break
    return found


def explain_contexts(llm: LLMClient, contexts: list[Context], cfg: ExplainerConfig) -> str:
    result = llm.complete([explanation_request(contexts, [], cfg)])[0]
    if not isinstance(result, ChatResponse):
        return f"<error: {result}>"
    try:
        return parse_explanation(result.text, first_line=cfg.style == "short")
    except ExplanationParseError:
        return f"<unparsable: {result.text[:80]!r}>"


def known_families(texts: TokenTexts, table: torch.Tensor, train: torch.Tensor,
                   view: tuple[int, int], llm: LLMClient,
                   explainer: ExplainerConfig) -> list[dict[str, Any]]:
    out = []
    for family, (words, keywords) in FAMILIES.items():
        contexts = family_contexts(texts, table, train, view, words, explainer.n_examples)
        if len(contexts) < 4:
            out.append({"kind": "synthetic family", "meaning": family, "contexts": len(contexts),
                        "explanation": None, "named": None, "note": "fewer than 4 contexts"})
            continue
        explanation = explain_contexts(llm, contexts, explainer)
        out.append({"kind": "synthetic family", "meaning": family, "contexts": len(contexts),
                    "keywords": keywords, "explanation": explanation,
                    "named": any(k in explanation.lower() for k in keywords),
                    "shown": [c.marked() for c in contexts]})
    return out


def names_word(explanation: str, word: str) -> bool:
    """Whether `explanation` names `word` as a whole word, not counting a leading "the word" /
    "the keyword" / "the token" (so "the word to" does not name ' the')."""
    rest = re.sub(r"^(the )?(key)?(word|token)s? ", "", explanation.lower().strip())
    return re.search(rf"(?<!\w){re.escape(word.lower())}(?!\w)", rest) is not None


def known_latents(examples: FeatureExamples, reader: ContextReader, llm: LLMClient,
                  explainer: ExplainerConfig, n_known: int) -> list[dict[str, Any]]:
    out = []
    for latent, token in single_token_latents(examples, reader, n_known):
        word = reader.texts([token])[0].strip()
        contexts = reader.contexts(latent, "top", "train", limit=explainer.n_examples)
        explanation = explain_contexts(llm, contexts, explainer)
        out.append({"kind": "single-token latent", "latent": latent, "meaning": word,
                    "explanation": explanation, "named": names_word(explanation, word)})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dictionary", default="runs/default/sae")
    parser.add_argument("--cache", default=None)
    parser.add_argument("--work", default="/tmp/sparselens-bench-explain")
    parser.add_argument("--fresh", action="store_true", help="start over (drop the answers)")
    parser.add_argument("--latents", type=int, default=40)
    parser.add_argument("--chunk", type=int, default=4)
    parser.add_argument("--min-firings", type=int, default=20)
    parser.add_argument("--known", type=int, default=3)
    parser.add_argument("--model", default=None, help="packaged explainer name")
    parser.add_argument("--llm", default="local", help="local, a .gguf file or a server URL")
    parser.add_argument("--slots", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--max-tokens", type=int, default=300_000)
    parser.add_argument("--n-test", type=int, default=6)
    parser.add_argument("--view", default="16,4", help="tokens shown before,after the example")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--scorers", default="detection,fuzzing,embedding")
    parser.add_argument("--baselines", default="random")
    parser.add_argument("--n-examples", type=int, default=8)
    parser.add_argument("--answer-tokens", type=int, default=24)
    parser.add_argument("--style", default="short")
    parser.add_argument("--no-token-hint", action="store_true",
                        help="the short prompt without the marked-token line and its shot")
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args()

    if args.latents == 0:  # the synthetic known meanings alone, on the built-in corpus
        families_only(args)
        return
    source, work = Path(args.dictionary), Path(args.work)
    if args.fresh:
        shutil.rmtree(work / "server", ignore_errors=True)
    sae = work / "sae"
    sae.mkdir(parents=True, exist_ok=True)
    for name in ("config.json", "weights.safetensors"):
        if not (sae / name).exists():
            shutil.copy2(source / name, sae / name)
    cache = Path(args.cache) if args.cache else default_cache(source)
    dictionary = load_dictionary(sae)
    start = time.monotonic()
    examples = load_or_collect(sae, dictionary, cache, max_tokens=args.max_tokens)
    store_seconds = time.monotonic() - start
    before, after = (int(x) for x in args.view.split(","))
    reader = ContextReader(examples, store_tokenizer(source, cache, None), view=(before, after))

    alive = torch.nonzero(examples.counts >= args.min_firings).squeeze(1)
    gen = torch.Generator().manual_seed(args.seed)
    order = alive[torch.randperm(alive.numel(), generator=gen)[:args.latents]].tolist()
    explainer = ExplainerConfig(n_examples=args.n_examples, max_tokens=args.answer_tokens,
                                style=args.style, token_hint=not args.no_token_hint)
    scorers = tuple(args.scorers.split(","))
    baselines = tuple(b for b in args.baselines.split(",") if b)
    out_dir = work / "server"
    out_dir.mkdir(parents=True, exist_ok=True)
    timing_log = out_dir / "timing.jsonl"
    report: dict[str, Any] = {
        "dictionary": str(source), "n_latents": dictionary.cfg.n_latents,
        "live_latents": int(alive.numel()),
        "selection": f"{len(order)} latents drawn uniformly at random (torch.randperm, seed "
                     f"{args.seed}) among the {int(alive.numel())} latents with at least "
                     f"{args.min_firings} firings in the store; explained in that order",
        "store": {"seconds": store_seconds, "n_tokens": examples.n_tokens},
        "settings": vars(args)}

    def write() -> None:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=2) + "\n")

    with open_llm(args.llm, model=args.model, log_dir=out_dir, slots=args.slots,
                  concurrency=args.concurrency, timeout=1800) as raw:
        llm = CachedClient(raw, out_dir / "llm_cache")
        report["explainer"] = llm.identity
        t0, load0 = time.monotonic(), os.getloadavg()
        # (the synthetic families are measured by --latents 0, on the built-in corpus)
        report["known_meanings"] = known_latents(examples, reader, llm, explainer, args.known)
        report["known_meanings_timing"] = {"seconds": time.monotonic() - t0,
                                           "load_before": load0, "load_after": os.getloadavg()}
        write()
        for item in report["known_meanings"]:
            print(f"known {item['meaning']!r}: {item['explanation']!r} -> {item['named']}")
        for k in range(args.chunk, len(order) + args.chunk, args.chunk):
            cfg = ExplainConfig(latents=tuple(order[:k]), scorers=scorers, explainer=explainer,
                                n_test=args.n_test, seed=args.seed, baselines=baselines)
            load = os.getloadavg()
            result = explain_latents(examples, reader, llm, cfg, out_dir, progress=False)
            timing = {**result.summary["timing"], "load_before": load,
                      "load_after": os.getloadavg(), "latents_so_far": len(cfg.latents)}
            if timing["explained"] or timing["scored"]:
                with open(timing_log, "a") as handle:
                    handle.write(json.dumps(timing) + "\n")
            report["summary"] = result.summary
            report["throughput"] = throughput(timing_log)
            report["explanations"] = {j: r.get("explanation", r.get("status"))
                                      for j, r in result.records.items()}
            write()
            print_table(report)
    print(f"wrote {args.out}")


def families_only(args: argparse.Namespace) -> None:
    """Synthetic token-family features over the built-in corpus (no dictionary needed)."""
    from sparselens.interpretation.explain_setup import load_tokenizer

    tokenizer = load_tokenizer("gemma-3-270m")
    table = corpus_table(tokenizer, args.max_tokens)
    before, after = (int(x) for x in args.view.split(","))
    explainer = ExplainerConfig(n_examples=args.n_examples, max_tokens=args.answer_tokens,
                                style=args.style, token_hint=not args.no_token_hint)
    out_dir = Path(args.work) / "families"
    with open_llm(args.llm, model=args.model, log_dir=out_dir, slots=1,
                  timeout=1800) as raw:
        llm = CachedClient(raw, out_dir / "llm_cache")
        load, start = os.getloadavg(), time.monotonic()
        found = known_families(TokenTexts(tokenizer), table,
                               torch.ones(table.shape[0], dtype=torch.bool), (before, after),
                               llm, explainer)
        report = {"explainer": llm.identity, "corpus": f"built-in, {table.numel()} tokens",
                  "criterion": "named = the explanation contains one of the family's keywords",
                  "known_meanings": found, "seconds": time.monotonic() - start,
                  "load_before": load, "load_after": os.getloadavg(), "settings": vars(args)}
    out = Path(args.out)
    out.write_text(json.dumps(report, indent=2) + "\n")
    for item in found:
        print(f"{item['meaning']!r}: {item['explanation']!r} -> named {item['named']}")
    print(f"wrote {out}")


def throughput(log: Path) -> dict[str, Any]:
    """Explanations and scored explanations per minute over every session's chunks."""
    rows = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    explain_s = sum(r["explain_seconds"] for r in rows)
    score_s = sum(r["score_seconds"] for r in rows)
    explained, scored = sum(r["explained"] for r in rows), sum(r["scored"] for r in rows)
    loads = [r["load_before"][0] for r in rows] + [r["load_after"][0] for r in rows]
    return {"explanations_per_minute": explained / (explain_s / 60) if explain_s else None,
            "scored_explanations_per_minute": scored / (score_s / 60) if score_s else None,
            "end_to_end_per_minute": scored / ((explain_s + score_s) / 60)
            if explain_s + score_s else None,
            "explained": explained, "scored": scored, "explain_seconds": explain_s,
            "score_seconds": score_s,
            "load_average_1min": {"min": min(loads), "max": max(loads)} if loads else None,
            "note": "a scored explanation = one latent's explanation and its baselines scored "
                    "by every scorer; 2 shared CPU cores"}


def print_table(report: dict[str, Any]) -> None:
    summary, speed = report["summary"], report["throughput"]
    print(f"{summary['latents']} latents {summary['status']}; "
          f"{speed['explanations_per_minute'] or 0:.2f} expl/min, "
          f"{speed['scored_explanations_per_minute'] or 0:.2f} scored/min")
    print(f"{'scorer':<11}{'metric':<9}{'score':>7}{'random':>8}  margin [95% CI]")
    for name, part in summary["scorers"].items():
        for metric, score, base, margin in (
                ("value", "explanation", "random", "margin_over_random"),
                ("auroc", "auroc", "auroc_random", "auroc_margin_over_random")):
            if margin not in part or part[score]["mean"] is None or part[margin]["mean"] is None:
                continue
            m = part[margin]
            print(f"{name:<11}{metric:<9}{part[score]['mean']:>7.3f}{part[base]['mean']:>8.3f}"
                  f"  {m['mean']:+.3f} [{m['low']:+.3f}, {m['high']:+.3f}]")


if __name__ == "__main__":
    main()
