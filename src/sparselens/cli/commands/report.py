"""``sparselens report CHECKPOINT --cache CACHE --out DIR``: the static HTML feature report."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from sparselens.cli.options import positional

if TYPE_CHECKING:
    from sparselens.data.batch import ActivationBatch
    from sparselens.data.cache import ActivationCache
    from sparselens.dictionaries.base import Dictionary

NAME = "report"
HELP = ("Collect each feature's top-activating and quantile-sampled contexts from an "
        "activation cache and write a static HTML report (opens offline from file://) with "
        "metrics and plots.")


@dataclass
class Config:
    checkpoint: str = positional("")
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
    """Stop after about this many tokens (whole batches); None reads the whole split."""
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
    train_log: str | None = None
    """Trainer metrics JSONL for the training curves; None: the run's metrics.jsonl if any."""
    tokenizer: str | None = None
    """Embedded model name or local folder whose tokenizer decodes the contexts; None: the
    model named in the cache manifest."""
    title: str | None = None
    """Page title; None: built from the architecture and hookpoint."""
    device: str = "cpu"
    """Device to encode on."""


def run(cfg: Config) -> int:
    from sparselens.data.cache import ActivationCache
    from sparselens.interpretation.examples import collect_examples
    from sparselens.interpretation.report import write_report
    from sparselens.interpretation.windows import collect_windows
    from sparselens.io.native import load_dictionary

    if not cfg.checkpoint or not cfg.cache:
        raise ValueError("give the dictionary and the cache: sparselens report CHECKPOINT "
                         "--cache CACHE [--out DIR]")
    if cfg.batch_size < 1 or (cfg.max_tokens is not None and cfg.max_tokens < 1):
        raise ValueError(f"batch_size and max_tokens must be positive, got {cfg.batch_size} "
                         f"and {cfg.max_tokens}")
    dictionary = load_dictionary(cfg.checkpoint, device=cfg.device)
    cache = ActivationCache.open(cfg.cache)
    hookpoint = _hookpoint(cache, dictionary, cfg.hookpoint)
    tokenizer = load_tokenizer(cfg.tokenizer or _manifest_model(cache))
    batches = _batch_source(cache, hookpoint, cfg)
    examples = collect_examples(dictionary, batches(), hookpoint, n_top=cfg.n_top,
                                n_quantile_samples=cfg.n_quantile_samples)
    examples = collect_windows(dictionary, examples, batches(), before=cfg.before,
                               after=cfg.after)
    checkpoint = Path(cfg.checkpoint)
    out = Path(cfg.out) if cfg.out else checkpoint / "report"
    index = write_report(out, dictionary=dictionary, examples=examples, tokens=cache.tokens(),
                         tokenizer=tokenizer, metrics=_metrics(cfg.metrics, checkpoint),
                         train_log_path=_optional_file(cfg.train_log, _run_folder(checkpoint)
                                                       / "metrics.jsonl"),
                         title=cfg.title or f"{dictionary.architecture} on {hookpoint}")
    examples.save(out)
    print(f"report on {examples.n_tokens:,} tokens written to {index}")
    return 0


def load_tokenizer(source: str) -> object:
    """A Hugging Face tokenizer from a local folder or an embedded model name (no network)."""
    from transformers import AutoTokenizer

    from sparselens.models.source import resolve_model_dir

    path = Path(source).expanduser()
    return AutoTokenizer.from_pretrained(path if path.is_dir() else resolve_model_dir(source))


def _manifest_model(cache: ActivationCache) -> str:
    model = cache.manifest.get("model")
    if not isinstance(model, str):
        raise ValueError(f"the cache manifest names model(s) {model!r}; pass --tokenizer")
    return model


def _hookpoint(cache: ActivationCache, dictionary: Dictionary, hookpoint: str | None) -> str:
    name = hookpoint or dictionary.cfg.hookpoint
    if name is None:
        if len(cache.hookpoints) != 1:
            raise ValueError("the dictionary does not record its hookpoint and the cache has "
                             f"several ({', '.join(cache.hookpoints)}); pass --hookpoint")
        name = cache.hookpoints[0]
    return cache.resolve(name)


def _batch_source(cache: ActivationCache, hookpoint: str,
                  cfg: Config) -> Callable[[], Iterator[ActivationBatch]]:
    """Both passes must see the same tokens: unshuffled, cut at the same batch."""

    def batches() -> Iterator[ActivationBatch]:
        seen = 0
        for batch in cache.batches(cfg.batch_size, hookpoints=[hookpoint], split=cfg.split,
                                   shuffle=False):
            if cfg.max_tokens is not None and seen >= cfg.max_tokens:
                return
            seen += len(batch)
            yield batch

    return batches


def _run_folder(checkpoint: Path) -> Path:
    """The training output folder of a checkpoint (``OUT/checkpoints/step_N`` -> ``OUT``)."""
    return checkpoint.parent.parent if checkpoint.parent.name == "checkpoints" else checkpoint


def _optional_file(given: str | None, default: Path) -> Path | None:
    if given is not None:
        return Path(given)
    return default if default.is_file() else None


def _metrics(given: str | None, checkpoint: Path) -> dict[str, Any]:
    from sparselens.io.atomic import read_json

    path = _optional_file(given, checkpoint / "eval.json")
    if path is None:
        return {}
    metrics = read_json(path, "metrics file")
    if not isinstance(metrics, dict):
        raise ValueError(f"metrics file {path} must hold a JSON object, e.g. the output of "
                         "`sparselens eval`")
    return metrics
