"""The main job, end to end: harvest (or reuse the cache) -> train (or resume) -> evaluate ->
report. Every stage resumes, so running the same config again after an interruption continues
where it stopped, and running it after it finished redoes nothing that was paid for."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sparselens.data.corpus import CorpusConfig
from sparselens.data.harvest import HarvestConfig
from sparselens.dictionaries import REGISTRY
from sparselens.models.source import load_model
from sparselens.pipelines.evaluate import EvalConfig, evaluate
from sparselens.pipelines.harvest import harvest_corpus
from sparselens.pipelines.report import ReportConfig, write_feature_report
from sparselens.pipelines.train import train_on_cache
from sparselens.training.config import LogConfig, TrainConfig

STAGES = ("harvest", "train", "evaluate", "report")


@dataclass
class RunConfig:
    out: str = "runs/default"
    """Run folder: cache/, sae/ (dictionary, checkpoints, metrics.jsonl, eval.json), report/."""
    model: str = "gemma-3-270m"
    """Embedded model name, local Hugging Face directory, or .gguf file."""
    hookpoint: str = "resid.6"
    """Where to read activations (see `sparselens hookpoints MODEL`)."""
    corpus: CorpusConfig = field(default_factory=CorpusConfig)
    """Where the text comes from (the built-in offline corpus by default)."""
    harvest_tokens: int = 500_000
    """Tokens to harvest into the cache (5% of sequences are held out for evaluation)."""
    context_len: int = 128
    """Tokens per sequence."""
    model_dtype: str = "auto"
    """Dtype the model runs in while harvesting. auto: bfloat16 where the hardware has native
    bf16 GEMMs (AMX, AVX-512-BF16, recent GPUs: about 2x faster), else float32 (bf16 is
    emulated there and many times slower)."""
    architecture: str = "topk"
    """Dictionary variant by registry name (topk, batchtopk, jumprelu, matryoshka, ...)."""
    n_latents: int = 8192
    """Dictionary width."""
    k: int = 32
    """Active latents per token for the TopK family."""
    train_tokens: int = 1_500_000
    """Training budget in tokens (the cache is read in several shuffled epochs if smaller)."""
    batch_size: int = 4096
    """Tokens per optimizer step."""
    autocast: str | None = "auto"
    """Train under torch.autocast in this dtype: bfloat16 (about 2x faster on CPUs with AMX or
    AVX-512 BF16 and on GPUs, same FVU in docs/performance.md) or float32 (none). auto:
    bfloat16 where the hardware has it, else float32; the choice is printed."""
    eval_sequences: int = 32
    """Held-out sequences for the spliced-in CE/KL evaluation (full forwards with logits)."""
    report_tokens: int = 300_000
    """Tokens scanned for each feature's top-activating contexts."""
    device: str = "cpu"
    """Device (cpu, cuda, ...)."""
    seed: int = 0
    """Seed for the held-out split, the data order and the initial weights."""


@dataclass
class RunResult:
    cache: Path
    dictionary: Path
    """The trained dictionary's folder (with metrics.jsonl and eval.json)."""
    evaluation: dict[str, Any]
    """The eval.json record (docs/evaluation.md)."""
    report: Path
    """The report's index.html."""

    def summary(self) -> str:
        """One line of results (see `summary_line`)."""
        return summary_line(self.evaluation, self.dictionary / "metrics.jsonl")


def run(cfg: RunConfig, on_stage: Callable[[int, str, Path], None] | None = None
        ) -> RunResult:
    """Run every stage into ``cfg.out``; `on_stage(index, name, where)` is told as each
    starts (the CLI prints it)."""
    out = Path(cfg.out)
    cache_dir, sae, report = out / "cache", out / "sae", out / "report"
    # Built (and so validated) before the harvest, not minutes later when training starts.
    training = TrainConfig(
        architecture=cfg.architecture, n_latents=cfg.n_latents,
        dictionary={"k": cfg.k} if "k" in _variant_fields(cfg.architecture) else {},
        n_tokens=cfg.train_tokens, batch_size=cfg.batch_size, seed=cfg.seed, device=cfg.device,
        autocast=cfg.autocast, log=LogConfig(every_steps=10))
    stage = on_stage or (lambda index, name, where: None)
    stage(1, "harvest", cache_dir)
    loaded = load_model(cfg.model, dtype=cfg.model_dtype, device=cfg.device)
    cache = harvest_corpus(loaded, cfg.corpus, [cfg.hookpoint], cache_dir, cfg.context_len,
                           HarvestConfig(max_tokens=cfg.harvest_tokens, seed=cfg.seed))
    del loaded
    stage(2, "train", sae)
    train_on_cache(training, cache, sae, resume=True, reuse=True)
    stage(3, "evaluate", sae / "eval.json")
    evaluation = evaluate(EvalConfig(checkpoint=str(sae), cache=str(cache_dir),
                                     max_sequences=cfg.eval_sequences, device=cfg.device))
    stage(4, "report", report)
    written = write_feature_report(ReportConfig(checkpoint=str(sae), cache=str(cache_dir),
                                                out=str(report), max_tokens=cfg.report_tokens,
                                                device=cfg.device))
    return RunResult(cache_dir, sae, evaluation.record, written.index)


def summary_line(evaluation: dict[str, Any], metrics: Path) -> str:
    """FVU, L0, the two dead fractions and loss recovered. Two dead fractions, since they
    answer different questions: latents the trainer saw unfired for its whole dead window (the
    last line of `metrics`), and latents unfired on the evaluation's held-out tokens (rare
    latents count there too)."""
    recon, spliced = evaluation["reconstruction"], evaluation.get("spliced") or {}
    parts = [f"FVU {recon['fvu']:.3f}", f"L0 {recon['l0']:.1f}"]
    training_dead = last_dead_fraction(metrics)
    held_out = (f"{100 * recon['dead_fraction']:.1f}% unfired on {recon['n_tokens']:,} "
                "held-out tokens")
    parts.append(held_out if training_dead is None
                 else f"dead {100 * training_dead:.1f}% in training ({held_out})")
    if spliced:
        parts.append(f"loss recovered {spliced['loss_recovered']:.3f}")
    return " | ".join(parts)


def last_dead_fraction(metrics: Path) -> float | None:
    """The trainer's dead fraction at its last logged step, if it logged one."""
    if not metrics.exists():
        return None
    lines = [line for line in metrics.read_text().splitlines() if line.strip()]
    for line in reversed(lines):
        value = json.loads(line).get("dead_fraction")
        if value is not None:
            return float(value)
    return None


def _variant_fields(architecture: str) -> set[str]:
    if architecture not in REGISTRY:
        raise ValueError(f"unknown architecture {architecture!r}; known: {sorted(REGISTRY)}")
    return {f.name for f in dataclasses.fields(REGISTRY[architecture].config_class)}
