"""Write the report folder a person opens after training.

``index.html`` is static and works from ``file://`` with no network: its CSS and JavaScript
are inlined, and the data sits in a sibling ``data.js`` loaded with ``<script src>`` (browsers
block ``fetch`` on ``file://`` pages). Next to it: ``metrics.json`` and the PNG plots.
Every file is written atomically, and ``index.html`` last, so an interrupted run never leaves
a page pointing at missing data.
"""

from __future__ import annotations

import html
import json
import math
import os
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

from torch import Tensor

from sparselens.dictionaries.base import Dictionary
from sparselens.interpretation.examples import FeatureExamples
from sparselens.interpretation.image_examples import ImageExamples
from sparselens.interpretation.image_report import write_image_section
from sparselens.interpretation.plots import (
    density_histogram_png,
    max_activation_histogram_png,
    read_metrics_log,
    training_curves_png,
)
from sparselens.interpretation.report_data import build_report_data
from sparselens.interpretation.report_evaluation import evaluation_payload
from sparselens.io.atomic import atomic_write_bytes, atomic_write_json, atomic_write_text

DATA_VARIABLE = "SPARSELENS_REPORT"


def _asset(name: str) -> str:
    return resources.files("sparselens.interpretation").joinpath("assets", name).read_text()


def render_index(title: str) -> str:
    """The page: the HTML template with the stylesheet and script inlined."""
    page = _asset("report.html")
    for marker, value in (("{{STYLE}}", _asset("report.css")),
                          ("{{SCRIPT}}", _asset("images.js") + _asset("report.js")),
                          ("{{EVALUATION_SCRIPT}}", _asset("report_evaluation.js")),
                          ("{{TITLE}}", html.escape(title))):
        page = page.replace(marker, value)
    return page


def dictionary_meta(dictionary: Dictionary) -> dict[str, Any]:
    """What the header says about the dictionary: architecture and its config."""
    config = {k: v for k, v in dictionary.cfg.to_dict().items()
              if isinstance(v, (int, float, str, bool)) or v is None}
    return {"architecture": dictionary.architecture, "config": config}


def _write_plots(out: Path, examples: FeatureExamples,
                 train_log_path: str | os.PathLike | None) -> list[dict[str, str]]:
    figures = []
    if train_log_path is not None:
        curves = training_curves_png(read_metrics_log(train_log_path))
        if curves is not None:
            figures.append(("training_curves.png", "Training curves against tokens seen",
                            curves))
    figures.append(("feature_density.png", "Feature density (log10 of the firing rate)",
                    density_histogram_png(examples.counts, examples.n_tokens)))
    figures.append(("max_activation.png", "Largest activation per feature",
                    max_activation_histogram_png(examples.max_activation)))
    for name, _, png in figures:
        atomic_write_bytes(out / name, png)
    return [{"file": name, "title": caption, "wide": name == "training_curves.png"}
            for name, caption, _ in figures]


def write_report(out_dir: str | os.PathLike, *, dictionary: Dictionary,
                 examples: FeatureExamples, tokens: Tensor, tokenizer: object,
                 metrics: Mapping[str, Any], train_log_path: str | os.PathLike | None = None,
                 title: str = "sparselens report",
                 image_examples: ImageExamples | None = None,
                 evaluation: Mapping[str, Any] | None = None) -> Path:
    """Write ``index.html``, ``data.js``, ``metrics.json`` and the plots into `out_dir`.

    `tokens` is the ``(n_sequences, context_len)`` token table of the data the examples were
    collected from (``ActivationCache.tokens()``). `image_examples` (an image cache's top
    images, `image_examples.collect_image_heatmaps`) adds pictures with heat maps.
    `evaluation`: the evaluation section's data (`evaluation_payload`), or None for none.
    Returns the path of ``index.html``.
    """
    if examples.n_features != dictionary.cfg.n_latents:
        raise ValueError(f"the examples describe {examples.n_features} features but the "
                         f"dictionary has {dictionary.cfg.n_latents}; collect them with this "
                         "dictionary")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"report output {out} exists and is not a folder; choose another path")
    out.mkdir(parents=True, exist_ok=True)
    metrics = json_safe({**metrics, "examples": example_metrics(examples)})
    atomic_write_json(out / "metrics.json", metrics)
    plots = _write_plots(out, examples, train_log_path)
    data = build_report_data(examples, tokens, tokenizer, meta={"title": title,
                             **dictionary_meta(dictionary)}, metrics=metrics, plots=plots)
    if image_examples is not None:
        data["images"] = write_image_section(out, image_examples)
    data["evaluation"] = evaluation_payload(evaluation)
    payload = json.dumps(data, separators=(",", ":"), allow_nan=False)
    atomic_write_text(out / "data.js", f"window.{DATA_VARIABLE} = {payload};\n")
    atomic_write_text(out / "index.html", render_index(title))
    return out / "index.html"


_OMIT = object()


def json_safe(value: Any) -> Any:
    """`value` as strict JSON data: NaN/inf become None, one-element tensors numbers, and
    anything else JSON cannot hold (big tensors, objects) is left out."""
    if isinstance(value, Mapping):
        items = ((str(k), json_safe(v)) for k, v in value.items())
        return {k: v for k, v in items if v is not _OMIT}
    if isinstance(value, (list, tuple)):
        return [v for v in map(json_safe, value) if v is not _OMIT]
    if isinstance(value, Tensor) and value.numel() == 1:
        value = value.item()
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, (str, int, bool)):
        return value
    return _OMIT


def example_metrics(examples: FeatureExamples) -> dict[str, Any]:
    """Sparsity measured on the tokens the examples were collected from."""
    return {"n_tokens": examples.n_tokens,
            "l0": float(examples.counts.sum()) / max(1, examples.n_tokens),
            "dead_fraction": float((examples.counts == 0).double().mean())}
