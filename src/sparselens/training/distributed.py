"""Data-parallel training under ``torchrun``: process group, data sharding and synchronisation.

Every rank holds a full copy of the dictionary and the optimizer. All ranks walk the same
seeded sequence of *global* batches and rank r trains on rows ``r::world`` of each, so the
union of what the ranks see in a step is exactly the batch a single process would see.
Gradients are averaged before clipping and the optimizer step, so (for losses that are a mean
over tokens) a step is the single-process step up to the order of floating-point sums.

The trainer calls the functions below unconditionally; without an initialised process group
(or with one rank) each is a no-op that returns its input, so single-process runs take exactly
the code path, and give exactly the bits, they did before distributed support existed.

A plain all-reduce is used instead of `DistributedDataParallel` because the trainer computes
its loss through `Dictionary.training_loss`, not `forward`, and variants touch gradients
between backward and the step (`before_optimizer_step`); one explicit averaging call after
backward keeps that order obvious.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Iterator
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from sparselens.data.batch import ActivationBatch

TORCHRUN_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
"""Environment variables `torchrun` sets for every worker process."""


# ---- process group ----

def launched_by_torchrun() -> bool:
    """True in a worker that `torchrun` (or an equivalent launcher) started with >1 ranks."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def backend_for(device: str | torch.device) -> str:
    """NCCL for CUDA tensors (fast GPU collectives), gloo for CPU tensors."""
    return "nccl" if torch.device(device).type == "cuda" else "gloo"


def init_distributed(device: str | torch.device = "cpu") -> bool:
    """Join the process group described by torchrun's environment variables.

    Returns True when this call created the group (the caller then owns `shutdown`); False
    when not launched by torchrun or when a group already exists (e.g. the user made one).
    """
    if dist.is_initialized() or not launched_by_torchrun():
        return False
    missing = [name for name in TORCHRUN_VARS if name not in os.environ]
    if missing:
        raise ValueError(f"WORLD_SIZE > 1 but {missing} are not set; launch with `torchrun "
                         "--nproc_per_node N -m sparselens.cli.main ...` or set them all")
    backend = backend_for(device)
    if backend == "nccl":
        if not torch.cuda.is_available():
            raise ValueError(f"device {device!r} needs CUDA, which is not available; "
                             "use --device cpu (gloo) for CPU-only data parallelism")
        torch.cuda.set_device(local_rank())
    dist.init_process_group(backend)
    return True


def shutdown_distributed() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


@contextlib.contextmanager
def distributed_session(device: str | torch.device = "cpu") -> Iterator[None]:
    """Join the torchrun process group (if launched by torchrun) for the duration of a command."""
    created = init_distributed(device)
    try:
        yield
    finally:
        if created:
            shutdown_distributed()


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def local_rank() -> int:
    """Index of this process on its machine (which GPU it drives)."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def is_main_process() -> bool:
    """Rank 0 writes checkpoints, metrics files and prints; the others stay silent."""
    return rank() == 0


def barrier() -> None:
    if world_size() > 1:
        dist.barrier()


def local_device(device: torch.device) -> torch.device:
    """``cuda`` without an index means "this rank's GPU" (LOCAL_RANK) under torchrun."""
    if device.type == "cuda" and device.index is None and world_size() > 1:
        return torch.device("cuda", local_rank())
    return device


# ---- data ----

def require_even_split(batch_size: int) -> None:
    """Every rank must get the same number of rows, or averaged gradients would be biased."""
    world = world_size()
    if batch_size % world:
        raise ValueError(f"batch_size {batch_size} does not split evenly over {world} processes;"
                         f" use a multiple of {world} (it is the global batch, summed over ranks)")


def shard_batches(batches: Iterator[ActivationBatch]) -> Iterator[ActivationBatch]:
    """This rank's rows ``rank::world`` of each global batch (the batches themselves when
    single-process)."""
    world = world_size()
    if world == 1:
        return batches
    return (_rows_of_rank(batch, index, rank(), world) for index, batch in enumerate(batches))


def _rows_of_rank(batch: ActivationBatch, index: int, rank_: int, world: int) -> ActivationBatch:
    if len(batch) % world:
        raise ValueError(f"a global batch of {len(batch)} rows (the {index}-th read) does not "
                         f"split evenly over {world} processes; the data must yield full "
                         f"batches whose size is a multiple of {world}")
    rows = slice(rank_, None, world)
    return ActivationBatch(acts={k: v[rows] for k, v in batch.acts.items()},
                           token_ids=batch.token_ids[rows], seq_ids=batch.seq_ids[rows],
                           positions=batch.positions[rows])


def global_rows(local_rows: int) -> int:
    """Rows of the global batch, given this rank's share (shares are equal by construction)."""
    return local_rows * world_size()


