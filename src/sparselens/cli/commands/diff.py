"""``sparselens diff --model-a A --model-b B --hookpoint resid.6``: what one model has that the
other lacks. The pipeline is `sparselens.pipelines.diff`; every step resumes in --out."""

from __future__ import annotations

from dataclasses import dataclass

from sparselens.pipelines.diff import DiffConfig

NAME = "diff"
HELP = ("Compare two models (e.g. base and fine-tuned): harvest one hookpoint of both on the "
        "same tokens, train a BatchTopK crosscoder, and report shared and model-specific "
        "latents with Latent Scaling scores and top contexts.")


@dataclass
class Config(DiffConfig):
    pass


def run(cfg: Config) -> int:
    from sparselens.pipelines.diff import diff

    result = diff(cfg)
    counts = result.counts
    print(f"{counts['b_only']} latents specific to B, {counts['a_only']} to A, "
          f"{counts['shared']} shared, {counts['changed']} changed (of {cfg.n_latents}); "
          f"page {result.page}, scores {result.page.parent / 'diff.json'}")
    return 0
