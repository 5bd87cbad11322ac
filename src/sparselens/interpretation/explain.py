"""The explain pipeline: explain every requested latent with a language model, score each
explanation on held-out contexts beside two baselines, and write the results next to the
dictionary.

Two phases, each a list of independent requests through the cached client: first every
explanation, then every score (the random-explanation baseline needs the other latents'
explanations). Every finished latent is appended to ``explanations.jsonl`` at once, and every
model answer is in the request cache the moment it arrives, so an interrupted run loses at
most the requests in flight; a rerun skips finished latents and answers the rest from the
cache as far as it reaches. Failures are recorded per latent (never-fired latent, server
error, unparsable answer) and the run goes on; failed latents are retried by the next run.

Baselines (so each score reads as a margin over chance): the explanation of another latent of
the same run, chosen by a seeded hash, and the empty explanation. The summary gives each
scorer's mean and the mean margins with 95% percentile bootstrap intervals over latents.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sparselens.interpretation.contexts import ContextReader
from sparselens.interpretation.examples import FeatureExamples
from sparselens.interpretation.explainer import (
    ExplainerConfig,
    ExplanationParseError,
    explanation_request,
    follow_up_request,
    parse_explanation,
)
from sparselens.interpretation.llm.base import ChatResponse, LLMClient, LLMError
from sparselens.interpretation.llm.cache import CachedClient
from sparselens.interpretation.scoring import HeldOutData, Scorer, make_scorers
from sparselens.interpretation.scoring.stats import bootstrap_mean
from sparselens.io.atomic import atomic_write_json, atomic_write_text

RECORDS_FILE = "explanations.jsonl"
SUMMARY_FILE = "summary.json"
DONE = ("ok", "dead", "no_examples")
BASELINES = ("random", "empty")


@dataclass(frozen=True)
class ExplainConfig:
    latents: tuple[int, ...]
    scorers: tuple[str, ...] = ("detection", "fuzzing", "embedding")
    explainer: ExplainerConfig = field(default_factory=ExplainerConfig)
    n_test: int = 8
    """Activating and quiet test contexts per latent (each)."""
    seed: int = 0
    baselines: tuple[str, ...] = BASELINES
    """Which baselines each explanation is scored beside ("random", "empty"); each one costs
    as many judge requests as the explanation itself."""

    def fingerprint(self) -> str:
        """What a finished record must match to be reused (the latents may differ)."""
        data = {k: v for k, v in asdict(self).items() if k != "latents"}
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


@dataclass
class ExplainResult:
    records: dict[int, dict[str, Any]]
    summary: dict[str, Any]
    folder: Path


def parse_latents(spec: str, n_latents: int) -> tuple[int, ...]:
    """``"0:500"``, ``"3,7,9"`` or ``"0:10,42"`` -> latent ids (checked against the width)."""
    out: list[int] = []
    try:
        for part in spec.split(","):
            if ":" in part:
                start, stop = part.split(":")
                out.extend(range(int(start or 0), int(stop) if stop else n_latents))
            elif part.strip():
                out.append(int(part))
    except ValueError:
        raise ValueError(f"--latents {spec!r} is not a list of ids or START:STOP ranges "
                         "(e.g. 0:500 or 3,7,9)") from None
    bad = [j for j in out if not 0 <= j < n_latents]
    if bad or not out:
        raise ValueError(f"--latents {spec!r} selects {'no latent' if not out else bad[:5]}; "
                         f"the dictionary has latents 0..{n_latents - 1}")
    return tuple(dict.fromkeys(out))


def read_records(folder: Path) -> dict[int, dict[str, Any]]:
    """Records of earlier runs, last one per latent wins; a torn last line is ignored."""
    path = folder / RECORDS_FILE
    records: dict[int, dict[str, Any]] = {}
    if not path.exists():
        return records
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
            records[int(record["latent"])] = record
        except (ValueError, KeyError, TypeError):
            continue
    return records


def _mix(*values: int) -> int:
    digest = hashlib.sha256(",".join(map(str, values)).encode()).digest()
    return int.from_bytes(digest[:8], "little")


class _Run:
    def __init__(self, examples: FeatureExamples, reader: ContextReader, llm: CachedClient,
                 cfg: ExplainConfig, folder: Path, progress: bool) -> None:
        self.examples, self.reader, self.llm, self.cfg = examples, reader, llm, cfg
        self.folder, self.progress = folder, progress
        self.fingerprint = cfg.fingerprint()
        self.scorers: list[Scorer] = make_scorers(list(cfg.scorers))
        self.records = read_records(folder)

    def finished(self, latent: int) -> bool:
        record = self.records.get(latent)
        return (record is not None and record.get("status") in DONE
                and record.get("fingerprint") == self.fingerprint
                and record.get("model") == self.llm.identity)

    def append(self, record: dict[str, Any]) -> None:
        self.records[record["latent"]] = record
        with open(self.folder / RECORDS_FILE, "a") as handle:
            handle.write(json.dumps(record, allow_nan=False) + "\n")
            handle.flush()
            os.fsync(handle.fileno())

    def base_record(self, latent: int) -> dict[str, Any]:
        return {"latent": latent, "fingerprint": self.fingerprint, "model": self.llm.identity,
                "density": float(self.examples.density[latent]),
                "max_activation": float(self.examples.max_activation[latent]),
                "prompt": {"template_id": self.cfg.explainer.template_id(),
                           "template": self.cfg.explainer.template()}}

    # phase 1 ---------------------------------------------------------------------------
    def explain(self, pending: list[int]) -> dict[int, dict[str, Any]]:
        drafts: dict[int, dict[str, Any]] = {}
        requests, owners = [], []
        ex = self.cfg.explainer
        for latent in pending:
            draft = self.base_record(latent)
            drafts[latent] = draft
            if int(self.examples.counts[latent]) == 0:
                draft |= {"status": "dead", "error": "the latent never fired on the examples' "
                          "tokens; nothing to explain"}
                continue
            shown = self.reader.contexts(latent, "top", "train", limit=ex.n_examples)
            if not shown:
                draft |= {"status": "no_examples", "error": "no train examples (all its "
                          "firings fell in test sequences)"}
                continue
            contrast = (self.reader.contexts(latent, "random", "train", limit=ex.n_contrast)
                        if ex.n_contrast else [])
            draft["n_train_examples"] = len(shown)
            requests.append(explanation_request(shown, contrast, ex))
            owners.append(latent)
        short = ex.style == "short"
        bar = _bar(len(requests), "explaining", self.progress)
        results = self.llm.complete(requests, lambda i, r: bar.update(1))
        bar.close()
        retry = []
        for request, latent, result in zip(requests, owners, results):
            draft = drafts[latent]
            if isinstance(result, LLMError):
                draft |= {"status": "llm_error", "error": str(result)}
                continue
            assert isinstance(result, ChatResponse)
            draft["answer"] = result.text
            try:
                draft |= {"status": "explained", "explanation": parse_explanation(
                    result.text, first_line=short)}
            except ExplanationParseError as err:
                draft |= {"status": "unparsable", "error": str(err)}
                retry.append((latent, follow_up_request(request, result.text)))
        # one follow-up turn asking for just the explanation line
        answers = self.llm.complete([r for _, r in retry]) if retry else []
        for (latent, _), result in zip(retry, answers):
            if isinstance(result, ChatResponse):
                try:
                    drafts[latent] |= {"status": "explained", "follow_up": result.text,
                                       "explanation": parse_explanation(result.text)}
                    drafts[latent].pop("error", None)
                except ExplanationParseError:
                    pass
        return drafts

    # phase 2 ---------------------------------------------------------------------------
    def test_data(self, latent: int, alive: Sequence[int]) -> HeldOutData:
        n = self.cfg.n_test
        data = HeldOutData(latent, self.reader.activating(latent, "test", n),
                        self.reader.contexts(latent, "random", "test", limit=n))
        if any(not s.uses_explanation for s in self.scorers):
            others = [j for j in alive if j != latent]
            for r in range(3):
                if not others:
                    break
                other = others[_mix(self.cfg.seed, latent, r) % len(others)]
                found = self.reader.activating(other, "test", 1)
                data.intruders.extend(found[-1:])
        return data

    def score(self, draft: dict[str, Any], explanations: dict[int, str],
              alive: Sequence[int]) -> dict[str, Any]:
        latent = draft["latent"]
        data = self.test_data(latent, alive)
        others = sorted(j for j in explanations if j != latent)
        source = others[_mix(self.cfg.seed, latent) % len(others)] if others else None
        candidates = {"explanation": draft["explanation"],
                      "random": explanations[source] if source is not None else None,
                      "empty": ""}
        candidates = {k: v for k, v in candidates.items()
                      if k == "explanation" or k in self.cfg.baselines}
        scores: dict[str, Any] = {}
        for scorer in self.scorers:
            if not scorer.uses_explanation:
                result = scorer.score(None, data, self.llm)
                scores[scorer.name] = {"latent": asdict(result), "chance": scorer.chance}
                continue
            entry: dict[str, Any] = {"chance": scorer.chance}
            present = {label: text for label, text in candidates.items() if text is not None}
            many = getattr(scorer, "score_many", None)
            if many is not None:  # all candidates in one call (a server reuses each text)
                entry |= {label: asdict(score) for label, score in
                          many(present, data, self.llm).items()}
            else:
                for label, text in present.items():
                    entry[label] = asdict(scorer.score(text, data, self.llm))
            scores[scorer.name] = entry
        return {**draft, "status": "ok", "scores": scores, "random_source": source,
                "n_test": {"activating": len(data.activating), "quiet": len(data.quiet)}}


def _bar(total: int, what: str, enabled: bool) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=what, unit="latent", disable=not enabled or total == 0,
                dynamic_ncols=True)


def explain_latents(examples: FeatureExamples, reader: ContextReader, llm: LLMClient,
                    cfg: ExplainConfig, folder: str | os.PathLike, *,
                    cache_folder: str | os.PathLike | None = None, progress: bool = True,
                    on_latent: Callable[[dict[str, Any]], None] | None = None) -> ExplainResult:
    """Explain and score ``cfg.latents``; results go to `folder` (``explanations.jsonl``,
    ``summary.json``, the search index). Answers are cached in `cache_folder` (default
    ``folder/llm_cache``). Returns every record of the requested latents and the summary."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    cached = llm if isinstance(llm, CachedClient) else CachedClient(
        llm, cache_folder or folder / "llm_cache")
    run = _Run(examples, reader, cached, cfg, folder, progress)
    started = time.monotonic()
    pending = [j for j in cfg.latents if not run.finished(j)]
    drafts = run.explain(pending)
    explained_at = time.monotonic()
    for draft in drafts.values():
        if draft["status"] != "explained":
            run.append(draft)
            if on_latent:
                on_latent(draft)
    explanations = {j: r["explanation"] for j, r in run.records.items()
                    if r.get("status") == "ok" and j in cfg.latents}
    explanations |= {j: d["explanation"] for j, d in drafts.items() if "explanation" in d}
    alive = [j for j in cfg.latents if int(examples.counts[j]) > 0]
    to_score = [d for d in drafts.values() if d["status"] == "explained"]
    bar = _bar(len(to_score), "scoring", progress)
    for draft in to_score:
        record = run.score(draft, explanations, alive)
        run.append(record)
        if on_latent:
            on_latent(record)
        bar.update(1)
    bar.close()
    records = {j: run.records[j] for j in cfg.latents if j in run.records}
    _rewrite(folder, run.records)
    now = time.monotonic()
    timing = {"explain_seconds": explained_at - started, "score_seconds": now - explained_at,
              "explained": sum("explanation" in d for d in drafts.values()),
              "scored": len(to_score)}
    summary = summarise(records, cfg, cached, now - started)
    summary["timing"] = timing
    atomic_write_json(folder / SUMMARY_FILE, summary)
    if explanations:
        from sparselens.interpretation.search import ExplanationIndex

        ExplanationIndex.build({j: r["explanation"] for j, r in run.records.items()
                                if r.get("status") == "ok"}).save(folder)
    return ExplainResult(records, summary, folder)


