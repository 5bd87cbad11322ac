"""``sparselens eval CHECKPOINT --cache CACHE``: reconstruction and spliced-in metrics as JSON."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sparselens.cli.options import positional

if TYPE_CHECKING:
    from sparselens.data.cache import ActivationCache
    from sparselens.dictionaries.base import Dictionary

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


def _spliced(cfg: Config, cache: ActivationCache, dictionary: Dictionary, source: str,
             target: str | None) -> dict[str, Any]:
    import torch

    from sparselens.evaluation.spliced import spliced_metrics
    from sparselens.models.source import load_model

    model_name = cfg.model or cache.manifest.get("model")
    if not isinstance(model_name, str):
        raise ValueError(f"the cache manifest names model(s) {model_name!r}; pass --model")
    tokens = cache.tokens()
    heldout = tokens[cache.is_heldout(torch.arange(tokens.shape[0]))][: cfg.max_sequences]
    if heldout.shape[0] == 0:
        raise ValueError(f"the cache {cfg.cache} has no held-out sequences; re-harvest with a "
                         "positive held-out fraction, or pass --spliced false")
    loaded = load_model(model_name, dtype=cfg.model_dtype, device=cfg.device)
    result = spliced_metrics(dictionary, loaded, _module_spec(cache, source), heldout,
                             target_hookpoint=_module_spec(cache, target) if target else None,
                             batch_size=cfg.sequences_per_batch)
    return {"model": model_name, **result}


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
    if spliced:
        print(f"spliced on {spliced['n_predictions']} predictions: CE clean "
              f"{spliced['ce_clean']:.4f}, spliced {spliced['ce_spliced']:.4f}, zero-ablated "
              f"{spliced['ce_zero_ablation']:.4f}, KL {spliced['kl_spliced']:.4f}, loss "
              f"recovered {spliced['loss_recovered']:.4f}")
    print(f"results written to {out}")
