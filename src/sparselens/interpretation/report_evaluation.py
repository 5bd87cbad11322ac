"""The report's evaluation section: the `sparselens bench` metrics of the dictionary.

The interpretation layer does not import the evaluation layer (they are siblings in the layer
contract), so the pipeline reads the bench JSON (``evaluation.bench_page.evaluation_section``)
and hands the result in as plain data. Here it is only checked and made strict JSON; the page
renders it with ``assets/report_evaluation.js`` into the ``#evaluation`` section, which stays
hidden when there is no bench JSON.

Shape: ``{"file": str, "headline": [[label, shown value], ...], "sections": [{"name": str,
"skipped": reason or None, "rows": [[key, number or str], ...], "seconds": float or None},
...]}``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any


def _value(value: Any) -> float | str | None:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (int, float)):
        return float(f"{value:.4g}") if math.isfinite(value) else None
    return None if value is None else str(value)


def evaluation_payload(evaluation: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """`evaluation` checked and rounded to 4 significant digits; None stays None."""
    if evaluation is None:
        return None
    if not isinstance(evaluation.get("headline"), list) or not isinstance(
            evaluation.get("sections"), list):
        raise ValueError("the evaluation section needs 'headline' and 'sections' lists "
                         "(evaluation.bench_page.evaluation_section makes them)")
    sections = []
    for section in evaluation["sections"]:
        sections.append({"name": str(section["name"]),
                         "skipped": _value(section.get("skipped")),
                         "seconds": _value(section.get("seconds")),
                         "rows": [[str(key), _value(value)]
                                  for key, value in section.get("rows", [])]})
    return {"file": str(evaluation.get("file", "")),
            "headline": [[str(label), str(value)] for label, value in evaluation["headline"]],
            "sections": sections}
