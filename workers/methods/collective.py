"""Collectives the methods use inside their forward pass (identity on one process)."""

from __future__ import annotations

import torch
import torch.distributed as dist


def world_rank() -> tuple[int, int]:
    """(world size, rank) of the default process group, (1, 0) without one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size(), dist.get_rank()
    return 1, 0


@torch.no_grad()
def gather_no_grad(x: torch.Tensor) -> torch.Tensor:
    """Every rank's ``x`` (same shape on every rank) concatenated along dim 0 in rank order, no gradient."""
    world, _ = world_rank()
    if world == 1:
        return x
    parts = [torch.empty_like(x) for _ in range(world)]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts, dim=0)


@torch.no_grad()
def all_reduce_sum_(x: torch.Tensor) -> torch.Tensor:
    """Sum ``x`` over the ranks in place (and return it)."""
    if world_rank()[0] > 1:
        dist.all_reduce(x)
    return x


@torch.no_grad()
def broadcast_(x: torch.Tensor, src: int = 0) -> torch.Tensor:
    """Rank ``src``'s ``x`` on every rank, in place."""
    if world_rank()[0] > 1:
        dist.broadcast(x, src=src)
    return x
