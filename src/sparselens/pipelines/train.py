"""Train a dictionary on a cache into a folder: start, resume an interrupted run exactly, or
reuse a finished one; a folder trained with other options is refused, never overwritten."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sparselens.data.cache import ActivationCache
from sparselens.data.factory import training_data
from sparselens.data.sites import Sites
from sparselens.dictionaries.base import Dictionary
from sparselens.io.atomic import read_json
from sparselens.io.native import CONFIG_FILE, load_dictionary
from sparselens.training.checkpoint import find_checkpoint, saved_train_config
from sparselens.training.config import TrainConfig
from sparselens.training.precision import as_trained
from sparselens.training.trainer import Trainer

TRAIN_CONFIG_FILE = "train_config.json"


@dataclass
class TrainResult:
    dictionary: Dictionary
    """The trained dictionary (as saved, scales folded)."""
    folder: Path
    steps: int | None
    """Steps taken by this call; None when a finished run was reused."""
    resumed_at: int | None = None
    """The step an interrupted run was resumed from, if it was."""


def train_on_cache(cfg: TrainConfig, cache: ActivationCache, out: str | Path,
                   resume: bool = True, reuse: bool = False) -> TrainResult:
    """Train `cfg` on the train split of `cache` into `out`.

    `resume`: continue from the latest checkpoint in `out` (its options must be `cfg`'s,
    logging aside). `reuse`: a finished run in `out` with the same options is loaded instead
    of trained again (what `run` and `diff` do on a re-run).
    """
    folder = Path(out)
    sites = Sites.from_cache(cache, cfg)
    # The cache's names for the sites; a config without a hookpoint keeps None (the trainer
    # takes the data's only one), so a resumed run compares equal to the one it continues.
    cfg = dataclasses.replace(cfg, hookpoint=sites.input if cfg.hookpoint else None,
                              target_hookpoint=sites.target)
    if reuse and (folder / CONFIG_FILE).exists() and (folder / TRAIN_CONFIG_FILE).exists():
        refuse_changed_options(cfg, read_json(folder / TRAIN_CONFIG_FILE, "training config"))
        return TrainResult(load_dictionary(folder, device=cfg.device), folder, None)
    data = training_data(cache, sites, cfg.batch_size, cfg.seed)
    checkpoint = find_checkpoint(folder) if resume else None
    if checkpoint is not None:
        refuse_changed_options(cfg, saved_train_config(checkpoint))
        trainer = Trainer.resume(checkpoint, data, out_dir=folder, log=cfg.log)
        resumed_at: int | None = trainer.progress.step
    else:
        trainer, resumed_at = Trainer(cfg, data, out_dir=folder), None
    start = trainer.progress.step
    dictionary = trainer.fit()
    return TrainResult(dictionary, folder, trainer.progress.step - start, resumed_at)


def refuse_changed_options(now: TrainConfig, saved: dict[str, Any]) -> None:
    """A resumed or reused run must be the run that was started (logging options may differ).
    Both sides normalised: "auto" autocast as this machine resolves it (what the trainer
    records), and old spellings (autocast None) as today's."""
    current = as_trained(now).to_dict()
    saved = TrainConfig.from_dict(saved).to_dict()
    changed = sorted(k for k in current if k != "log" and current[k] != saved.get(k))
    if changed:
        raise ValueError(f"the run in this folder was started with other options ({changed} "
                         "differ); repeat the original options, or train into a new --out")
