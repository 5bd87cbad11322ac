"""``sparselens run``: the main job, end to end on the embedded defaults.

harvest (or reuse the cache) -> train (or resume) -> evaluate -> report. Every stage is the
same code as its own subcommand, called with settings derived from this one config, and every
stage resumes: running the command again after an interruption continues where it stopped.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

from sparselens.data.corpus import CorpusConfig

NAME = "run"
HELP = ("The main job: harvest activations of a model, train a sparse dictionary on them, "
        "evaluate it on held-out tokens and write a report folder (about ten minutes on 2 CPU "
        "cores with the defaults). Re-running resumes every stage.")


@dataclass
class Config:
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
    model_dtype: str = "bfloat16"
    """Dtype the model runs in while harvesting (bfloat16 is about 2x faster on AVX-512 CPUs)."""
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
    autocast: str | None = None
    """Train under torch.autocast in this dtype (bfloat16: about 2x faster training on CPUs
    with AVX-512 BF16 or AMX and on GPUs, same FVU in docs/performance.md); None: float32."""
    eval_sequences: int = 32
    """Held-out sequences for the spliced-in CE/KL evaluation (full forwards with logits)."""
    report_tokens: int = 300_000
    """Tokens scanned for each feature's top-activating contexts."""
    device: str = "cpu"
    """Device (cpu, cuda, ...)."""
    seed: int = 0
    """Seed for the held-out split, the data order and the initial weights."""


def run(cfg: Config) -> int:
    from sparselens.cli.commands import eval as eval_cmd
    from sparselens.cli.commands import harvest as harvest_cmd
    from sparselens.cli.commands import report as report_cmd
    from sparselens.cli.commands import train as train_cmd
    from sparselens.training.config import LogConfig

    out = Path(cfg.out)
    cache, sae, report = out / "cache", out / "sae", out / "report"
    # Built (and so validated) before the harvest, not minutes later when training starts.
    dictionary_options = {"k": cfg.k} if "k" in _variant_fields(cfg.architecture) else {}
    training = train_cmd.Config(
        cache=str(cache), out=str(sae), resume=True, architecture=cfg.architecture,
        n_latents=cfg.n_latents, dictionary=dictionary_options, n_tokens=cfg.train_tokens,
        batch_size=cfg.batch_size, seed=cfg.seed, device=cfg.device, autocast=cfg.autocast,
        log=LogConfig(every_steps=10))
    _stage(1, "harvest", cache)
    harvest_cmd.run(harvest_cmd.Config(
        model=cfg.model, hookpoints=[cfg.hookpoint], out=str(cache), corpus=cfg.corpus,
        context_len=cfg.context_len, n_tokens=cfg.harvest_tokens, model_dtype=cfg.model_dtype,
        seed=cfg.seed, device=cfg.device))
    _stage(2, "train", sae)
    train_cmd.run(training)
    _stage(3, "evaluate", sae / "eval.json")
    eval_cmd.run(eval_cmd.Config(checkpoint=str(sae), cache=str(cache),
                                 max_sequences=cfg.eval_sequences, device=cfg.device))
    _stage(4, "report", report)
    report_cmd.run(report_cmd.Config(checkpoint=str(sae), cache=str(cache), out=str(report),
                                     max_tokens=cfg.report_tokens, device=cfg.device))
    _summary(sae / "eval.json", report)
    return 0


def _variant_fields(architecture: str) -> set[str]:
    import dataclasses

    import sparselens.dictionaries  # noqa: F401  (registers the variants)
    from sparselens.dictionaries.base import REGISTRY

    if architecture not in REGISTRY:
        raise ValueError(f"unknown architecture {architecture!r}; known: {sorted(REGISTRY)}")
    return {f.name for f in dataclasses.fields(REGISTRY[architecture].config_class)}


def _stage(index: int, name: str, where: Path) -> None:
    print(f"\n== [{index}/4] {name} -> {where}", flush=True)


def _summary(eval_path: Path, report: Path) -> None:
    """One line of results. Two dead fractions, since they answer different questions: latents
    the trainer saw unfired for its whole dead window (the last line of metrics.jsonl), and
    latents unfired on the evaluation's held-out tokens (rare latents count there too)."""
    record = json.loads(eval_path.read_text())
    recon, spliced = record["reconstruction"], record.get("spliced") or {}
    parts = [f"FVU {recon['fvu']:.3f}", f"L0 {recon['l0']:.1f}"]
    training_dead = _last_dead_fraction(eval_path.parent / "metrics.jsonl")
    held_out = (f"{100 * recon['dead_fraction']:.1f}% unfired on {recon['n_tokens']:,} "
                "held-out tokens")
    parts.append(held_out if training_dead is None
                 else f"dead {100 * training_dead:.1f}% in training ({held_out})")
    if spliced:
        parts.append(f"loss recovered {spliced['loss_recovered']:.3f}")
    print(f"\n{' | '.join(parts)}\nreport: {(report / 'index.html').resolve()}")
    for warning in recon.get("warnings", []):
        print(f"WARNING: {warning}", file=sys.stderr)


def _last_dead_fraction(metrics: Path) -> float | None:
    """The trainer's dead fraction at its last logged step, if it logged one."""
    if not metrics.exists():
        return None
    lines = [line for line in metrics.read_text().splitlines() if line.strip()]
    for line in reversed(lines):
        value = json.loads(line).get("dead_fraction")
        if value is not None:
            return float(value)
    return None
