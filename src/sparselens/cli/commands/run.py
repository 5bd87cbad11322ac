"""``sparselens run``: the main job, end to end on the embedded defaults.

harvest (or reuse the cache) -> train (or resume) -> evaluate -> report; the pipeline is
`sparselens.pipelines.run`, and every stage resumes.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

from sparselens.pipelines.run import STAGES, RunConfig

NAME = "run"
HELP = ("The main job: harvest activations of a model, train a sparse dictionary on them, "
        "evaluate it on held-out tokens and write a report folder (about ten minutes on 2 CPU "
        "cores with the defaults). Re-running resumes every stage.")


@dataclass
class Config(RunConfig):
    pass


def run(cfg: Config) -> int:
    from sparselens.pipelines.run import run as run_pipeline

    result = run_pipeline(cfg, on_stage=_stage)
    _summary(result.dictionary / "eval.json", result.report.parent)
    _next_steps(result.dictionary, result.cache)
    return 0


def _stage(index: int, name: str, where: Path) -> None:
    print(f"\n== [{index}/{len(STAGES)}] {name} -> {where}", flush=True)


def _summary(eval_path: Path, report: Path) -> None:
    from sparselens.pipelines.run import summary_line

    record = json.loads(eval_path.read_text())
    line = summary_line(record, eval_path.parent / "metrics.jsonl")
    print(f"\n{line}\nreport: {(report / 'index.html').resolve()}")
    for warning in record["reconstruction"].get("warnings", []):
        print(f"WARNING: {warning}", file=sys.stderr)


def _next_steps(dictionary: Path, cache: Path) -> None:
    """What the newcomer can do with the dictionary just made, each one command."""
    print("\nnext, with this dictionary:")
    for command, what in (
            (f"sparselens serve {dictionary} --cache {cache}",
             "browse its features (http://127.0.0.1:8000)"),
            (f"sparselens bench {dictionary} --cache {cache}", "the evaluation suite"),
            (f"sparselens explain {dictionary} --cache {cache} --latents 0:20",
             "explain latents with a local LLM"),
            (f"sparselens steer {dictionary} --concept-words rain weather --coef 400",
             "steer the model with the latent closest to a concept")):
        print(f"  {command}\n      {what}")