# ---- synchronisation ----

def average_gradients(parameters: Iterable[nn.Parameter]) -> None:
    """Replace every gradient by its mean over ranks (one all-reduce per dtype).

    A parameter that got no gradient on any rank keeps ``grad=None`` (Adam then skips it, as
    in a single process); one that got a gradient on some ranks only is treated as zero on
    the others.
    """
    world = world_size()
    if world == 1:
        return
    params = [p for p in parameters if p.requires_grad]
    if not params:
        return
    present = torch.tensor([p.grad is not None for p in params], dtype=torch.int32,
                           device=params[0].device)
    dist.all_reduce(present)
    used = [p for p, count in zip(params, present.tolist()) if count > 0]
    for group in _by_dtype(used).values():
        flat = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1)
                          for p in group])
        dist.all_reduce(flat)
        flat.div_(world)
        for p, chunk in zip(group, flat.split([p.numel() for p in group])):
            if p.grad is None:
                p.grad = chunk.view_as(p).clone()
            else:
                p.grad.copy_(chunk.view_as(p))


def fired_on_any_rank(fired: Tensor) -> Tensor:
    """OR of a bool ``(n_latents,)`` "fired in this batch" mask over ranks, so every rank's
    dead-latent counters, and hence the AuxK dead mask, stay identical."""
    if world_size() == 1:
        return fired
    counts = fired.to(torch.int32)
    dist.all_reduce(counts, op=dist.ReduceOp.MAX)
    return counts.bool()


def average_metrics(values: dict[str, float], device: torch.device) -> dict[str, float]:
    """Mean over ranks of each logged metric (each rank measured its own share of the batch)."""
    if world_size() == 1 or not values:
        return values
    names = list(values)
    stacked = torch.tensor([values[n] for n in names], dtype=torch.float64, device=device)
    dist.all_reduce(stacked)
    return dict(zip(names, (stacked / world_size()).tolist()))


def broadcast_state(module: nn.Module, include_parameters: bool = True) -> None:
    """Copy rank 0's parameters (optional) and buffers to every rank, in place.

    After the data-dependent init this guarantees identical starting weights even if ranks
    computed them on different hardware; after every step it keeps data-dependent buffers
    (BatchTopK's threshold, running densities) identical, as DDP does with its buffers.
    """
    if world_size() == 1:
        return
    tensors = list(module.buffers())
    if include_parameters:
        tensors += list(module.parameters())
    for group in _by_dtype(tensors).values():
        flat = torch.cat([t.detach().reshape(-1) for t in group])
        dist.broadcast(flat, src=0)
        with torch.no_grad():
            for t, chunk in zip(group, flat.split([t.numel() for t in group])):
                t.copy_(chunk.view_as(t))


def broadcast_object(value: Any) -> Any:
    """Rank 0's value of a small picklable object (e.g. norm scales kept in a config)."""
    if world_size() == 1:
        return value
    holder = [value]
    dist.broadcast_object_list(holder, src=0)
    return holder[0]


def _by_dtype(tensors: list[Tensor]) -> dict[torch.dtype, list[Tensor]]:
    groups: dict[torch.dtype, list[Tensor]] = {}
    for t in tensors:
        groups.setdefault(t.dtype, []).append(t)
    return groups


def synchronise_initialisation(dictionary: nn.Module) -> None:
    """Give every rank rank 0's initial weights, buffers and norm scales (call it once the
    dictionary is on its training device: NCCL only moves GPU tensors)."""
    if world_size() == 1:
        return
    cfg = dictionary.cfg
    cfg.input_scale, cfg.output_scale = broadcast_object((cfg.input_scale, cfg.output_scale))
    broadcast_state(dictionary)
