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
    from sparselens.data.factory import training_data
    from sparselens.data.sites import Sites
    from sparselens.distributed import is_main_process
    from sparselens.training.checkpoint import find_checkpoint, saved_train_config
    from sparselens.training.trainer import Trainer

    if not cfg.cache:
        raise ValueError("give the activation cache folder: sparselens train CACHE --out OUT")
    cache = ActivationCache.open(cfg.cache)
    train = train_config(cfg)
    sites = Sites.from_cache(cache, train)
    if train.hookpoint:  # the cache's names; a config without one keeps None (resume compares)
        train.hookpoint = sites.input
    if train.target_hookpoint:
        train.target_hookpoint = sites.target
    data = training_data(cache, sites, train.batch_size, train.seed)
    checkpoint = find_checkpoint(cfg.out) if cfg.resume else None
    if checkpoint is not None:
        _refuse_changed_options(train, saved_train_config(checkpoint))
        trainer = Trainer.resume(checkpoint, data, out_dir=cfg.out, log=train.log)
        if is_main_process():
            print(f"resuming {cfg.out} at step {trainer.progress.step}")
    else:
        trainer = Trainer(train, data, out_dir=cfg.out)
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
