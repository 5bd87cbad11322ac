"""Train a sweep of dictionaries on a cache from one pass over it: one folder per member under
`out`, plus `out/sweep.json`; every member resumes exactly (docs/training.md)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sparselens.data.cache import ActivationCache
from sparselens.data.factory import DataFactory, training_data
from sparselens.data.sites import Sites
from sparselens.io.atomic import atomic_write_json, read_json
from sparselens.pipelines.train import refuse_changed_options
from sparselens.training.checkpoint import find_checkpoint, saved_train_config
from sparselens.training.config import TrainConfig
from sparselens.training.preparation import collect_sample
from sparselens.training.sweep import SweepMember, expand_sweep
from sparselens.training.together import fit_together
from sparselens.training.trainer import Trainer

SWEEP_FILE = "sweep.json"
"""Written to the sweep's folder: its members' names, options and training configs."""


@dataclass
class SweepResult:
    folders: dict[str, Path]
    """Member name -> its run folder."""
    steps: int
    """Data positions streamed (the longest member's steps)."""
    resumed: dict[str, int]
    """Members resumed from a checkpoint, and the step they resumed at."""


def train_sweep_on_cache(base: TrainConfig, cache: ActivationCache, out: str | Path,
                         entries: list[str], resume: bool = False,
                         write_file: bool = True) -> SweepResult:
    """Expand `entries` (see `training.sweep`) over `base` and train every member from one
    read of the train split of `cache`. `write_file`: record the members (rank 0 only)."""
    folder = Path(out)
    members = [dataclasses.replace(m, config=_in_cache(cache, m.config))
               for m in expand_sweep(base, entries)]
    if write_file:
        _write_sweep_file(folder, members, resume)
    sites = [Sites.from_cache(cache, m.config) for m in members]
    shared = sites[0] if all(s.names == sites[0].names for s in sites) else None
    data = training_data(cache, shared, base.batch_size, base.seed)  # None: every hookpoint
    samples: dict[tuple, Any] = {}
    resumed: dict[str, int] = {}
    trainers = []
    for member in members:
        trainer = _trainer(member.config, data, folder / member.name, resume, samples)
        if trainer.progress.step:
            resumed[member.name] = trainer.progress.step
        trainers.append(trainer)
    fit_together(trainers, [m.name for m in members])
    return SweepResult({m.name: folder / m.name for m in members},
                       max(t.progress.step for t in trainers), resumed)


def _in_cache(cache: ActivationCache, cfg: TrainConfig) -> TrainConfig:
    """`cfg` with the cache's names for its sites (as `train_on_cache` records them)."""
    sites = Sites.from_cache(cache, cfg)
    return dataclasses.replace(cfg, hookpoint=sites.input if cfg.hookpoint else None,
                               target_hookpoint=sites.target)


def _trainer(cfg: TrainConfig, data: DataFactory, folder: Path, resume: bool,
             samples: dict[tuple, Any]) -> Trainer:
    """Resume the member's run if asked and it has a checkpoint, else start it (reading the
    initialisation sample once for every member that needs the same one)."""
    checkpoint = find_checkpoint(folder) if resume else None
    if checkpoint is not None:
        refuse_changed_options(cfg, saved_train_config(checkpoint))
        return Trainer.resume(checkpoint, data, out_dir=folder, log=cfg.log)
    key = (cfg.hookpoint, cfg.target_hookpoint, cfg.init_tokens)
    if key not in samples:
        samples[key] = collect_sample(data, cfg)
    return Trainer(cfg, data, out_dir=folder, sample=samples[key])


def _write_sweep_file(out: Path, members: list[SweepMember], resume: bool) -> None:
    """Record the members in OUT/sweep.json; a resume must name the same members."""
    path = out / SWEEP_FILE
    if resume and path.exists():
        before = [m["name"] for m in read_json(path, "sweep file")["members"]]
        if before != [m.name for m in members]:
            raise ValueError(f"--resume with a different sweep: {out} holds {before}, the "
                             f"options give {[m.name for m in members]}; repeat the original "
                             "--sweep options, or train into a new --out")
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, {"members": [
        {"name": m.name, "overrides": m.overrides, "train_config": m.config.to_dict()}
        for m in members]})
