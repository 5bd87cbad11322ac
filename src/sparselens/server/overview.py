"""The overview page's JSON: per dictionary its metrics, training curves and feature-density
histogram; across dictionaries the Pareto points (L0 against FVU and against loss recovered).

Figures are sent as numbers and drawn by the page (SVG), so nothing here depends on the
dictionary's width beyond one pass over its firing counts.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from sparselens.interpretation.plots import TRAINING_PANELS, read_metrics_log
from sparselens.interpretation.report_data import flatten_metrics, headline_metrics
from sparselens.server.store import DictionaryStore

DENSITY_BINS = 40
CURVE_POINTS = 400
PARETO_AXES = (("l0", ("l0",)), ("fvu", ("fvu",)),
               ("loss_recovered", ("loss_recovered", "ce_loss_recovered", "frac_recovered")))


def density_histogram(store: DictionaryStore) -> dict[str, Any] | None:
    """Histogram of log10(firing rate) over latents that fired, and how many never did."""
    ex = store.examples
    if ex is None or ex.n_tokens == 0:
        return None
    counts = ex.counts.double()
    alive = counts[counts > 0]
    dead = int((counts == 0).sum())
    if not alive.numel():
        return {"edges": [], "counts": [], "dead": dead, "n_tokens": ex.n_tokens}
    log_density = torch.log10(alive / ex.n_tokens)
    lo, hi = float(log_density.min()), float(log_density.max())
    if hi - lo < 1e-6:
        lo, hi = lo - 0.5, hi + 0.5
    hist = torch.histc(log_density, bins=DENSITY_BINS, min=lo, max=hi)
    edges = torch.linspace(lo, hi, DENSITY_BINS + 1)
    return {"edges": [round(e, 4) for e in edges.tolist()], "counts": hist.long().tolist(),
            "dead": dead, "n_tokens": ex.n_tokens}


def training_curves(store: DictionaryStore) -> dict[str, Any] | None:
    """The trainer's metrics log, at most `CURVE_POINTS` points per panel."""
    path = store.train_log()
    if path is None:
        return None
    try:
        records = read_metrics_log(path)
    except ValueError:
        return None
    x_key = next((k for k in ("tokens", "n_tokens", "step") if any(k in r for r in records)),
                 None)
    if x_key is None:
        return None
    stride = max(1, math.ceil(len(records) / CURVE_POINTS))
    panels = []
    for title, keys, scale, log in TRAINING_PANELS:
        for key in keys:
            points = [[float(r[x_key]), float(r[key]) * scale] for r in records[::stride]
                      if isinstance(r.get(key), (int, float)) and isinstance(r.get(x_key),
                                                                             (int, float))
                      and math.isfinite(float(r[key]))]
            if points:
                panels.append({"title": title, "log": log, "points": points})
                break
    return {"x": x_key, "panels": panels} if panels else None


def _metric(flat: dict[str, Any], names: tuple[str, ...]) -> float | None:
    for key, value in flat.items():
        if key.rsplit(".", 1)[-1].lower() in names and isinstance(value, (int, float)) \
                and not isinstance(value, bool) and math.isfinite(value):
            return float(value)
    return None


def dictionary_overview(store: DictionaryStore) -> dict[str, Any]:
    flat = flatten_metrics(store.metrics())
    return {**store.describe(), "config": {k: v for k, v in store.config.items()
                                           if isinstance(v, (int, float, str, bool))},
            "metrics": flat, "headline": headline_metrics(flat),
            "density": density_histogram(store), "curves": training_curves(store),
            "pareto": {axis: _metric(flat, names) for axis, names in PARETO_AXES}}


def overview(stores: Sequence[DictionaryStore]) -> dict[str, Any]:
    dictionaries = [dictionary_overview(s) for s in stores]
    return {"dictionaries": dictionaries,
            "pareto": [{"name": d["name"], **d["pareto"]} for d in dictionaries
                       if d["pareto"]["l0"] is not None] if len(stores) > 1 else []}
