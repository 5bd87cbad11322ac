"""``sparselens harvest MODEL``: write an activation cache to disk for training dictionaries."""

from __future__ import annotations

from dataclasses import dataclass, field

from sparselens.cli.options import positional
from sparselens.data.corpus import CorpusConfig

NAME = "harvest"
HELP = ("Run a model over a corpus and store activations at one or more hookpoints as a "
        "sharded, checksummed cache (resumes an interrupted run in the same folder).")


@dataclass
class Config:
    model: str = positional("gemma-3-270m")
    """Embedded model name, local Hugging Face directory, or .gguf file."""
    hookpoints: list[str] = field(default_factory=lambda: ["resid.6"])
    """Hookpoints to store, read in one forward pass (see `sparselens hookpoints MODEL`)."""
    out: str = "activations"
    """Folder to write the cache into; an unfinished harvest with the same settings there is
    resumed."""
    corpus: CorpusConfig = field(default_factory=CorpusConfig)
    """Where the text comes from."""
    context_len: int = 128
    """Tokens per sequence (the first is BOS, which is not stored)."""
    n_tokens: int | None = 1_000_000
    """Stop after storing this many tokens; unset to read the whole corpus."""
    batch_size: int = 16
    """Sequences per forward pass."""
    model_dtype: str = "auto"
    """Dtype to run the model in: float32, bfloat16 (about 2x faster on CPUs with AMX or
    AVX-512 BF16; cosine to float32 activations above 0.999), or auto: bfloat16 where the
    hardware has native bf16 GEMMs, else float32 (emulated bf16 is many times slower)."""
    storage_dtype: str = "bfloat16"
    """Dtype of stored activations: bfloat16, float16 or float32."""
    shard_tokens: int = 65536
    """Tokens per shard file."""
    heldout_fraction: float = 0.05
    """Fraction of sequences held out from training, for evaluation."""
    seed: int = 0
    """Seed of the held-out split."""
    device: str = "cpu"
    """Device to run the model on (cpu, cuda, cuda:1, ...); under torchrun, ``cuda`` means
    each rank's own GPU."""
    second_model: str | None = None
    """A second model to read the same hookpoints from on the same tokens (model diffing);
    names then become modelA/<hookpoint> and modelB/<hookpoint>."""


def run(cfg: Config) -> int:
    from sparselens.distributed import distributed_session

    with distributed_session(cfg.device):  # under torchrun, ranks share the shards
        return _harvest(cfg)


def _harvest(cfg: Config) -> int:
    import torch

    from sparselens.data.harvest import HarvestConfig
    from sparselens.distributed import is_main_process, local_device
    from sparselens.models.source import load_model
    from sparselens.pipelines.harvest import harvest_texts

    device = str(local_device(torch.device(cfg.device)))
    settings = HarvestConfig(storage_dtype=cfg.storage_dtype, batch_size=cfg.batch_size,
                             shard_tokens=cfg.shard_tokens, max_tokens=cfg.n_tokens,
                             heldout_fraction=cfg.heldout_fraction, seed=cfg.seed)
    loaded = load_model(cfg.model, dtype=cfg.model_dtype, device=device)
    models = loaded
    if cfg.second_model is not None:
        second = load_model(cfg.second_model, dtype=cfg.model_dtype, device=device)
        models = {"modelA": loaded, "modelB": second}
    manifest = harvest_texts(models, cfg.corpus, cfg.hookpoints, cfg.out, cfg.context_len,
                             settings)
    if not is_main_process():
        return 0
    widths = ", ".join(f"{h['name']} ({h['width']})" for h in manifest["hookpoints"])
    print(f"{cfg.out}: {manifest['n_tokens']:,} tokens from {manifest['n_sequences']:,} "
          f"sequences in {len(manifest['shards'])} shards; hookpoints {widths}; "
          f"{manifest['n_heldout_tokens']:,} tokens held out")
    return 0
