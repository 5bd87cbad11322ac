"""The static HTML feature report of a saved dictionary: top-activating and quantile-sampled
contexts of every feature from a cache, with metrics and training curves."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from sparselens.data.cache import ActivationCache
from sparselens.data.factory import split_batches
from sparselens.evaluation.bench_page import BESIDE_NAME, evaluation_section
from sparselens.interpretation.examples import FeatureExamples, collect_examples
from sparselens.interpretation.image_examples import collect_image_heatmaps, is_image_corpus
from sparselens.interpretation.image_report import PatchTokenizer
from sparselens.interpretation.report import write_report
from sparselens.interpretation.windows import collect_windows
from sparselens.io.atomic import read_json
from sparselens.models.source import load_tokenizer
from sparselens.pipelines.opened import open_on_cache


@dataclass
class ReportConfig:
    checkpoint: str = ""
    """Dictionary folder: a training output folder or one of its checkpoints/step_N."""
    cache: str = ""
    """Activation cache to collect the examples from (required)."""
    out: str | None = None
    """Report folder; None: CHECKPOINT/report."""
    hookpoint: str | None = None
    """Input hookpoint in the cache; None: the one recorded in the dictionary."""
    split: Literal["all", "train", "heldout"] = "all"
    """Which split of the cache to read."""
    max_tokens: int | None = None
    """Stop after this many tokens; None reads the whole split."""
    batch_size: int = 4096
    """Tokens per batch."""
    n_top: int = 20
    """Top-activating examples kept per feature."""
    n_quantile_samples: int = 20
    """Uniformly sampled firings kept per feature, shown grouped by activation quantile."""
    before: int = 24
    """Tokens shown before each example token."""
    after: int = 8
    """Tokens shown after each example token."""
    metrics: str | None = None
    """Evaluation JSON for the header; None: CHECKPOINT/eval.json when it exists."""
    bench: str | None = None
    """`sparselens bench` JSON for the evaluation section; None: CHECKPOINT/bench.json (which
    the bench writes beside the dictionary) when it exists, else no section."""
    train_log: str | None = None
    """Trainer metrics JSONL for the training curves; None: the run's metrics.jsonl if any."""
    tokenizer: str | None = None
    """Embedded model name or local folder whose tokenizer decodes the contexts; None: the
    model named in the cache manifest."""
    title: str | None = None
    """Page title; None: built from the architecture and hookpoint."""
    device: str = "cpu"
    """Device to encode on."""
    n_images: int = 6
    """Image caches: top images per feature shown with a heat map over the picture."""


@dataclass
class ReportResult:
    index: Path
    """The report's index.html."""
    examples: FeatureExamples
    """What the report shows (also saved in the report folder)."""


def write_feature_report(cfg: ReportConfig) -> ReportResult:
    """Collect the examples in two passes over the same tokens and write the report folder."""
    opened = open_on_cache(cfg.checkpoint, cfg.cache, cfg.hookpoint, cfg.device,
                           "sparselens report CHECKPOINT --cache CACHE [--out DIR]")
    dictionary, cache, sites = opened.dictionary, opened.cache, opened.sites
    corpus = cache.manifest.get("corpus")
    tokenizer = (PatchTokenizer() if is_image_corpus(corpus) and cfg.tokenizer is None
                 else load_tokenizer(cfg.tokenizer or _manifest_model(cache)))
    batches = split_batches(cache, sites, cfg.batch_size, cfg.split, cfg.max_tokens)
    examples = collect_examples(dictionary, batches(), sites.input, n_top=cfg.n_top,
                                n_quantile_samples=cfg.n_quantile_samples)
    examples = collect_windows(dictionary, examples, batches(), before=cfg.before,
                               after=cfg.after)
    images = (collect_image_heatmaps(dictionary, examples, batches(), corpus, cfg.n_images)
              if is_image_corpus(corpus) else None)
    checkpoint = Path(cfg.checkpoint)
    out = Path(cfg.out) if cfg.out else checkpoint / "report"
    index = write_report(out, dictionary=dictionary, examples=examples, tokens=cache.tokens(),
                         tokenizer=tokenizer, metrics=_metrics(cfg.metrics, checkpoint),
                         train_log_path=_optional_file(cfg.train_log, _run_folder(checkpoint)
                                                       / "metrics.jsonl"),
                         title=cfg.title or f"{dictionary.architecture} on {sites.input}",
                         image_examples=images,
                         evaluation=_evaluation(cfg.bench, checkpoint))
    examples.save(out)
    if images is not None:
        images.save(out)
    return ReportResult(Path(index), examples)


def _manifest_model(cache: ActivationCache) -> str:
    model = cache.manifest.get("model")
    if not isinstance(model, str):
        raise ValueError(f"the cache manifest names model(s) {model!r}; pass --tokenizer")
    return model


def _run_folder(checkpoint: Path) -> Path:
    """The training output folder of a checkpoint (``OUT/checkpoints/step_N`` -> ``OUT``)."""
    return checkpoint.parent.parent if checkpoint.parent.name == "checkpoints" else checkpoint


def _optional_file(given: str | None, default: Path) -> Path | None:
    if given is not None:
        return Path(given)
    return default if default.is_file() else None


def _metrics(given: str | None, checkpoint: Path) -> dict[str, Any]:
    path = _optional_file(given, checkpoint / "eval.json")
    if path is None:
        return {}
    metrics = read_json(path, "metrics file")
    if not isinstance(metrics, dict):
        raise ValueError(f"metrics file {path} must hold a JSON object, e.g. the output of "
                         "`sparselens eval`")
    return metrics


def _evaluation(given: str | None, checkpoint: Path) -> dict[str, Any] | None:
    """The report's evaluation section from the bench JSON, if there is one."""
    path = _optional_file(given, checkpoint / BESIDE_NAME)
    if path is None:
        return None
    if not path.is_file():
        raise FileNotFoundError(f"bench results {path} do not exist; run `sparselens bench` "
                                "or leave out --bench")
    return evaluation_section(path)
