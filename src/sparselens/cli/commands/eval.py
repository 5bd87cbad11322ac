"""``sparselens eval CHECKPOINT --cache CACHE``: reconstruction and spliced-in metrics as JSON."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sparselens.cli.options import positional

if TYPE_CHECKING:
    from torch import Tensor

    from sparselens.data.cache import ActivationCache
    from sparselens.dictionaries.base import Dictionary
    from sparselens.dictionaries.stacked import StackedDictionary

NAME = "eval"
HELP = ("Evaluate a dictionary on the held-out split of an activation cache: MSE, explained "
        "variance, L0, dead/dense latents, and spliced-in CE/KL/loss recovered. Writes JSON "
        "(schema: docs/evaluation.md).")


@dataclass
class Config:
    checkpoint: str = positional("")
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


def run(cfg: Config) -> int:
    from sparselens.data.cache import ActivationCache
    from sparselens.dictionaries.stacked import StackedDictionary
    from sparselens.evaluation.per_source import per_source_reconstruction
    from sparselens.evaluation.reconstruction import reconstruction_metrics
    from sparselens.evaluation.results import results_record, write_results
    from sparselens.io.native import load_dictionary

    if not cfg.checkpoint or not cfg.cache:
        raise ValueError("give the dictionary and the cache: sparselens eval CHECKPOINT "
                         "--cache CACHE")
    dictionary = load_dictionary(cfg.checkpoint, device=cfg.device)
    cache = ActivationCache.open(cfg.cache)
    source, target = _cache_sites(cache, dictionary, cfg.hookpoint)
    batches = cache.batches(cfg.batch_size, hookpoints=[h for h in (source, target) if h],
                            split="heldout", shuffle=False)
    recon = reconstruction_metrics(dictionary, batches, source, target,
                                   dense_threshold=cfg.dense_threshold, max_tokens=cfg.max_tokens)
    if isinstance(dictionary, StackedDictionary):
        recon["per_source"] = per_source_reconstruction(
            dictionary, cache.batches(cfg.batch_size, hookpoints=[source], split="heldout",
                                      shuffle=False),
            source, max_tokens=cfg.max_tokens, dense_threshold=cfg.dense_threshold)
        spliced = _spliced_per_source(cfg, cache, dictionary) if cfg.spliced else None
    else:
        spliced = _spliced(cfg, cache, dictionary, source, target) if cfg.spliced else None
    out = Path(cfg.out) if cfg.out else Path(cfg.checkpoint) / "eval.json"
    record = results_record(_checkpoint_info(cfg.checkpoint, dictionary),
                            {"cache": str(Path(cfg.cache).resolve()), "split": "heldout",
                             "hookpoint": source, "target_hookpoint": target},
                            recon, spliced)
    write_results(out, record)
    _print_summary(record, out)
    return 0


def _cache_sites(cache: ActivationCache, dictionary: Dictionary,
                 hookpoint: str | None) -> tuple[str, str | None]:
    name = hookpoint or dictionary.cfg.hookpoint
    if name is None:
        raise ValueError("the dictionary does not record its hookpoint; pass --hookpoint")
    target = dictionary.cfg.target_hookpoint
    return cache.resolve(name), cache.resolve(target) if target else None


def _module_spec(cache: ActivationCache, name: str) -> str:
    """The model-side spelling (``module[:side]``) of a cache hookpoint name."""
    entry = next(h for h in cache.manifest["hookpoints"] if h["name"] == name)
    return entry["module"] if entry["side"] == "output" else f"{entry['module']}:{entry['side']}"


def _heldout_sequences(cfg: Config, cache: ActivationCache) -> Tensor:
    import torch

    tokens = cache.tokens()
    heldout = tokens[cache.is_heldout(torch.arange(tokens.shape[0]))][: cfg.max_sequences]
    if heldout.shape[0] == 0:
        raise ValueError(f"the cache {cfg.cache} has no held-out sequences; re-harvest with a "
                         "positive held-out fraction, or pass --spliced false")
    return heldout


def _spliced(cfg: Config, cache: ActivationCache, dictionary: Dictionary, source: str,
             target: str | None) -> dict[str, Any]:
    from sparselens.evaluation.spliced import spliced_metrics
    from sparselens.models.source import load_model

    model_name = cfg.model or cache.manifest.get("model")
    if not isinstance(model_name, str):
        raise ValueError(f"the cache manifest names model(s) {model_name!r}; pass --model")
    heldout = _heldout_sequences(cfg, cache)
    loaded = load_model(model_name, dtype=cfg.model_dtype, device=cfg.device)
    result = spliced_metrics(dictionary, loaded, _module_spec(cache, source), heldout,
                             target_hookpoint=_module_spec(cache, target) if target else None,
                             batch_size=cfg.sequences_per_batch)
    return {"model": model_name, **result}


def _spliced_per_source(cfg: Config, cache: ActivationCache,
                        dictionary: StackedDictionary) -> dict[str, Any]:
    """Each source of a crosscoder or multi-layer SAE spliced into its model in turn. A
    two-model cache names its models by label (``{"base": ..., "chat": ...}``)."""
    import torch

    from sparselens.data.chunking import Chunk, special_token_ids
    from sparselens.evaluation.per_source import per_source_spliced
    from sparselens.models.source import LoadedModel, load_model

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
    specials = torch.tensor(special_token_ids(first.tokenizer), dtype=torch.long)
    chunks = [Chunk(ids=ids, special=torch.isin(ids, specials), doc_id=-1)
              for ids in _heldout_sequences(cfg, cache)]
    results = per_source_spliced(dictionary, models, chunks, batch_size=cfg.sequences_per_batch)
    return {"model": named, "per_source": results}


def _checkpoint_info(path: str, dictionary: Dictionary) -> dict[str, Any]:
    from sparselens.io.atomic import read_json
    from sparselens.io.native import CONFIG_FILE

    meta = read_json(Path(path) / CONFIG_FILE, "checkpoint config")
    c = dictionary.cfg
    return {"path": str(Path(path).resolve()), "architecture": dictionary.architecture,
            "d_in": c.d_in, "d_out": c.d_out, "n_latents": c.n_latents,
            "hookpoint": c.hookpoint, "target_hookpoint": c.target_hookpoint,
            "weights_sha256": meta.get("weights_sha256")}


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
