"""Data-parallel training under ``torchrun``: the process group, each process's device, the DDP
wrappers and the buffers every rank must share at the end.

``torchrun`` describes the group in the environment (``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``);
without it a run is one process. The backend is gloo on CPUs and NCCL on GPUs; only rank 0
writes files (docs/design.md, "Run folder").
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from geospade.models.precision import resolve_device


@dataclass(frozen=True)
class DistContext:
    """This process's place in the process group.

    Args:
        rank: its rank (0: the one that writes files).
        world: processes in the group (1: not distributed).
        local_rank: its rank on this machine (its GPU).
        owned: whether :func:`init_distributed` created the group (and so must destroy it).
    """

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    owned: bool = False

    @property
    def main(self) -> bool:
        """Whether this process writes the run's files."""
        return self.rank == 0


def init_distributed(device: str) -> DistContext:
    """Join the process group ``torchrun`` describes (env ``WORLD_SIZE`` > 1), if any.

    A group that already exists (the caller made it) is joined as it is and left to the caller.

    Args:
        device: the configured device; "auto" means CUDA when available. It picks the backend.

    Returns:
        The :class:`DistContext`; close it with :func:`close_distributed`.
    """
    if dist.is_available() and dist.is_initialized():
        return DistContext(dist.get_rank(), dist.get_world_size(),
                           int(os.environ.get("LOCAL_RANK", dist.get_rank())))
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistContext()
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dist.init_process_group(backend="nccl" if device.startswith("cuda") else "gloo")
    return DistContext(dist.get_rank(), dist.get_world_size(),
                       int(os.environ.get("LOCAL_RANK", "0")), owned=True)


def close_distributed(ctx: DistContext) -> None:
    """Destroy the process group if :func:`init_distributed` created it."""
    if ctx.owned:
        dist.destroy_process_group()


def training_device(name: str, ctx: DistContext) -> torch.device:
    """The device this process trains on: ``name`` resolved, and under DDP a bare "cuda"
    becomes this process's GPU (``LOCAL_RANK``), made the current one."""
    device = resolve_device(name)
    if device.type == "cuda":
        if device.index is None:
            device = torch.device("cuda", ctx.local_rank if ctx.world > 1 else 0)
        torch.cuda.set_device(device)
    return device


def barrier(ctx: DistContext) -> None:
    """Wait for every rank (no-op for one process)."""
    if ctx.world > 1:
        dist.barrier()


def wrap(module: nn.Module, device: torch.device, ctx: DistContext) -> nn.Module:
    """``module`` in a ``DistributedDataParallel`` wrapper under DDP, else ``module`` itself."""
    if ctx.world <= 1:
        return module
    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(module, device_ids=ids)


def share_buffers(modules: Iterable[nn.Module], ctx: DistContext) -> None:
    """Give every rank rank 0's buffers (batch-norm running statistics).

    DDP broadcasts rank 0's buffers at the start of each forward; after the last step each rank
    holds its own, so the final models differ without this.
    """
    if ctx.world <= 1:
        return
    for module in modules:
        for buffer in module.buffers():
            dist.broadcast(buffer, src=0)
