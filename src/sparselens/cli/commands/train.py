"""``sparselens train CACHE --out OUT``: train a dictionary on an activation cache."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from sparselens.cli.options import positional
from sparselens.training.config import TrainConfig

NAME = "train"
HELP = ("Train a sparse dictionary (SAE, transcoder) on an activation cache; writes the "
        "dictionary, checkpoints and metrics.jsonl to --out.")


@dataclass
class Config(TrainConfig):
    cache: str = positional("")
    """Activation cache folder (written by `sparselens harvest`); its train split is used."""
    out: str = "sae"
    """Output folder: the trained dictionary, checkpoints/ and metrics.jsonl."""
    resume: bool = False
    """Continue the run in --out from its latest checkpoint (start it if it has none)."""


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
    result = train_on_cache(train_config(cfg), ActivationCache.open(cfg.cache), cfg.out,
                            resume=cfg.resume)
    if is_main_process():
        if result.resumed_at is not None:
            print(f"resumed {cfg.out} at step {result.resumed_at}")
        print(f"trained {result.steps} steps; dictionary saved to {cfg.out}")
    return 0
