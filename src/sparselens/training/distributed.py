"""Data-parallel training under ``torchrun``: data sharding and synchronisation.

The process group itself (joining it, rank, world size) lives in `sparselens.distributed`.

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

from collections.abc import Iterable, Iterator

import torch
import torch.distributed as dist
from torch import Tensor, nn

from sparselens.data.batch import ActivationBatch

# barrier, is_main_process and local_device are re-exported: the trainer reaches everything
# distributed through this one module.
from sparselens.distributed import (  # noqa: F401
    barrier,
    broadcast_object,
    is_main_process,
    local_device,
    rank,
    world_size,
)

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
