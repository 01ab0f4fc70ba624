"""Measure what a worker uses (rank 0's process, recorded per attempt): CPU seconds of the process and its
finished children over the wall time and the cores the rank was given, peak resident memory, and on a GPU
the peak memory torch allocated on the job's own device and its utilisation sampled at epoch ends
(``torch.cuda.utilization``, where NVML answers)."""

from __future__ import annotations

import logging
import os
import resource
import time

from db.usage import Usage

log = logging.getLogger(__name__)
MIB = 1024 * 1024


def allocated_cores() -> int:
    """The cores this rank was given: its thread count (the backends set it to ``cpus_per_task``)."""
    try:
        return max(1, int(os.environ.get("OMP_NUM_THREADS", "1")))
    except ValueError:
        return 1


class UsageMeter:
    """From construction to :meth:`usage`: one attempt of one rank."""

    def __init__(self, cores: int | None = None) -> None:
        self.cores = cores or allocated_cores()
        self._wall0 = time.monotonic()
        self._cpu0 = self._cpu_seconds()
        self._gpu_samples: list[float] = []

    @staticmethod
    def _cpu_seconds() -> float:
        t = os.times()
        return t.user + t.system + t.children_user + t.children_system

    @staticmethod
    def _cuda():  # type: ignore[no-untyped-def]
        try:
            import torch
        except ImportError:
            return None
        return torch.cuda if torch.cuda.is_available() else None

    def sample(self) -> None:
        """Sample the GPU's utilisation (at an epoch end); nothing without a GPU or NVML."""
        cuda = self._cuda()
        if cuda is None:
            return
        try:
            self._gpu_samples.append(float(cuda.utilization(cuda.current_device())) / 100.0)
        except Exception as exc:  # noqa: BLE001 (no pynvml, or NVML refuses: utilisation unknown)
            log.debug("no GPU utilisation: %s", exc)

    def usage(self) -> Usage:
        """What was used since construction."""
        wall = max(time.monotonic() - self._wall0, 1e-9)
        cpu = self._cpu_seconds() - self._cpu0
        rss_kib = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                      resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
        gpu_mem = gpu_util = None
        if (cuda := self._cuda()) is not None:
            gpu_mem = cuda.max_memory_allocated(cuda.current_device()) / MIB
            gpu_util = sum(self._gpu_samples) / len(self._gpu_samples) if self._gpu_samples else None
        return Usage(cpu_time_s=cpu, cpu_util=cpu / (wall * self.cores), max_rss_mb=rss_kib / 1024,
                     gpu_util=gpu_util, gpu_mem_peak_mb=gpu_mem, source="worker")
