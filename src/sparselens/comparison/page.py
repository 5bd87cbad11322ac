"""Static HTML pages for `compare` and `datadiff`: one self-contained file each (plots inline
as PNG, no scripts, opens from disk). Every string from data is HTML-escaped."""

from __future__ import annotations

import base64
import html
import io
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from sparselens.io.atomic import atomic_write_text

STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 72em; color: #222; }
table { border-collapse: collapse; margin: .5em 0 1.5em; }
td, th { border: 1px solid #ccc; padding: .2em .6em; text-align: right; vertical-align: top; }
th { background: #f3f3f3; } td.l, th.l { text-align: left; }
.note { color: #a15c00; }
.ctx { font-family: ui-monospace, monospace; white-space: pre-wrap; margin: .15em 0; }
.ctx mark { background: #ffd54a; } .act { color: #777; display: inline-block; width: 5em; }
.latent { border-top: 1px solid #ddd; padding: .5em 0; }
"""


def cell(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return "–" if not math.isfinite(value) else f"{value:.4g}"
    return html.escape(str(value))


def table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> str:
    """A table of `rows` (dicts) with the given columns; the first column left-aligned."""
    head = "".join(f"<th class='{'l' if i == 0 else ''}'>{html.escape(c)}</th>"
                   for i, c in enumerate(columns))
    body = "".join("<tr>" + "".join(f"<td class='{'l' if i == 0 else ''}'>{cell(r.get(c))}</td>"
                                    for i, c in enumerate(columns)) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def histogram_png(series: Mapping[str, Mapping[str, Sequence[float]]], xlabel: str) -> str:
    """An inline <img> of one or more histograms given as {label: {counts, edges}}."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 3.2), dpi=100)
    for label, hist in series.items():
        edges = list(hist["edges"])
        ax.stairs(list(hist["counts"]), edges, label=label)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("matched pairs")
    ax.legend()
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    data = base64.b64encode(buffer.getvalue()).decode()
    return f"<img alt='{html.escape(xlabel)} histogram' src='data:image/png;base64,{data}'>"


def contexts_html(contexts: Sequence[Mapping[str, Any]]) -> str:
    """Example contexts ({activation, left, token, right}) with the token marked."""
    return "".join(f"<div class='ctx'><span class='act'>{c['activation']:.3g}</span>"
                   f"{html.escape(c['left'])}<mark>{html.escape(c['token'])}</mark>"
                   f"{html.escape(c['right'])}</div>" for c in contexts)


def latent_html(title: str, details: str, contexts: Sequence[Mapping[str, Any]] = (),
                explanation: str | None = None) -> str:
    name = f"<b>{html.escape(title)}</b>"
    if explanation:
        name += f" <i>{html.escape(explanation)}</i>"
    return f"<div class='latent'>{name} — {html.escape(details)}{contexts_html(contexts)}</div>"


def write_page(path: str | os.PathLike, title: str, sections: Sequence[tuple[str, str]]) -> Path:
    """Write the page atomically: a title, then (heading, html body) sections."""
    body = [f"<h1>{html.escape(title)}</h1>"]
    for heading, content in sections:
        body.append(f"<h2>{html.escape(heading)}</h2>{content}")
    text = (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}"
            f"</title><style>{STYLE}</style></head><body>{''.join(body)}</body></html>\n")
    path = Path(path)
    atomic_write_text(path, text)
    return path
