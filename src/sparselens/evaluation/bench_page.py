"""The comparison page of a bench run: each headline metric against L0, and a table.

SAEBench plots every metric against L0 because sparsity trades against everything else; the
same view here (matplotlib, one point per dictionary) with the numbers in a table beside.
`headline_metrics` is also what the HTML report shows in its evaluation section.
"""

from __future__ import annotations

import html
import math
from pathlib import Path
from typing import Any

from sparselens.io.atomic import atomic_open, atomic_write_bytes

HEADLINES: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    # (label, better, path in the record)
    ("FVU", "lower", ("reconstruction", "fvu")),
    ("dead fraction", "lower", ("reconstruction", "dead_fraction")),
    ("sparse probing top-1 acc.", "higher", ("sparse_probing", "sae_top_1_accuracy")),
    ("sparse probing top-5 acc.", "higher", ("sparse_probing", "sae_top_5_accuracy")),
    ("dense probe acc.", "reference", ("sparse_probing", "llm_accuracy")),
    ("absorption fraction", "lower", ("absorption", "mean_absorption_fraction")),
    ("full absorption rate", "lower", ("absorption", "full_absorption_rate")),
    ("split features / letter", "lower", ("absorption", "num_split_features")),
    ("TPP (N=20)", "higher", ("tpp", "tpp_20")),
    ("SCR (N=20)", "higher", ("scr", "scr_20")),
    ("linear error fraction", "-", ("dark_matter", "linear_error_fraction")),
    ("nonlinear error FVU", "lower", ("dark_matter", "nonlinear_error_fvu")),
    ("decoder mean max |cos|", "lower", ("geometry", "mean_max_abs_cos")),
    ("PW-MCC (seeds)", "higher", ("consistency", "mean_pw_mcc")),
    ("matched > 0.7 (seeds)", "higher", ("consistency", "mean_fraction_matched")),
    ("synthetic recovered > 0.9", "higher", ("synthetic", "fraction_recovered")),
    ("synthetic MMCS", "higher", ("synthetic", "mean_max_cosine")),
)


def _get(record: dict[str, Any], path: tuple[str, ...]) -> Any:
    value: Any = record
    for key in path:
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value


def headline_metrics(record: dict[str, Any]) -> dict[str, float | str | None]:
    """Label -> value (a float, the reason a metric was skipped, or None if not run)."""
    out: dict[str, float | str | None] = {"L0": _get(record, ("reconstruction", "l0"))}
    for label, _, path in HEADLINES:
        section = record.get(path[0])
        if isinstance(section, dict) and "skipped" in section:
            out[label] = f"skipped: {section['skipped']}"
        else:
            value = _get(record, path)
            out[label] = float(value) if isinstance(value, (int, float)) else None
    return out


def _plot(records: dict[str, dict[str, Any]], path: Path) -> bool:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = {name: headline_metrics(r) for name, r in records.items()}
    plotted = [(label, better) for label, better, _ in HEADLINES
               if any(isinstance(v[label], float) and isinstance(v["L0"], float)
                      for v in rows.values())]
    if not plotted:
        return False
    cols = 3
    fig, axes = plt.subplots(math.ceil(len(plotted) / cols), cols,
                             figsize=(4.2 * cols, 3.3 * math.ceil(len(plotted) / cols)),
                             squeeze=False)
    for ax, (label, better) in zip(axes.flat, plotted):
        for i, (name, values) in enumerate(rows.items()):
            x, y = values["L0"], values[label]
            if isinstance(x, float) and isinstance(y, float):
                ax.scatter([x], [y], color=plt.get_cmap("tab10")(i % 10), label=name)
        ax.set_xscale("log")
        ax.set_xlabel("L0")
        ax.set_title(f"{label} ({better} is better)" if better in ("lower", "higher")
                     else label, fontsize=9)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(plotted):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7)
    fig.tight_layout()
    with atomic_open(path, "wb") as handle:
        fig.savefig(handle, format="png", dpi=100)
    plt.close(fig)
    return True


