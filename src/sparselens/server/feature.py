"""The feature page's JSON: stats, activation histogram, examples with their token contexts,
quantile groups and explanations (the logit lens and similar latents come from their own
modules, so a slow part never holds up the rest).

Examples are sent as token lists with one activation per token; the page renders each with
``textContent`` (never HTML), so any token text, ``<script>`` included, shows as text.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from sparselens.server.images import feature_images
from sparselens.server.store import DictionaryStore, Example

DEFAULT_WINDOW = (24, 8)
"""Tokens shown before and after an example when the store has no activation windows."""
HISTOGRAM_BINS = 24


def _round(value: float) -> float:
    return float(f"{value:.4g}") if math.isfinite(value) else 0.0


def render_example(store: DictionaryStore, example: Example) -> dict[str, Any]:
    """An example as ``{act, tokens, acts, special, centre}``; tokens empty without an index."""
    ex_store = store.examples
    assert ex_store is not None
    before, after = ex_store.window or DEFAULT_WINDOW
    out: dict[str, Any] = {"act": _round(example.activation), "seq": example.seq,
                           "pos": example.position, "tokens": [], "acts": [], "special": [],
                           "centre": 0}
    context = (store.index.context(example.seq, example.position, before, after)
               if store.index is not None else None)
    if context is None:
        return out
    offset0 = context.start - (example.position - before)
    acts = [0.0] * len(context.texts)
    if example.window is not None:
        for i in range(len(acts)):
            acts[i] = _round(example.window[offset0 + i])
    centre = example.position - context.start
    acts[centre] = out["act"]
    out.update(tokens=context.texts, acts=acts, special=context.special, centre=centre)
    return out


def quantile_groups(store: DictionaryStore, samples: list[Example],
                    n_bins: int) -> list[dict[str, Any]]:
    """Samples (ascending) cut into `n_bins` equal-count groups, highest group first, as in
    `FeatureExamples.quantile_bins`."""
    groups: list[dict[str, Any]] = []
    n = len(samples)
    for b in range(n_bins - 1, -1, -1):
        members = [s for i, s in enumerate(samples) if (i * n_bins) // max(1, n) == b]
        if not members:
            continue
        acts = [m.activation for m in members]
        groups.append({"bin": b, "lo": _round(min(acts)), "hi": _round(max(acts)),
                       "examples": [render_example(store, m) for m in reversed(members)]})
    return groups


def activation_histogram(samples: list[Example], top: list[Example], count: int) -> dict:
    """Histogram of the latent's non-zero activations, estimated from the uniform sample of
    firings (each sampled firing stands for ``count / n_samples`` firings); bins span zero to
    the largest activation seen (the top example)."""
    values = torch.tensor([s.activation for s in samples], dtype=torch.float64)
    hi = max([abs(t.activation) for t in top] + [float(values.abs().max()) if len(values)
                                                    else 0.0])
    if hi <= 0 or not len(values):
        return {"edges": [], "counts": [], "log": False, "sampled": 0}
    lo = min(0.0, float(values.min()))
    counts = torch.histc(values, bins=HISTOGRAM_BINS, min=lo, max=hi)
    scale = count / len(values)
    edges = torch.linspace(lo, hi, HISTOGRAM_BINS + 1).tolist()
    return {"edges": [_round(e) for e in edges], "log": False,
            "counts": [_round(c * scale) for c in counts.tolist()], "sampled": len(values)}


def counted_histogram(counts: list[int], edges: list[float]) -> dict[str, Any]:
    """The store's exact per-latent histogram of |activation| over log-spaced bins, trimmed
    to the bins in use; firings below the first or above the last edge are reported apart."""
    inner = counts[1:-1]
    used = [i for i, c in enumerate(inner) if c]
    if not used:
        return {"edges": [], "counts": [], "log": True, "below": counts[0],
                "above": counts[-1], "sampled": None}
    lo, hi = used[0], used[-1] + 1
    return {"edges": [round(math.log10(e), 4) for e in edges[lo:hi + 1]],
            "counts": inner[lo:hi], "log": True, "below": counts[0], "above": counts[-1],
            "sampled": None}


def feature_payload(store: DictionaryStore, latent: int, n_bins: int = 5) -> dict[str, Any]:
    """Everything on the feature page except the logit lens and similar latents."""
    payload: dict[str, Any] = {"dictionary": store.name, "latent": latent,
                               "explanations": store.explanations.of(latent)}
    ex = store.examples
    if ex is None:
        return payload | {"stats": None, "top": [], "quantiles": [], "histogram": None}
    count = int(ex.counts[latent])
    top = ex.examples("top", latent)
    samples = ex.examples("samples", latent)
    stats = {"count": count, "n_tokens": ex.n_tokens,
             "density": count / max(1, ex.n_tokens),
             "mean": _round(float(ex.sums[latent]) / max(1, count)),
             "max": _round(top[0].activation) if top else 0.0}
    histogram = (counted_histogram(ex.histogram(latent), ex.histogram_edges)
                 if ex.histogram_edges is not None else activation_histogram(samples, top, count))
    payload["images"] = feature_images(store, latent)  # image caches: pictures + heat maps
    return payload | {"stats": stats, "top": [render_example(store, e) for e in top],
                      "quantiles": quantile_groups(store, samples, n_bins),
                      "histogram": histogram}
