"""Write a `Comparison` as ``compare.json`` and the page ``index.html``."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from torch import Tensor

from sparselens.comparison.compare import Comparison
from sparselens.comparison.page import histogram_png, latent_html, table, write_page
from sparselens.interpretation.diff_page import example_contexts
from sparselens.interpretation.report import json_safe
from sparselens.io.atomic import atomic_write_json


def _matching_rows(result: Comparison) -> list[dict[str, Any]]:
    rows = []
    for label, m in (("decoder cosine", result.decoder),
                     ("activation correlation", result.activation)):
        if m is None:
            continue
        above = m.summary()["fraction_above"]
        rows.append({"measure": label, "solver": m.method, "matched": int(m.rows.size),
                     "PW-MCC": m.pwmcc, "upper bound": m.upper_bound,
                     ">= 0.5": above["0.5"], ">= 0.7": above["0.7"], ">= 0.9": above["0.9"]})
    return rows


def _universality_rows(result: Comparison) -> list[dict[str, Any]]:
    if result.universality is None:
        return []
    summary = result.universality.summary()
    return [{"measure": name.upper(), "paired": summary[name]["paired"],
             "random pairings (mean)": summary[name]["random_mean"],
             "random (std)": summary[name]["random_std"], "p-value": summary[name]["p_value"]}
            for name in ("svcca", "cka")]


def _svcca_note(result: Comparison) -> str:
    note = result.universality.svcca_note() if result.universality else None
    return f"<p class='note'>{note}</p>" if note else ""


def _novel_html(result: Comparison, side: str, limit: int, tokens: Tensor | None,
                tokenizer: object | None, names: dict[int, str]) -> str:
    latents = result.novel[side][:limit]
    if not latents:
        return "<p>None.</p>"
    shared = result.shared
    examples = None if shared is None else (shared.examples_a if side == "A"
                                            else shared.examples_b)
    matching = result.decoder or result.activation
    best = None if matching is None else (matching.best_a if side == "A" else matching.best_b)
    blocks = []
    for j in latents:
        details = f"best similarity in the other dictionary {best[j]:.3f}" if best is not None \
            else ""
        contexts: list = []
        if examples is not None:
            details += f" · density {float(examples.density[j]):.3g}"
            if tokens is not None and tokenizer is not None:
                contexts = example_contexts(examples, tokens, tokenizer, j, n=3)
        blocks.append(latent_html(f"latent {j}", details, contexts, names.get(j)))
    more = len(result.novel[side]) - len(latents)
    return "".join(blocks) + (f"<p>… and {more} more in compare.json</p>" if more > 0 else "")


def write_comparison(result: Comparison, out: str | os.PathLike, tokens: Tensor | None = None,
                     tokenizer: object | None = None, n_listed: int = 30,
                     explanations: tuple[dict[int, str], dict[int, str]] = ({}, {})) -> Path:
    """``out/compare.json`` and ``out/index.html``; returns the page's path."""
    out = Path(out)
    atomic_write_json(out / "compare.json", json_safe(result.record()))
    a, b = result.names
    sections = [("Dictionaries", table([{"": "A", "dictionary": a, "latents": result.n_latents[0]},
                                        {"": "B", "dictionary": b,
                                         "latents": result.n_latents[1]}],
                                       ["", "dictionary", "latents"]))]
    if result.decoder_note:
        sections[0] = (sections[0][0], sections[0][1] +
                       f"<p class='note'>{result.decoder_note}</p>")
    rows = _matching_rows(result)
    if rows:
        hists = {r["measure"]: m.summary()["histogram"] for r, m in
                 zip(rows, [m for m in (result.decoder, result.activation) if m is not None])}
        sections.append(("One-to-one matching (PW-MCC)", table(rows, list(rows[0])) +
                         "<p>PW-MCC: mean similarity of the optimal one-to-one matching (Song "
                         "et al. 2025). Upper bound: mean best similarity per latent; the sparse "
                         "solver is provably optimal when they agree.</p>" +
                         histogram_png(hists, "similarity of matched pairs")))
    if result.shared is not None:
        sections.append(("Universality of the paired feature spaces (Lan et al.)",
                         table(_universality_rows(result), ["measure", "paired",
                               "random pairings (mean)", "random (std)", "p-value"])
                         + _svcca_note(result)
                         if result.universality else "<p>Too few pairs above the minimum "
                         "correlation.</p>"))
    if result.splits:
        split_rows = [{"latent (smaller)": s.latent, "children (larger)": s.children,
                       "weights": [round(w, 3) for w in s.weights], "cosine": s.cosine,
                       "best single": s.single_cosine} for s in result.splits[:n_listed]]
        sections.append((f"Feature splitting ({len(result.splits)} latents split)",
                         table(split_rows, list(split_rows[0]))))
    for side, label in (("B", b), ("A", a)):
        names = explanations[0] if side == "A" else explanations[1]
        sections.append((f"Novel in {side} ({label}): {len(result.novel[side])} latents",
                         _novel_html(result, side, n_listed, tokens, tokenizer, names)))
    return write_page(out / "index.html", f"Comparing {a} and {b}", sections)