def _cell(value: float | str | None) -> str:
    if value is None:
        return "<td>—</td>"
    if isinstance(value, str):
        return f'<td title="{html.escape(value)}">skipped</td>'
    return f"<td>{value:.4g}</td>"


def write_comparison(records: dict[str, dict[str, Any]], out: Path) -> Path:
    """``OUT/pareto.png`` and ``OUT/index.html`` (a table with one row per dictionary)."""
    out.mkdir(parents=True, exist_ok=True)
    has_plot = _plot(records, out / "pareto.png")
    labels = ["L0", *[label for label, _, _ in HEADLINES]]
    head = "".join(f"<th>{html.escape(label)}</th>" for label in labels)
    body = "".join(
        f"<tr><th>{html.escape(name)}</th>"
        + "".join(_cell(headline_metrics(r)[label]) for label in labels) + "</tr>"
        for name, r in records.items())
    image = '<img src="pareto.png" alt="each metric against L0">' if has_plot else ""
    page = (f"<!doctype html><meta charset=utf-8><title>sparselens bench</title>"
            f"<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}"
            f"td,th{{border:1px solid #ccc;padding:3px 6px;font-size:13px}}</style>"
            f"<h1>Evaluation suite</h1><p>Metrics on held-out data; definitions in "
            f"docs/evaluation.md. Hover a 'skipped' cell for the reason.</p>"
            f"<table><tr><th>dictionary</th>{head}</tr>{body}</table>{image}")
    atomic_write_bytes(out / "index.html", page.encode())
    return out / "index.html"


def evaluation_rows(path: str | Path) -> list[tuple[str, str]]:
    """(label, shown value) pairs of a bench or eval JSON, for the HTML report's evaluation
    section. Metrics not run are left out; skipped ones show their reason."""
    from sparselens.evaluation.results import read_results

    rows = []
    for label, value in headline_metrics(read_results(path)).items():
        if isinstance(value, float):
            rows.append((label, f"{value:.4g}"))
        elif isinstance(value, str):
            rows.append((label, value))
    return rows


SECTION_ORDER = ("reconstruction", "geometry", "dark_matter", "sparse_probing", "tpp", "scr",
                 "absorption", "consistency", "synthetic")
BESIDE_NAME = "bench.json"
"""The record `run_bench` also writes into each dictionary's folder, where the report finds
it."""


def _scalars(section: dict[str, Any]) -> list[tuple[str, float | str]]:
    """A section's own numbers and strings (nested per-task/per-letter detail left out)."""
    rows: list[tuple[str, float | str]] = []
    for key, value in section.items():
        if key in ("seconds", "cpu_seconds", "cached", "loadavg") or isinstance(value, bool):
            continue
        if isinstance(value, (int, float)) and math.isfinite(value):
            rows.append((key, float(value)))
        elif isinstance(value, str):
            rows.append((key, value))
    return rows


def evaluation_section(path: str | Path) -> dict[str, Any]:
    """What the HTML report's evaluation section shows for a bench (or eval) JSON: the
    headline rows (`evaluation_rows`) and, per metric section that ran, its own numbers or
    the reason it was skipped, with the seconds it took."""
    from sparselens.evaluation.results import read_results

    record = read_results(path)
    seconds = (record.get("bench") or {}).get("seconds") or {}
    sections = []
    for name in SECTION_ORDER:
        section = record.get(name)
        if not isinstance(section, dict):
            continue
        suite = "probing" if name == "sparse_probing" else name
        sections.append({"name": name, "skipped": section.get("skipped"),
                         "rows": [] if "skipped" in section else _scalars(section),
                         "seconds": seconds.get(suite)})
    return {"file": str(Path(path).resolve()), "headline": evaluation_rows(path),
            "sections": sections}