def _rewrite(folder: Path, records: dict[int, dict[str, Any]]) -> None:
    """The JSONL compacted: one line per latent, in latent order (atomically)."""
    lines = [json.dumps(records[j], allow_nan=False) for j in sorted(records)]
    atomic_write_text(folder / RECORDS_FILE, "\n".join(lines) + ("\n" if lines else ""))


def summarise(records: dict[int, dict[str, Any]], cfg: ExplainConfig, llm: CachedClient,
              seconds: float) -> dict[str, Any]:
    """Counts by status, each scorer's means and margins over the baselines with 95%
    bootstrap intervals over latents."""
    statuses: dict[str, int] = {}
    for record in records.values():
        statuses[record["status"]] = statuses.get(record["status"], 0) + 1
    ok = [r for r in records.values() if r["status"] == "ok"]
    scorers: dict[str, Any] = {}
    for name in cfg.scorers:
        entries = [r["scores"][name] for r in ok if name in r.get("scores", {})]
        if entries and "latent" in entries[0]:
            values = [e["latent"]["value"] for e in entries]
            scorers[name] = {"chance": entries[0]["chance"], "score": bootstrap_mean(values),
                             "margin_over_chance": bootstrap_mean(
                                 [v - entries[0]["chance"] for v in values if v is not None])}
            continue
        summary: dict[str, Any] = {"explanation": bootstrap_mean(
            [_value(e, "explanation") for e in entries])}
        for baseline in cfg.baselines:
            summary[baseline] = bootstrap_mean([_value(e, baseline) for e in entries])
            summary[f"margin_over_{baseline}"] = _margin(entries, baseline, "value")
        summary["auroc"] = bootstrap_mean([_value(e, "explanation", "auroc") for e in entries])
        if any(_value(e, "explanation", "auroc") is not None for e in entries):
            # the threshold-free reading: a small judge's Yes-bias moves its balanced
            # accuracy at P(Yes) > 0.5 towards chance, not its ranking of the contexts
            for baseline in cfg.baselines:
                summary[f"auroc_{baseline}"] = bootstrap_mean(
                    [_value(e, baseline, "auroc") for e in entries])
                summary[f"auroc_margin_over_{baseline}"] = _margin(entries, baseline, "auroc")
        scorers[name] = summary
    return {"latents": len(records), "status": statuses, "scorers": scorers,
            "model": llm.identity, "config": {**asdict(cfg), "latents": len(cfg.latents)},
            "prompt": {"template_id": cfg.explainer.template_id(),
                       "template": cfg.explainer.template()},
            "llm_cache": {"hits": llm.hits, "misses": llm.misses}, "seconds": seconds}


def _margin(entries: list[dict[str, Any]], baseline: str, key: str) -> dict[str, Any]:
    """Mean per-latent (explanation - baseline) of `key`, with its bootstrap interval."""
    pairs = [(_value(e, "explanation", key), _value(e, baseline, key)) for e in entries]
    return bootstrap_mean([a - b for a, b in pairs if a is not None and b is not None])


def _value(entry: dict[str, Any], label: str, key: str = "value") -> float | None:
    part = entry.get(label)
    if not part:
        return None
    return part.get(key) if key == "value" else part.get("details", {}).get(key)
