"""Evaluate a saved dictionary on the held-out split of a cache: reconstruction metrics and the
spliced-in CE/KL, written as JSON (schema: docs/evaluation.md)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sparselens.data.cache import ActivationCache
from sparselens.data.factory import heldout_chunks, heldout_sequences, split_batches
from sparselens.data.sites import Sites
from sparselens.dictionaries.base import Dictionary
from sparselens.dictionaries.stacked import StackedDictionary
from sparselens.evaluation.per_source import per_source_reconstruction, per_source_spliced
from sparselens.evaluation.reconstruction import reconstruction_metrics
from sparselens.evaluation.results import results_record, write_results
from sparselens.io.atomic import read_json
from sparselens.io.native import CONFIG_FILE
from sparselens.models.source import LoadedModel, load_model
from sparselens.pipelines.opened import open_on_cache


@dataclass
class EvalConfig:
    checkpoint: str = ""
    """Dictionary folder: a training output folder or one of its checkpoints/step_N."""
    cache: str = ""
    """Activation cache holding held-out sequences at the dictionary's hookpoint (required)."""
    hookpoint: str | None = None
    """Input hookpoint in the cache; None: the one recorded in the dictionary."""
    out: str | None = None
    """Results JSON; None: CHECKPOINT/eval.json."""
    max_tokens: int = 65536
    """Held-out tokens for the reconstruction metrics."""
    batch_size: int = 4096
    """Tokens per batch for the reconstruction metrics."""
    dense_threshold: float = 0.1
    """A latent counts as dense when it fires on more than this fraction of tokens."""
    spliced: bool = True
    """Also run the spliced-in evaluation (loads the model; full forwards with logits)."""
    model: str | None = None
    """Model for the spliced-in evaluation; None: the model named in the cache manifest."""
    model_dtype: str = "float32"
    """Dtype to load the model in."""
    max_sequences: int = 32
    """Held-out sequences for the spliced-in evaluation."""
    sequences_per_batch: int = 2
    """Sequences per forward pass in the spliced-in evaluation (logits are vocab-wide)."""
    device: str = "cpu"
    """Device for the dictionary and the model."""


@dataclass
class EvalResult:
    """The record written (`results_record`'s schema) and where."""

    record: dict[str, Any]
    path: Path


def evaluate(cfg: EvalConfig) -> EvalResult:
    """Evaluate ``cfg.checkpoint`` on the held-out split of ``cfg.cache``; write the JSON."""
    opened = open_on_cache(cfg.checkpoint, cfg.cache, cfg.hookpoint, cfg.device,
                           "sparselens eval CHECKPOINT --cache CACHE")
    dictionary, cache, sites = opened.dictionary, opened.cache, opened.sites
    batches = split_batches(cache, sites, cfg.batch_size, "heldout", cfg.max_tokens)
    recon = reconstruction_metrics(dictionary, batches(), sites.input, sites.target,
                                   dense_threshold=cfg.dense_threshold)
    spliced = None
    if isinstance(dictionary, StackedDictionary):
        recon["per_source"] = per_source_reconstruction(
            dictionary, batches(), sites.input, dense_threshold=cfg.dense_threshold)
        if cfg.spliced:
            spliced = _spliced_per_source(cfg, cache, dictionary)
    elif cfg.spliced:
        spliced = _spliced(cfg, cache, dictionary, sites)
    out = Path(cfg.out) if cfg.out else Path(cfg.checkpoint) / "eval.json"
    record = results_record(_checkpoint_info(cfg.checkpoint, dictionary),
                            {"cache": str(Path(cfg.cache).resolve()), "split": "heldout",
                             "hookpoint": sites.input, "target_hookpoint": sites.target},
                            recon, spliced)
    write_results(out, record)
    return EvalResult(record, out)


def module_spec(cache: ActivationCache, name: str) -> str:
    """The model-side spelling (``module[:side]``) of a cache hookpoint name."""
    entry = next(h for h in cache.manifest["hookpoints"] if h["name"] == name)
    return entry["module"] if entry["side"] == "output" else f"{entry['module']}:{entry['side']}"


def _spliced(cfg: EvalConfig, cache: ActivationCache, dictionary: Dictionary,
             sites: Sites) -> dict[str, Any]:
    from sparselens.evaluation.spliced import spliced_metrics

    model_name = cfg.model or cache.manifest.get("model")
    if not isinstance(model_name, str):
        raise ValueError(f"the cache manifest names model(s) {model_name!r}; pass --model")
    heldout = heldout_sequences(cache, cfg.max_sequences)
    loaded = load_model(model_name, dtype=cfg.model_dtype, device=cfg.device)
    target = module_spec(cache, sites.target) if sites.target else None
    result = spliced_metrics(dictionary, loaded, module_spec(cache, sites.input), heldout,
                             target_hookpoint=target, batch_size=cfg.sequences_per_batch)
    return {"model": model_name, **result}


def _spliced_per_source(cfg: EvalConfig, cache: ActivationCache,
                        dictionary: StackedDictionary) -> dict[str, Any]:
    """Each source of a crosscoder or multi-layer SAE spliced into its model in turn. A
    two-model cache names its models by label (``{"base": ..., "chat": ...}``)."""
    named = cfg.model or cache.manifest.get("model")
    if not isinstance(named, (str, dict)):
        raise ValueError(f"the cache manifest names no model ({named!r}); pass --model")
    if isinstance(named, str):
        models: LoadedModel | dict[str, LoadedModel] = load_model(
            named, dtype=cfg.model_dtype, device=cfg.device)
    else:
        models = {label: load_model(path, dtype=cfg.model_dtype, device=cfg.device)
                  for label, path in named.items()}
    first = models if isinstance(models, LoadedModel) else next(iter(models.values()))
    chunks = heldout_chunks(cache, first.tokenizer, cfg.max_sequences)
    results = per_source_spliced(dictionary, models, chunks, batch_size=cfg.sequences_per_batch)
    return {"model": named, "per_source": results}


def _checkpoint_info(path: str, dictionary: Dictionary) -> dict[str, Any]:
    meta = read_json(Path(path) / CONFIG_FILE, "checkpoint config")
    c = dictionary.cfg
    return {"path": str(Path(path).resolve()), "architecture": dictionary.architecture,
            "d_in": c.d_in, "d_out": c.d_out, "n_latents": c.n_latents,
            "hookpoint": c.hookpoint, "target_hookpoint": c.target_hookpoint,
            "weights_sha256": meta.get("weights_sha256")}
