"""What an attempt used of what it was given (schema 0005): CPU time and utilisation per allocated core,
peak memory, GPU utilisation and peak GPU memory. Measured by the worker (rank 0's process) or read from
SLURM's accounting; a mixin of :class:`db.store.Store`."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from sqlalchemy import update

from db.mixin import StoreMixin
from db.models import Attempt


@dataclass(frozen=True)
class Usage:
    """One attempt's resource use; None where it was not measured (no GPU, no accounting)."""

    cpu_time_s: float | None = None
    cpu_util: float | None = None  # CPU seconds / (wall seconds x allocated cores)
    max_rss_mb: float | None = None
    gpu_util: float | None = None  # 0..1
    gpu_mem_peak_mb: float | None = None
    source: str | None = None  # "worker" or "sacct"

    def to_dict(self) -> dict[str, float | str | None]:
        return asdict(self)

    def device_util(self) -> float | None:
        """The utilisation that matters: the GPU's where there is one, else the CPU's per allocated core."""
        return self.gpu_util if self.gpu_util is not None else self.cpu_util

    def measured(self) -> bool:
        return any(v is not None for k, v in asdict(self).items() if k != "source")


def _finite(x: float | None) -> float | None:
    return x if x is not None and math.isfinite(x) else None


class UsageStore(StoreMixin):
    """Store methods for attempt usage."""

    def set_attempt_usage(self, attempt_id: int, usage: Usage) -> None:
        """Record what attempt ``attempt_id`` used (a later call replaces what it measured)."""
        with self.session() as s:
            s.execute(update(Attempt).where(Attempt.id == attempt_id).values(
                cpu_time_s=_finite(usage.cpu_time_s), cpu_util=_finite(usage.cpu_util),
                max_rss_mb=_finite(usage.max_rss_mb), gpu_util=_finite(usage.gpu_util),
                gpu_mem_peak_mb=_finite(usage.gpu_mem_peak_mb), usage_source=usage.source))


def usage_of(a: Attempt) -> Usage | None:
    """The usage recorded on an attempt row (None if nothing was)."""
    u = Usage(a.cpu_time_s, a.cpu_util, a.max_rss_mb, a.gpu_util, a.gpu_mem_peak_mb, a.usage_source)
    return u if u.measured() else None


__all__ = ["Usage", "UsageStore", "usage_of"]
