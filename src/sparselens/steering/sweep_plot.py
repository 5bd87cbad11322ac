"""The trade-off plot of a coefficient sweep: concept strength against coefficient, and
concept strength against fluency (perplexity), one line per steer."""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from sparselens.io.atomic import atomic_write_bytes


class Curves(Protocol):
    """What the plot reads of a `sweep.SweepResult` (typed here so that sweep.py, which calls
    the plot, is not imported back)."""

    concept: str
    curves: Sequence[Any]


def plot_sweep(result: Curves, path: str | Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    for curve in result.curves:
        coefs = [p.coef for p in curve.points]
        sims = [p.concept_similarity for p in curve.points]
        ppls = [p.perplexity for p in curve.points]
        left.plot(coefs, sims, marker="o", label=curve.label)
        (line,) = right.plot(ppls, sims, marker="o", label=curve.label)
        for coef, ppl, sim in zip(coefs, ppls, sims):
            right.annotate(f"{coef:.3g}", (ppl, sim), fontsize=7, color=line.get_color(),
                           xytext=(3, 3), textcoords="offset points")
    left.set_xlabel("steering coefficient")
    left.set_ylabel("concept similarity (MiniLM cosine)")
    concept = "".join(c if c.isprintable() else "?" for c in result.concept[:60])
    left.set_title(f"concept: {concept}")
    right.set_xscale("log")
    right.set_xlabel("perplexity under the unedited model (log)")
    right.set_ylabel("concept similarity")
    right.set_title("trade-off (labels: coefficient)")
    for ax in (left, right):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    atomic_write_bytes(path, buffer.getvalue())
