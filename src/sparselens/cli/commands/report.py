"""``sparselens report CHECKPOINT --cache CACHE --out DIR``: the static HTML feature report."""

from __future__ import annotations

from dataclasses import dataclass

from sparselens.cli.options import positional
from sparselens.pipelines.report import ReportConfig

NAME = "report"
HELP = ("Collect each feature's top-activating and quantile-sampled contexts from an "
        "activation cache and write a static HTML report (opens offline from file://) with "
        "metrics and plots.")


@dataclass
class Config(ReportConfig):
    checkpoint: str = positional("")
    """Dictionary folder: a training output folder or one of its checkpoints/step_N."""


def run(cfg: Config) -> int:
    from sparselens.pipelines.report import write_feature_report

    result = write_feature_report(cfg)
    print(f"report on {result.examples.n_tokens:,} tokens written to {result.index}")
    return 0
