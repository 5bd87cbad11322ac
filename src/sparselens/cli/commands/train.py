"""``sparselens train CACHE --out OUT``: train a dictionary, or a sweep of them, on a cache."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from sparselens.cli.options import positional, repeatable
from sparselens.training.config import TrainConfig

NAME = "train"
HELP = ("Train a sparse dictionary (SAE, transcoder) on an activation cache; writes the "
        "dictionary, checkpoints and metrics.jsonl to --out. With --sweep, trains several "
        "dictionaries from one pass over the cache, one subfolder of --out each.")


@dataclass
class Config(TrainConfig):
    cache: str = positional("")
    """Activation cache folder (written by `sparselens harvest`); its train split is used."""
    out: str = "sae"
    """Output folder: the trained dictionary, checkpoints/ and metrics.jsonl (with --sweep:
    one such subfolder per member, named after its options, and sweep.json)."""
    resume: bool = False
    """Continue the run in --out from its latest checkpoint (start it if it has none)."""
    sweep: list[str] = repeatable()
    """Train several dictionaries from one read of the cache: KEY=V1,V2,... (repeat the option
    for a grid: --sweep n_latents=4096,16384 --sweep k=16,32 trains four), or a .json/.yaml
    file listing the members as objects of options. KEY is any option above (optim.lr,
    architecture, ...) or a field of the variant (k). batch_size, seed and device are shared."""


def train_config(cfg: Config) -> TrainConfig:
    """The library config inside the command's options."""
    return TrainConfig(**{f.name: getattr(cfg, f.name) for f in dataclasses.fields(TrainConfig)})


def run(cfg: Config) -> int:
    """Train in this process, or as one rank of a data-parallel `torchrun` job."""
    from sparselens.distributed import distributed_session

    with distributed_session(cfg.device):
        return _train(cfg)


def _train(cfg: Config) -> int:
    from sparselens.data.cache import ActivationCache
    from sparselens.distributed import is_main_process
    from sparselens.pipelines.train import train_on_cache

    if not cfg.cache:
        raise ValueError("give the activation cache folder: sparselens train CACHE --out OUT")
    if cfg.sweep:
        return _sweep(cfg)
    result = train_on_cache(train_config(cfg), ActivationCache.open(cfg.cache), cfg.out,
                            resume=cfg.resume)
    if is_main_process():
        if result.resumed_at is not None:
            print(f"resumed {cfg.out} at step {result.resumed_at}")
        print(f"trained {result.steps} steps; dictionary saved to {cfg.out}")
    return 0


def _sweep(cfg: Config) -> int:
    from sparselens.data.cache import ActivationCache
    from sparselens.distributed import is_main_process
    from sparselens.pipelines.sweep import train_sweep_on_cache

    result = train_sweep_on_cache(train_config(cfg), ActivationCache.open(cfg.cache), cfg.out,
                                  cfg.sweep, resume=cfg.resume, write_file=is_main_process())
    if is_main_process():
        for name, step in result.resumed.items():
            print(f"resumed {result.folders[name]} at step {step}")
        print(f"trained {len(result.folders)} dictionaries from one pass of {result.steps} "
              f"steps into {cfg.out}: {', '.join(result.folders)}")
    return 0
