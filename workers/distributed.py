"""Process-group set-up from torchrun's (or SLURM's) environment."""

from __future__ import annotations

import datetime
import logging
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistContext:
    rank: int
    local_rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def setup_distributed() -> DistContext:
    """Initialise the process group when ``WORLD_SIZE`` > 1: NCCL on GPUs, gloo on CPUs; collectives time
    out after ``DLTH_DIST_TIMEOUT_S`` seconds (default 1800)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    else:
        device = torch.device("cpu")
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        timeout = datetime.timedelta(seconds=float(os.environ.get("DLTH_DIST_TIMEOUT_S", "1800")))
        dist.init_process_group(backend=backend, timeout=timeout)
        log.info("process group %s: rank %d/%d", backend, rank, world)
    log.info("rank %d runs on %s (CUDA_VISIBLE_DEVICES=%s)", rank, device,
             os.environ.get("CUDA_VISIBLE_DEVICES", "unset"))
    return DistContext(rank=rank, local_rank=local_rank, world_size=world, device=device)


def barrier(ctx: DistContext) -> None:
    if ctx.distributed:
        dist.barrier()


def broadcast_flag(ctx: DistContext, value: bool) -> bool:
    """Rank 0's ``value`` on every rank."""
    if not ctx.distributed:
        return value
    t = torch.tensor([1 if value else 0], dtype=torch.int64, device=ctx.device)  # NCCL: tensors on the GPU
    dist.broadcast(t, src=0)
    return bool(t.item())


def any_rank(ctx: DistContext, value: bool) -> bool:
    """True on every rank if ``value`` is true on any rank (so all ranks stop at the same batch)."""
    if not ctx.distributed:
        return value
    t = torch.tensor([1 if value else 0], dtype=torch.int64, device=ctx.device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def first_rank_with(ctx: DistContext, flag: bool, value: float = 0.0) -> tuple[int, float] | None:
    """The lowest rank whose ``flag`` is true and its ``value``, on every rank (None if no rank's is): one
    all-reduce, plus one broadcast of the value when some rank's flag is true."""
    if not ctx.distributed:
        return (ctx.rank, value) if flag else None
    t = torch.tensor([ctx.rank if flag else ctx.world_size], dtype=torch.int64, device=ctx.device)
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    rank = int(t.item())
    if rank >= ctx.world_size:
        return None
    v = torch.tensor([value], dtype=torch.float64 if ctx.device.type == "cpu" else torch.float32, device=ctx.device)
    dist.broadcast(v, src=rank)
    return rank, float(v.item())


def all_reduce_mean(ctx: DistContext, value: float) -> float:
    if not ctx.distributed:
        return value
    t = torch.tensor([value], dtype=torch.float64 if ctx.device.type == "cpu" else torch.float32,
                     device=ctx.device)
    dist.all_reduce(t)
    return float(t.item()) / ctx.world_size


def all_reduce_sum(ctx: DistContext, values: list[float]) -> list[float]:
    """Element-wise sum of ``values`` over all ranks (every rank must pass the same length)."""
    if not ctx.distributed:
        return list(values)
    t = torch.tensor(values, dtype=torch.float64 if ctx.device.type == "cpu" else torch.float32, device=ctx.device)
    dist.all_reduce(t)
    return [float(v) for v in t.tolist()]


def all_gather_rows(ctx: DistContext, t: torch.Tensor) -> torch.Tensor:
    """Every rank's ``t`` concatenated along dim 0 in rank order; ranks may hold different row counts.

    ``t`` must live on ``ctx.device`` (NCCL gathers GPU tensors only)."""
    if not ctx.distributed:
        return t
    count = torch.tensor([t.shape[0]], dtype=torch.int64, device=t.device)
    counts = [torch.zeros_like(count) for _ in range(ctx.world_size)]
    dist.all_gather(counts, count)
    sizes = [int(c.item()) for c in counts]
    padded = t.new_zeros((max(sizes), *t.shape[1:]))
    padded[: t.shape[0]] = t
    parts = [torch.empty_like(padded) for _ in range(ctx.world_size)]
    dist.all_gather(parts, padded)
    return torch.cat([p[:n] for p, n in zip(parts, sizes, strict=True)])


def broadcast_buffers(ctx: DistContext, module: torch.nn.Module) -> None:
    """Copy rank 0's buffers (e.g. BatchNorm running statistics, which each rank updated on its own last
    batch) to every rank, so that every rank evaluates the model rank 0 checkpoints."""
    if not ctx.distributed:
        return
    for buf in module.buffers():
        dist.broadcast(buf.data, src=0)


def teardown(ctx: DistContext) -> None:
    if ctx.distributed and dist.is_initialized():
        dist.destroy_process_group()
