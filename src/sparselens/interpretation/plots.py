"""The report's PNG figures: training curves and feature-density histograms.

Figures are drawn with matplotlib's object API on an Agg canvas (no pyplot, no global
backend switch), so a report can be written from a headless job or a notebook without side
effects, and each function returns PNG bytes for the caller to write atomically.
"""

from __future__ import annotations

import io
import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import EngFormatter, MaxNLocator

_INK = "#1f2933"
_ACCENT = "#d9480f"
_GRID = "#d5dbe1"

TRAINING_PANELS: tuple[tuple[str, tuple[str, ...], float, bool], ...] = (
    ("Loss", ("loss",), 1.0, True),
    ("FVU", ("fvu",), 1.0, False),
    ("L0", ("l0",), 1.0, False),
    ("Dead latents (%)", ("dead_fraction", "dead_frac"), 100.0, False),
)
"""(title, candidate record keys, multiplier, log y-axis) for each training-curve panel."""


def read_metrics_log(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Records of the trainer's JSONL log. A torn last line (a crash mid-write) is ignored;
    a malformed line elsewhere is an error naming the line."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"training log {path} does not exist; pass the metrics.jsonl "
                                "the trainer wrote, or leave the training log out")
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    records = []
    for number, line in enumerate(lines, start=1):
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            if number == len(lines):
                break
            raise ValueError(f"{path}:{number} is not valid JSON ({err}); the training log is "
                             "corrupted") from None
        if not isinstance(record, dict):
            raise ValueError(f"{path}:{number} is not a JSON object")
        records.append(record)
    return records


def _style(ax: Any, title: str, xlabel: str) -> None:
    ax.set_title(title, fontsize=10, color=_INK, loc="left")
    ax.set_xlabel(xlabel, fontsize=9, color=_INK)
    ax.grid(True, color=_GRID, linewidth=0.6)
    ax.tick_params(labelsize=8, colors=_INK)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)


def _png(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    FigureCanvasAgg(fig).print_png(buffer)
    return buffer.getvalue()


def _series(records: Sequence[dict[str, Any]], x_key: str, keys: tuple[str, ...],
            scale: float) -> tuple[list[float], list[float]] | None:
    for key in keys:
        points = [(float(r[x_key]), float(r[key]) * scale) for r in records
                  if isinstance(r.get(key), (int, float)) and isinstance(r.get(x_key), (int, float))
                  and math.isfinite(float(r[key]))]
        if points:
            return [p[0] for p in points], [p[1] for p in points]
    return None


def training_curves_png(records: Sequence[dict[str, Any]]) -> bytes | None:
    """Loss, FVU, L0 and dead % against tokens seen (or steps); None when nothing to plot."""
    x_key = next((k for k in ("tokens", "n_tokens", "step")
                  if any(k in r for r in records)), None)
    if x_key is None:
        return None
    panels = [(title, series, log) for title, keys, scale, log in TRAINING_PANELS
              if (series := _series(records, x_key, keys, scale)) is not None]
    if not panels:
        return None
    fig = Figure(figsize=(3.3 * len(panels), 2.7), dpi=110, layout="constrained")
    xlabel = "tokens" if x_key != "step" else "step"
    for i, (title, (xs, ys), log) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), i + 1)
        ax.plot(xs, ys, color=_ACCENT, linewidth=1.4)
        if log and min(ys) > 0:
            ax.set_yscale("log")
        ax.xaxis.set_major_formatter(EngFormatter(sep=""))
        _style(ax, title, xlabel)
    return _png(fig)


def density_histogram_png(counts: torch.Tensor, n_tokens: int) -> bytes:
    """Histogram of log10 feature density, with the number of dead features in the title."""
    counts = counts.double()
    alive = counts[counts > 0]
    fig = Figure(figsize=(6.4, 3.2), dpi=110, layout="constrained")
    ax = fig.add_subplot(1, 1, 1)
    dead = int((counts == 0).sum())
    if alive.numel():
        log_density = torch.log10(alive / max(1, n_tokens)).numpy()
        ax.hist(log_density, bins=50, color=_ACCENT, alpha=0.85, edgecolor="white",
                linewidth=0.4)
    _style(ax, f"Feature density over {n_tokens:,} tokens ({dead:,} of {counts.numel():,} "
               "never fired)", "log10(fraction of tokens where the feature fires)")
    ax.set_ylabel("features", fontsize=9, color=_INK)
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    return _png(fig)


def max_activation_histogram_png(max_activation: torch.Tensor) -> bytes:
    """Histogram of each live feature's largest activation (its magnitude), on a log x-axis:
    the values span orders of magnitude, and on a linear axis a few strong features squash
    every other into the first bin."""
    values = max_activation[max_activation != 0].double().abs().numpy()
    fig = Figure(figsize=(6.4, 3.2), dpi=110, layout="constrained")
    ax = fig.add_subplot(1, 1, 1)
    if values.size:
        ax.hist(values, bins=log_bins(values), color="#1c7ed6", alpha=0.85,
                edgecolor="white", linewidth=0.4)
        ax.set_xscale("log")
    signed = bool((max_activation < 0).any())
    _style(ax, "Largest activation per feature",
           "|max activation| (log scale)" if signed else "max activation (log scale)")
    ax.set_ylabel("features", fontsize=9, color=_INK)
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    return _png(fig)


def log_bins(values: np.ndarray, n_bins: int = 50) -> np.ndarray:
    """`n_bins` bins evenly spaced in log scale over positive `values` (one decade wide
    around a single repeated value)."""
    low, high = float(values.min()), float(values.max())
    if high <= low * 1.0001:
        low, high = low / 10**0.5, high * 10**0.5
    return np.geomspace(low, high, n_bins + 1)
