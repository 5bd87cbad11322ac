"""``sparselens train CACHE --out OUT``: train a dictionary on an activation cache."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sparselens.cli.options import positional
from sparselens.training.config import TrainConfig

if TYPE_CHECKING:
    from sparselens.data.cache import ActivationCache
    from sparselens.training.preparation import DataFactory

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


def cache_data(cache: ActivationCache, cfg: TrainConfig) -> DataFactory:
    """Endless, seeded, full batches of the cache's train split, resumable by batch count
    (full batches keep the step count, and so the schedule, exactly as planned)."""
    wanted = [h for h in (cfg.hookpoint, cfg.target_hookpoint) if h is not None] or None

    def data(skip_batches: int):
        return cache.batches(cfg.batch_size, hookpoints=wanted, split="train", seed=cfg.seed,
                             skip_batches=skip_batches, epochs=None, drop_last=True)

    return data


def run(cfg: Config) -> int:
    """Train in this process, or as one rank of a data-parallel `torchrun` job."""
    from sparselens.distributed import distributed_session

    with distributed_session(cfg.device):
        return _train(cfg)


def _train(cfg: Config) -> int:
    from sparselens.data.cache import ActivationCache
    from sparselens.distributed import is_main_process
    from sparselens.training.checkpoint import find_checkpoint, saved_train_config
    from sparselens.training.trainer import Trainer

    if not cfg.cache:
        raise ValueError("give the activation cache folder: sparselens train CACHE --out OUT")
    cache = ActivationCache.open(cfg.cache)
    train = train_config(cfg)
    if cache.n_rows("train") < train.batch_size:
        raise ValueError(f"the train split of {cfg.cache} has {cache.n_rows('train')} tokens, "
                         f"fewer than one batch ({train.batch_size}); lower --batch-size or "
                         "harvest more tokens")
    train.hookpoint = cache.resolve(train.hookpoint) if train.hookpoint else None
    if train.target_hookpoint:
        train.target_hookpoint = cache.resolve(train.target_hookpoint)
    checkpoint = find_checkpoint(cfg.out) if cfg.resume else None
    if checkpoint is not None:
        _refuse_changed_options(train, saved_train_config(checkpoint))
        trainer = Trainer.resume(checkpoint, cache_data(cache, train), out_dir=cfg.out,
                                 log=train.log)
        if is_main_process():
            print(f"resuming {cfg.out} at step {trainer.progress.step}")
    else:
        trainer = Trainer(train, cache_data(cache, train), out_dir=cfg.out)
    trainer.fit()
    if is_main_process():
        print(f"trained {trainer.progress.tokens_seen} tokens; dictionary saved to {cfg.out}")
    return 0


def _refuse_changed_options(now: TrainConfig, saved: dict) -> None:
    """A resumed run must be the run that was started (logging options may differ)."""
    current = now.to_dict()
    changed = sorted(k for k in current if k != "log" and current[k] != saved.get(k))
    if changed:
        raise ValueError(f"--resume with options that differ from the checkpoint's: {changed}; "
                         "repeat the original options, or train into a new --out")
