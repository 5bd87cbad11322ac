"""The model-diff page: shared and model-specific crosscoder latents with their scores and top
contexts, as one static HTML file (no scripts, works from ``file://``) beside the full feature
browser that `sparselens.interpretation.report` writes for the same crosscoder.

Contexts are plain text with the example token marked, so the page also reads well when
printed or pasted into a note; every string from the data is HTML-escaped.
"""

from __future__ import annotations

import html
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from torch import Tensor

from sparselens.interpretation.examples import FeatureExamples
from sparselens.interpretation.token_text import special_ids, token_texts
from sparselens.io.atomic import atomic_write_text

STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 70em; color: #222; }
table { border-collapse: collapse; margin: .5em 0 1.5em; }
td, th { border: 1px solid #ccc; padding: .2em .6em; text-align: right; }
th { background: #f3f3f3; } td.l, th.l { text-align: left; }
.latent { border-top: 1px solid #ddd; padding: .6em 0; }
.flag { color: #a15c00; font-weight: 600; }
.ctx { font-family: ui-monospace, monospace; white-space: pre-wrap; margin: .15em 0; }
.ctx mark { background: #ffd54a; } .act { color: #777; display: inline-block; width: 5em; }
"""


def example_contexts(examples: FeatureExamples, tokens: Tensor, tokenizer: object, latent: int,
                     n: int = 5, before: int = 16, after: int = 4) -> list[dict[str, Any]]:
    """The top `n` examples of `latent` as text: ``{seq, pos, activation, left, token,
    right}`` (special tokens dropped from the context)."""
    top = examples.top
    specials = special_ids(tokenizer)
    out = []
    for slot in range(min(n, top.seq_ids.shape[1])):
        seq, pos = int(top.seq_ids[latent, slot]), int(top.positions[latent, slot])
        if seq < 0:
            break
        row = tokens[seq].tolist()
        lo, hi = max(0, pos - before), min(len(row), pos + after + 1)
        texts = token_texts(tokenizer, row[lo:hi])
        shown = [t if i not in specials else "" for i, t in zip(row[lo:hi], texts)]
        out.append({"seq": seq, "pos": pos, "activation": float(top.activations[latent, slot]),
                    "left": "".join(shown[:pos - lo]), "token": shown[pos - lo],
                    "right": "".join(shown[pos - lo + 1:])})
    return out


def _number(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return "–" if not math.isfinite(value) else f"{value:.3g}"
    return html.escape(str(value))


def _table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> str:
    head = "".join(f"<th class='l'>{html.escape(c)}</th>" if i == 0 else
                   f"<th>{html.escape(c)}</th>" for i, c in enumerate(columns))
    body = "".join("<tr>" + "".join(
        f"<td class='l'>{_number(r.get(c))}</td>" if i == 0 else f"<td>{_number(r.get(c))}</td>"
        for i, c in enumerate(columns)) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _latent_block(record: Mapping[str, Any], report_link: str | None) -> str:
    j = record["latent"]
    name = f"latent {j}"
    if report_link:
        name = f"<a href='{html.escape(report_link)}#feature-{j}'>{name}</a>"
    scores = (f"Δ norm {_number(record.get('relative_norm'))} · decoder cosine "
              f"{_number(record.get('decoder_cosine'))} · density "
              f"{_number(record.get('density'))}")
    if "nu_error" in record:
        scores += (f" · ν<sup>ε</sup> {_number(record['nu_error'])} · ν<sup>r</sup> "
                   f"{_number(record.get('nu_reconstruction'))}")
    flag = ""
    if record.get("only_apparently_specific"):
        flag = (" <span class='flag'>only apparently specific: the other model holds this "
                "direction too (Latent Scaling)</span>")
    contexts = "".join(
        f"<div class='ctx'><span class='act'>{c['activation']:.3g}</span>"
        f"{html.escape(c['left'])}<mark>{html.escape(c['token'])}</mark>"
        f"{html.escape(c['right'])}</div>" for c in record.get("top", []))
    return f"<div class='latent'><b>{name}</b> — {scores}{flag}{contexts}</div>"


def render_diff_page(title: str, summary: Mapping[str, Any],
                     sections: Sequence[tuple[str, Sequence[Mapping[str, Any]]]],
                     report_link: str | None = None) -> str:
    """The page: a summary (tables of per-source metrics and counts), then one section of
    latent blocks per heading."""
    parts = [f"<h1>{html.escape(title)}</h1>"]
    for caption, rows, columns in summary.get("tables", []):
        parts.append(f"<h3>{html.escape(caption)}</h3>{_table(rows, columns)}")
    if report_link:
        parts.append(f"<p>All latents: <a href='{html.escape(report_link)}'>feature browser</a>"
                     "</p>")
    for heading, records in sections:
        parts.append(f"<h2>{html.escape(heading)} ({len(records)})</h2>")
        parts.extend(_latent_block(r, report_link) for r in records)
    body = "\n".join(parts)
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}"
            f"</title><style>{STYLE}</style></head><body>{body}</body></html>\n")


def write_diff_page(path: str | os.PathLike, title: str, summary: Mapping[str, Any],
                    sections: Sequence[tuple[str, Sequence[Mapping[str, Any]]]],
                    report_link: str | None = None) -> Path:
    """Write the page atomically; returns its path."""
    path = Path(path)
    atomic_write_text(path, render_diff_page(title, summary, sections, report_link))
    return path
