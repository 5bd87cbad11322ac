"""The process group every multi-process command joins under ``torchrun``.

`torchrun` starts one worker per rank with RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and
MASTER_PORT set; `distributed_session` joins the group for a command's duration (gloo for
CPU tensors, NCCL for CUDA). Every helper here is a no-op without a group, so the
single-process code path is the one that runs with one rank. Training
(`sparselens.training.distributed`) and harvesting (`sparselens.data.harvest`) build on it.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

import torch
import torch.distributed as dist

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
    """Leave the group once every rank is here: a rank that tears down its gloo connections
    while another still talks to it can make the other abort (seen as SIGABRT in tests)."""
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


@contextlib.contextmanager
def distributed_session(device: str | torch.device = "cpu") -> Iterator[None]:
    """Join the torchrun process group (if launched by torchrun) for the duration of a command."""
    created = init_distributed(device)
    try:
        yield
    except BaseException:
        if created:  # no barrier: the other ranks may be anywhere, and torchrun stops them
            dist.destroy_process_group()
        raise
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


def broadcast_object(value: Any) -> Any:
    """Rank 0's value of a small picklable object (e.g. norm scales kept in a config)."""
    if world_size() == 1:
        return value
    holder = [value]
    dist.broadcast_object_list(holder, src=0)
    return holder[0]


def all_gather_object(value: Any) -> list[Any]:
    """Every rank's value of a small picklable object, in rank order (``[value]`` alone)."""
    if world_size() == 1:
        return [value]
    gathered: list[Any] = [None] * world_size()
    dist.all_gather_object(gathered, value)
    return gathered
