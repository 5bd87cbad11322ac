"""``sparselens eval CHECKPOINT --cache CACHE``: reconstruction and spliced-in metrics as JSON."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sparselens.cli.options import positional
from sparselens.pipelines.evaluate import EvalConfig

NAME = "eval"
HELP = ("Evaluate a dictionary on the held-out split of an activation cache: MSE, explained "
        "variance, L0, dead/dense latents, and spliced-in CE/KL/loss recovered. Writes JSON "
        "(schema: docs/evaluation.md).")


@dataclass
class Config(EvalConfig):
    checkpoint: str = positional("")
    """Dictionary folder: a training output folder or one of its checkpoints/step_N."""


def run(cfg: Config) -> int:
    from sparselens.pipelines.evaluate import evaluate

    result = evaluate(cfg)
    _print_summary(result.record, result.path)
    return 0


def _print_summary(record: dict[str, Any], out: Path) -> None:
    recon, spliced = record["reconstruction"], record["spliced"]
    print(f"reconstruction on {recon['n_tokens']} held-out tokens: FVU {recon['fvu']:.4f}, "
          f"MSE {recon['mse']:.4g}, cos {recon['cosine_similarity']:.4f}, L0 {recon['l0']:.1f}, "
          f"dead {100 * recon['dead_fraction']:.1f}%, dense {100 * recon['dense_fraction']:.1f}%")
    for r in recon.get("per_source", []):
        print(f"  {r['source']}: FVU {r['fvu']:.4f}, L0 {r['l0']:.1f}")
    for warning in recon.get("warnings", []):
        print(f"WARNING: {warning}", file=sys.stderr)
    if spliced and "per_source" in spliced:
        for r in spliced["per_source"]:
            print(f"  {r['source']} spliced: CE clean {r['ce_clean']:.4f}, spliced "
                  f"{r['ce_spliced']:.4f}, KL {r['kl_spliced']:.4f}, loss recovered "
                  f"{r['loss_recovered']:.4f}")
    elif spliced:
        print(f"spliced on {spliced['n_predictions']} predictions: CE clean "
              f"{spliced['ce_clean']:.4f}, spliced {spliced['ce_spliced']:.4f}, zero-ablated "
              f"{spliced['ce_zero_ablation']:.4f}, KL {spliced['kl_spliced']:.4f}, loss "
              f"recovered {spliced['loss_recovered']:.4f}")
    print(f"results written to {out}")
