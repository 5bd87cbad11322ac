"""The training loop: one stream of batches driving one or several dictionaries.

Sweeps (widths, k, architectures, learning rates) are usually trained as separate runs, each
reading and shuffling the whole cache again. Here every batch is read, shuffled and moved to the
device once and then handed to each `Trainer` in turn; each keeps its own dictionary, optimizer,
schedule, dead-latent counters, RNG state, metrics and checkpoints. A single run is the same
loop with one trainer (`Trainer.fit`).

Exactness: the batch at data position i is the one a separate run would read at step i, and
each trainer steps with its own RNG state, so on the CPU a dictionary trained in a sweep is bit
for bit the dictionary trained alone on the same data. Resuming: a trainer consumes the batch at
position i only when it has taken exactly i steps, so trainers whose latest checkpoints are at
different steps (a crash between two members' checkpoints) each continue exactly where they
stopped, and the stream starts at the earliest of them.
"""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import torch

from sparselens.dictionaries.base import Dictionary
from sparselens.training import distributed as dp
from sparselens.training.device_batch import DeviceBatch

if TYPE_CHECKING:
    from sparselens.training.metrics_log import MetricsLog


class Trainer(Protocol):
    """What the loop needs of a `trainer.Trainer` (a protocol, so that trainer.py, which calls
    this loop, is not imported back)."""

    cfg: Any
    data: Callable[..., Any]
    device: torch.device
    dictionary: Dictionary
    out_dir: Path | None
    progress: Any
    failed: NonFiniteLoss | None

    @property
    def done(self) -> bool: ...
    def begin(self) -> None: ...
    def step(self, batch: DeviceBatch, log: MetricsLog) -> None: ...
    def finish(self, log: MetricsLog) -> None: ...
    def open_log(self, name: str = ..., position: int = ...) -> MetricsLog: ...


class NonFiniteLoss(ValueError):
    """The loss went NaN/inf; the message says whether the data or the training is to blame."""


def fit_together(trainers: Sequence[Trainer], names: Sequence[str] | None = None
                 ) -> list[Dictionary]:
    """Train every trainer until its token budget is spent (or the data runs out) from one
    read of their shared data; save each and return the dictionaries. `names` label their
    progress bars and messages (default: the output folders' names).

    In a sweep, a trainer whose loss goes non-finite stops alone (its last checkpoint stays
    its latest); the others finish and are saved, then `NonFiniteLoss` names the failures."""
    if not trainers:
        raise ValueError("fit_together needs at least one trainer")
    check_shared_stream(trainers)
    names = list(names) if names is not None else _default_names(trainers)
    logs = [t.open_log(name, position) for position, (t, name)
            in enumerate(zip(trainers, names))]
    members = list(zip(trainers, names, logs))
    try:
        _run(members)
        for trainer, name, log in members:
            if trainer.failed is None:
                _isolated(members, trainer, name, log, trainer.finish, log)
    finally:
        for log in logs:
            log.close()
    failed = [(name, t.failed) for t, name, _ in members if t.failed is not None]
    if failed:
        raise NonFiniteLoss("; ".join(f"{name}: {err}" for name, err in failed)
                            + f" (the other {len(trainers) - len(failed)} finished and were saved)")
    return [t.dictionary for t in trainers]


Member = tuple["Trainer", str, "MetricsLog"]


def _run(members: list[Member]) -> None:
    trainers = [t for t, _, _ in members]
    pending = [t for t in trainers if not t.done]
    if not pending:
        return
    start = min(t.progress.step for t in pending)
    first = trainers[0]
    batches = dp.shard_batches(first.data(start))
    for trainer in trainers:
        trainer.begin()
    for position in itertools.count(start):
        if all(t.done for t in trainers):
            return
        batch = next(batches, None)
        if batch is None:
            _warn_ran_out(members)
            return
        shared = DeviceBatch(batch, first.device)
        for trainer, name, log in members:
            # a trainer resumed from a later checkpoint waits for its own data position
            if not trainer.done and trainer.progress.step == position:
                _isolated(members, trainer, name, log, trainer.step, shared, log)


def _isolated(members: list[Member], trainer: Trainer, name: str, log: MetricsLog,
              action: Callable[..., None], *args: object) -> None:
    """Run `action`; in a sweep a non-finite loss stops this trainer only."""
    try:
        action(*args)
    except NonFiniteLoss as err:
        if len(members) == 1:
            raise
        trainer.failed = err
        log.message(f"{name} stopped: {err}")


def _warn_ran_out(members: list[Member]) -> None:
    for trainer, name, _ in members:
        if not trainer.done:
            who = "" if len(members) == 1 else f" ({name})"
            warnings.warn(f"the training data ran out after {trainer.progress.tokens_seen} of "
                          f"{trainer.cfg.n_tokens} tokens; stopping early{who}", stacklevel=4)


def check_shared_stream(trainers: Sequence[Trainer]) -> None:
    """Refuse trainers that cannot share one stream: a different data source, batch size,
    data seed or device would each need their own pass over the data."""
    first = trainers[0]
    for trainer in trainers[1:]:
        if trainer.data is not first.data:
            raise ValueError("trainers trained together must share one data factory "
                             "(the same object): the point is to read the data once")
        for name in ("batch_size", "seed", "device"):
            mine, theirs = getattr(trainer.cfg, name), getattr(first.cfg, name)
            if mine != theirs:
                raise ValueError(f"trainers trained together read one stream, so {name} must "
                                 f"be the same for all; got {theirs!r} and {mine!r}. Train "
                                 f"different {name}s as separate runs")
    folders = [t.out_dir.resolve() for t in trainers if t.out_dir is not None]
    if len(set(folders)) != len(folders):
        raise ValueError("two trainers write to the same output folder; give each its own")


def _default_names(trainers: Sequence[Trainer]) -> list[str]:
    if len(trainers) == 1:
        return ["train"]
    return [t.out_dir.name if t.out_dir is not None else f"dictionary {i}"
            for i, t in enumerate(trainers)]
