"""``sparselens train CACHE --out OUT``: train a dictionary, or a sweep of them, on a cache."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sparselens.cli.options import positional, repeatable
from sparselens.training.config import TrainConfig

if TYPE_CHECKING:
    from sparselens.data.cache import ActivationCache
    from sparselens.training.preparation import DataFactory
    from sparselens.training.trainer import Trainer

NAME = "train"
HELP = ("Train a sparse dictionary (SAE, transcoder) on an activation cache; writes the "
        "dictionary, checkpoints and metrics.jsonl to --out. With --sweep, trains several "
        "dictionaries from one pass over the cache, one subfolder of --out each.")
SWEEP_FILE = "sweep.json"
"""Written to --out by a sweep: its members' names, options and training configs."""


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


def cache_data(cache: ActivationCache, cfg: TrainConfig, *more: TrainConfig) -> DataFactory:
    """Endless, seeded, full batches of the cache's train split, resumable by batch count
    (full batches keep the step count, and so the schedule, exactly as planned). The batches
    hold the hookpoints of `cfg` and of `more` (a sweep's other members), in the cache's
    storage dtype: the trainer casts them on its device."""
    sites = [h for c in (cfg, *more) for h in (c.hookpoint, c.target_hookpoint) if h is not None]
    wanted = list(dict.fromkeys(sites)) or None

    def data(skip_batches: int):
        return cache.batches(cfg.batch_size, hookpoints=wanted, split="train", seed=cfg.seed,
                             skip_batches=skip_batches, epochs=None, drop_last=True,
                             dtype=None)

    return data


def run(cfg: Config) -> int:
    """Train in this process, or as one rank of a data-parallel `torchrun` job."""
    from sparselens.distributed import distributed_session

    with distributed_session(cfg.device):
        return _train(cfg)


def _train(cfg: Config) -> int:
    from sparselens.data.cache import ActivationCache
    from sparselens.distributed import is_main_process
    from sparselens.training.sweep import expand_sweep
    from sparselens.training.together import fit_together

    if not cfg.cache:
        raise ValueError("give the activation cache folder: sparselens train CACHE --out OUT")
    cache = ActivationCache.open(cfg.cache)
    base = train_config(cfg)
    if cache.n_rows("train") < base.batch_size:
        raise ValueError(f"the train split of {cfg.cache} has {cache.n_rows('train')} tokens, "
                         f"fewer than one batch ({base.batch_size}); lower --batch-size or "
                         "harvest more tokens")
    out = Path(cfg.out)
    members = expand_sweep(base, cfg.sweep) if cfg.sweep else []
    runs = ([(m.name, _with_sites(cache, m.config), out / m.name) for m in members]
            or [("train", _with_sites(cache, base), out)])
    if members and is_main_process():
        _write_sweep_file(out, members, cfg.resume)
    data = cache_data(cache, *(config for _, config, _ in runs))
    samples: dict[tuple, Any] = {}
    trainers = [_trainer(config, data, folder, cfg.resume, samples)
                for _, config, folder in runs]
    fit_together(trainers, [name for name, _, _ in runs])
    if is_main_process():
        where = (str(out) if not members
                 else f"{len(members)} folders under {out} ({', '.join(m.name for m in members)})")
        tokens = trainers[0].progress.tokens_seen
        print(f"trained {tokens} tokens; {'dictionary' if not members else 'dictionaries'} "
              f"saved to {where}")
    return 0


def _with_sites(cache: ActivationCache, train: TrainConfig) -> TrainConfig:
    """`train` with its hookpoint names resolved against the cache (aliases -> stored names)."""
    return dataclasses.replace(
        train, hookpoint=cache.resolve(train.hookpoint) if train.hookpoint else None,
        target_hookpoint=(cache.resolve(train.target_hookpoint) if train.target_hookpoint
                          else None))


def _trainer(train: TrainConfig, data: DataFactory, folder: Path, resume: bool,
             samples: dict[tuple, Any]) -> Trainer:
    """Resume the run in `folder` if asked and it has a checkpoint, else start it (reading the
    initialisation sample once for every run that needs the same one)."""
    from sparselens.distributed import is_main_process
    from sparselens.training.checkpoint import find_checkpoint, saved_train_config
    from sparselens.training.preparation import collect_sample
    from sparselens.training.trainer import Trainer

    checkpoint = find_checkpoint(folder) if resume else None
    if checkpoint is not None:
        _refuse_changed_options(train, saved_train_config(checkpoint))
        trainer = Trainer.resume(checkpoint, data, out_dir=folder, log=train.log)
        if is_main_process():
            print(f"resuming {folder} at step {trainer.progress.step}")
        return trainer
    key = (train.hookpoint, train.target_hookpoint, train.init_tokens)
    if key not in samples:
        samples[key] = collect_sample(data, train)
    return Trainer(train, data, out_dir=folder, sample=samples[key])


def _write_sweep_file(out: Path, members: list, resume: bool) -> None:
    """Record the sweep's members in OUT/sweep.json; a resume must name the same members."""
    from sparselens.io.atomic import atomic_write_json, read_json

    path = out / SWEEP_FILE
    listed = [{"name": m.name, "overrides": m.overrides, "train_config": m.config.to_dict()}
              for m in members]
    if resume and path.exists():
        before = [m["name"] for m in read_json(path, "sweep file")["members"]]
        if before != [m.name for m in members]:
            raise ValueError(f"--resume with a different sweep: {out} holds {before}, the "
                             f"options give {[m.name for m in members]}; repeat the original "
                             "--sweep options, or train into a new --out")
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, {"members": listed})


def _refuse_changed_options(now: TrainConfig, saved: dict) -> None:
    """A resumed run must be the run that was started (logging options may differ). Both
    sides are normalised: "auto" autocast as this machine resolves it, old spellings
    (autocast None) as today's."""
    from sparselens.training.precision import as_trained

    current = as_trained(now).to_dict()
    before = TrainConfig.from_dict(saved).to_dict()
    changed = sorted(k for k in current if k != "log" and current[k] != before.get(k))
    if changed:
        raise ValueError(f"--resume with options that differ from the checkpoint's: {changed}; "
                         "repeat the original options, or train into a new --out")
