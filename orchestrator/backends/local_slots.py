"""What the local backend may run at once on this machine, and on which GPUs.

On a machine with GPUs every rank of a job gets a GPU of its own: a job takes ``nproc_per_node`` GPUs
(or ``gpus_per_node`` if larger), and its workers see exactly those through ``CUDA_VISIBLE_DEVICES``, so
two jobs never share a device and rank ``r`` uses the job's ``r``-th GPU. Without GPUs jobs are packed
into CPU cores (``nproc_per_node x cpus_per_task`` each).

The local profile (``cluster_profiles/local.toml`` or the grid's ``[cluster]`` table) may set
``max_slots`` (cores to use; 0 = all) and ``gpus`` (the device ids to hand out, written as
``CUDA_VISIBLE_DEVICES`` takes them; default: every GPU this process can see).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from specs.base import SpecError
from specs.job import Resources


@dataclass(frozen=True)
class Allocation:
    """What one running job holds: a number of slots and, on a GPU machine, which GPUs."""

    slots: int
    gpus: tuple[str, ...] = ()

    def env(self) -> dict[str, str]:
        """Environment for the job's workers (``CUDA_VISIBLE_DEVICES`` on a GPU machine)."""
        return {"CUDA_VISIBLE_DEVICES": ",".join(self.gpus)} if self.gpus else {}


def _gpu_driver() -> bool:
    """Whether this machine shows a GPU driver with a device (cheap: a few file system lookups)."""
    nvidia = Path("/proc/driver/nvidia/gpus")
    return (nvidia.is_dir() and any(nvidia.iterdir())) or any(Path("/dev").glob("nvidia[0-9]*")) \
        or Path("/dev/kfd").exists()


def visible_gpus() -> list[str]:
    """The GPUs this process may use, as ``CUDA_VISIBLE_DEVICES`` names them (ids or UUIDs). Without a GPU
    driver (no NVIDIA ``/proc/driver/nvidia/gpus`` entry or ``/dev/nvidiaN``, no ROCm ``/dev/kfd``) there is
    none, and torch (seconds to import) is not asked."""
    if not _gpu_driver():
        return []
    try:
        import torch

        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    except ImportError:
        count = 0
    if not count:
        return []
    listed = [g.strip() for g in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if g.strip()]
    return listed[:count] if listed else [str(i) for i in range(count)]


def _profile_gpus(profile: dict[str, Any]) -> list[str] | None:
    value = profile.get("gpus")
    if value is None or value == "all":
        return None
    if not isinstance(value, list) or not all(isinstance(g, int | str) and not isinstance(g, bool) for g in value):
        raise SpecError("cluster.gpus", '"all" or a list of GPU ids, e.g. [0, 1] (as CUDA_VISIBLE_DEVICES takes them)')
    gpus = [str(g) for g in value]
    if len(set(gpus)) != len(gpus):
        raise SpecError("cluster.gpus", "each GPU id once")
    return gpus


@dataclass
class SlotPool:
    """Free CPU slots or GPUs of this machine; :meth:`take` and :meth:`give_back` as jobs start and end."""

    cpu_slots: int
    gpus: list[str] = field(default_factory=list)
    _free_gpus: list[str] = field(init=False)
    _used_cpu: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        self._free_gpus = list(self.gpus)

    @classmethod
    def for_profile(cls, profile: dict[str, Any]) -> SlotPool:
        """This machine's pool under a local profile (see the module docstring)."""
        max_slots = profile.get("max_slots") or 0
        if not isinstance(max_slots, int) or isinstance(max_slots, bool) or max_slots < 0:
            raise SpecError("cluster.max_slots", "an integer >= 0 (0: every core of this machine)")
        gpus = _profile_gpus(profile)
        return cls(cpu_slots=max_slots or len(os.sched_getaffinity(0)),
                   gpus=visible_gpus() if gpus is None else gpus)

    @property
    def uses_gpus(self) -> bool:
        return bool(self.gpus)

    @property
    def total(self) -> int:
        return len(self.gpus) if self.uses_gpus else self.cpu_slots

    def need(self, res: Resources) -> int:
        """GPUs (on a GPU machine) or cores a job with ``res`` occupies."""
        if self.uses_gpus:
            return max(res.nproc_per_node, res.gpus_per_node)
        return min(res.slots(), self.cpu_slots)  # a job larger than the machine runs alone

    def check_fits(self, res: Resources, key: str) -> None:
        """Raise :class:`SpecError` on ``key`` if a job with ``res`` can never run here."""
        if self.uses_gpus and self.need(res) > len(self.gpus):
            raise SpecError(key, f"at most {len(self.gpus)} ranks per node: this machine offers GPUs "
                                 f"{','.join(self.gpus)} and each rank needs its own")

    def take(self, res: Resources) -> Allocation | None:
        """Reserve what a job needs, or ``None`` if it does not fit now."""
        n = self.need(res)
        if self.uses_gpus:
            if n > len(self._free_gpus):
                return None
            taken, self._free_gpus = self._free_gpus[:n], self._free_gpus[n:]
            return Allocation(n, tuple(taken))
        if n > self.cpu_slots - self._used_cpu:
            return None
        self._used_cpu += n
        return Allocation(n)

    def give_back(self, alloc: Allocation) -> None:
        if alloc.gpus:
            self._free_gpus = [g for g in self.gpus if g in self._free_gpus or g in alloc.gpus]
        else:
            self._used_cpu -= alloc.slots
