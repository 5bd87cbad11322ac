"""Model diffing: what one model has that the other lacks.

Four steps, each resumable in the output folder: harvest the hookpoint of both models on the
same tokens (``OUT/activations``), train a BatchTopK crosscoder on the pair
(``OUT/crosscoder``), score every latent (per-model decoder norms, Latent Scaling; see
`sparselens.evaluation.diffing`) and evaluate it per model, then write ``OUT/diff.json``,
the page ``OUT/index.html`` with shared, model-specific and changed latents (both models write
them, in different directions) and their top contexts, and the full feature browser
``OUT/report``. Re-running with the same options reuses finished steps.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sparselens.data.batch import join_sources, labelled_name
from sparselens.data.cache import ActivationCache, Split
from sparselens.data.corpus import CorpusConfig
from sparselens.data.factory import heldout_chunks, split_batches
from sparselens.data.harvest import HarvestConfig
from sparselens.data.sites import Sites
from sparselens.dictionaries.crosscoder import Crosscoder
from sparselens.evaluation.diffing import DiffThresholds, diff_latents
from sparselens.evaluation.per_source import per_source_reconstruction, per_source_spliced
from sparselens.interpretation.diff_page import example_contexts, write_diff_page
from sparselens.interpretation.examples import collect_examples
from sparselens.interpretation.report import json_safe, write_report
from sparselens.interpretation.windows import collect_windows
from sparselens.io.atomic import atomic_write_json
from sparselens.models.source import LoadedModel, load_model
from sparselens.pipelines.harvest import harvest_corpus
from sparselens.pipelines.train import train_on_cache
from sparselens.training.config import LogConfig, OptimConfig, TrainConfig

LABELS = ("A", "B")


@dataclass
class DiffConfig:
    model_a: str = ""
    """First model (e.g. the base): local Hugging Face directory, .gguf file or embedded name."""
    model_b: str = ""
    """Second model (e.g. the fine-tuned one); it must share model A's tokenizer."""
    hookpoint: str = "resid.6"
    """Hookpoint read from both models (see `sparselens hookpoints MODEL`)."""
    n_tokens: int = 200_000
    """Tokens to harvest from both models (the budget)."""
    out: str = "diff"
    """Output folder (activations, crosscoder, report, diff.json, index.html)."""
    corpus: CorpusConfig = field(default_factory=CorpusConfig)
    """Where the text comes from; include text on which the models should differ."""
    context_len: int = 128
    """Tokens per sequence."""
    n_latents: int = 4096
    """Crosscoder width."""
    k: int = 32
    """Active latents per token (on average over a batch: BatchTopK)."""
    epochs: float = 4.0
    """Passes over the harvested training tokens."""
    batch_size: int = 4096
    """Tokens per training step."""
    lr: float | None = None
    """Peak learning rate; None scales with the width (see `sparselens train --help`)."""
    thresholds: DiffThresholds = field(default_factory=DiffThresholds)
    """When a latent counts as shared, specific, only apparently specific, or changed."""
    n_contexts: int = 5
    """Top contexts shown per latent."""
    max_listed: int = 50
    """Model-specific latents listed per model on the page (all are in diff.json)."""
    spliced_sequences: int = 8
    """Held-out sequences for the per-model spliced-in CE/KL (0 skips it)."""
    harvest_batch_size: int = 16
    """Sequences per forward pass while harvesting."""
    model_dtype: str = "float32"
    """Dtype to run the models in."""
    storage_dtype: str = "float32"
    """Dtype of the stored activations."""
    device: str = "cpu"
    """Device for the models and the crosscoder."""
    seed: int = 0
    """Seed of the document order, the held-out split and training."""
    progress: bool = True
    """Show progress bars."""




@dataclass
class DiffResult:
    record: dict[str, Any]
    """diff.json's content: counts, per-latent scores, per-model reconstruction and splicing."""
    page: Path
    """The diff page, index.html."""
    report: Path
    """The crosscoder's full feature report, report/index.html."""

    @property
    def counts(self) -> dict[str, int]:
        return self.record["counts"]


def diff(cfg: DiffConfig) -> DiffResult:
    """Harvest both models, train (or resume, or reuse) the crosscoder, score and write."""
    if not cfg.model_a or not cfg.model_b:
        raise ValueError("give both models: sparselens diff --model-a DIR --model-b DIR")
    if cfg.epochs <= 0 or cfg.n_contexts < 1 or cfg.spliced_sequences < 0:
        raise ValueError("epochs must be positive, n_contexts >= 1 and spliced_sequences >= 0")
    out = Path(cfg.out)
    models = {label: load_model(path, dtype=cfg.model_dtype, device=cfg.device)
              for label, path in zip(LABELS, (cfg.model_a, cfg.model_b))}
    settings = HarvestConfig(storage_dtype=cfg.storage_dtype, batch_size=cfg.harvest_batch_size,
                             max_tokens=cfg.n_tokens, seed=cfg.seed, progress=cfg.progress)
    cache = harvest_corpus(models, cfg.corpus, [cfg.hookpoint], out / "activations",
                           cfg.context_len, settings)
    sites = Sites.from_cache(cache, None, join_sources([labelled_name(label, cfg.hookpoint)
                                                        for label in LABELS]))
    crosscoder = _train(cfg, cache, sites, out / "crosscoder")
    record, sections = _score(cfg, cache, sites, crosscoder, models)
    _write(cfg, out, record, sections)
    return DiffResult(record, out / "index.html", out / "report" / "index.html")


def _train(cfg: DiffConfig, cache: ActivationCache, sites: Sites, folder: Path) -> Crosscoder:
    """Train the crosscoder on full batches, resume an interrupted run, or reuse a finished
    one."""
    n_train = cache.n_rows("train")
    if n_train == 0:
        raise ValueError(f"the harvest in {cache.folder} has no training tokens; raise "
                         "--n-tokens or give a larger corpus")
    train = TrainConfig(architecture="crosscoder", n_latents=cfg.n_latents,
                        dictionary={"k": cfg.k, "selection": "batchtopk"},
                        hookpoint=sites.input,
                        n_tokens=max(cfg.batch_size, int(cfg.epochs * n_train)),
                        batch_size=cfg.batch_size, seed=cfg.seed, device=cfg.device,
                        optim=OptimConfig(lr=cfg.lr), log=LogConfig(progress=cfg.progress))
    result = train_on_cache(train, cache, folder, resume=True, reuse=True)
    return result.dictionary  # type: ignore[return-value]


def _score(cfg: DiffConfig, cache: ActivationCache, sites: Sites,
           crosscoder: Crosscoder, models: dict[str, LoadedModel]
           ) -> tuple[dict[str, Any], list[tuple[str, list[dict[str, Any]]]]]:
    """diff.json's record and the page's sections."""
    sources, key = sites.sources, sites.input
    every = split_batches(cache, sites, split="all")
    diff = diff_latents(crosscoder, every(), key, cfg.thresholds)
    split: Split = "heldout" if cache.n_rows("heldout") else "all"
    reconstruction = per_source_reconstruction(crosscoder, split_batches(cache, sites,
                                                                         split=split)(), key)
    spliced = (per_source_spliced(crosscoder, models, heldout_chunks(
        cache, models["A"].tokenizer, cfg.spliced_sequences))
        if cfg.spliced_sequences and cache.n_rows("heldout") else None)
    examples = collect_windows(crosscoder, collect_examples(crosscoder, every(), key,
                                                            n_top=max(10, cfg.n_contexts)),
                               every())
    tokens, tokenizer = cache.tokens(), models["A"].tokenizer
    summary = {"models": {"A": cfg.model_a, "B": cfg.model_b}, "hookpoint": cfg.hookpoint,
               "sources": sources, "n_tokens": cache.n_tokens, "counts": diff.counts(),
               "reconstruction": {"split": split, "per_source": reconstruction},
               "spliced": spliced, "thresholds": asdict(cfg.thresholds)}
    write_report(Path(cfg.out) / "report", dictionary=crosscoder, examples=examples,
                 tokens=tokens, tokenizer=tokenizer, metrics=summary,
                 train_log_path=_existing(Path(cfg.out) / "crosscoder" / "metrics.jsonl"),
                 title=f"crosscoder: {sources[0]} vs {sources[1]}")
    records = [r for r in diff.records() if r["firings"] > 0] + diff.changed_records()
    shared = sorted((j for j, kind in enumerate(diff.kinds) if kind == "shared"),
                    key=lambda j: -float(diff.density[j]))[: cfg.n_contexts]
    shared_records = [{"latent": j, "relative_norm": float(diff.relative_norm[j]),
                       "decoder_cosine": float(diff.cosine[j]),
                       "density": float(diff.density[j])} for j in shared]
    for r in records + shared_records:
        r["top"] = example_contexts(examples, tokens, tokenizer, r["latent"], cfg.n_contexts)
    sections = [(f"Specific to {label} ({name})",
                 [r for r in records if r["kind"] == kind][: cfg.max_listed])
                for label, name, kind in (("B", cfg.model_b, "b_only"),
                                          ("A", cfg.model_a, "a_only"))]
    sections.append(("Changed: in both models, written in different directions (lowest "
                     "decoder cosine first)", [r for r in records if r["changed"]]
                     [: cfg.max_listed]))
    sections.append(("Shared (densest)", shared_records))
    record = {"schema": "sparselens.diff", "schema_version": 1, **summary, "latents": records,
              "shared_examples": shared_records}
    return record, sections


def _write(cfg: DiffConfig, out: Path, record: dict[str, Any],
           sections: list[tuple[str, list[dict[str, Any]]]]) -> None:
    atomic_write_json(out / "diff.json", json_safe(record))
    tables = [("Reconstruction per model (" + record["reconstruction"]["split"] + " tokens)",
               record["reconstruction"]["per_source"], ["source", "fvu", "mse", "l0",
                                                        "dead_fraction"]),
              ("Latents by kind", [record["counts"]], list(record["counts"]))]
    if record["spliced"]:
        tables.insert(1, ("Spliced into each model (held-out)", record["spliced"],
                          ["source", "ce_clean", "ce_spliced", "kl_spliced", "loss_recovered"]))
    write_diff_page(out / "index.html", f"Model diff at {cfg.hookpoint}: A = {cfg.model_a}, "
                    f"B = {cfg.model_b}", {"tables": tables}, sections,
                    report_link="report/index.html")


def _existing(path: Path) -> Path | None:
    return path if path.is_file() else None
