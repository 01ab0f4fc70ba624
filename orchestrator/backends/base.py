"""The backend interface: hand jobs over, bring the database in line with reality, cancel."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar

from db import JobRow, Store
from specs.job import JobSpec


@dataclass
class LaunchContext:
    """What a backend needs to run a grid's jobs."""

    store: Store
    db_url: str
    grid_name: str
    failure_budget: int
    profile: dict[str, Any] = field(default_factory=dict)  # cluster_profiles/<name>.toml, merged with [cluster]
    wait: bool = True
    progress: bool = True
    # called with the grid's completed-job count after each look at the jobs while following them
    # (``[report] every``: the launch pipeline refreshes the report files from here); must not raise
    on_progress: Callable[[int], object] | None = None

    def progressed(self, completed: int) -> None:
        """Tell :attr:`on_progress` how many jobs of the grid have completed."""
        if self.on_progress is not None:
            self.on_progress(completed)


@dataclass(frozen=True)
class PlanJob:
    """A job as a backend plans it: identity, label, spec, parents, and (when recorded) where it is."""

    job_hash: str
    label: str
    spec: JobSpec
    parents: tuple[str, ...] = ()
    backend_id: str | None = None  # set for jobs submitted before (a child may depend on their task)


def graph_levels(jobs: list[PlanJob]) -> dict[str, int]:
    """``{job_hash: depth}``: 0 without parents among ``jobs``, else one more than its deepest parent."""
    parents = {j.job_hash: list(j.parents) for j in jobs}
    depth: dict[str, int] = {}

    def level(h: str) -> int:
        if h not in depth:
            depth[h] = 1 + max((level(p) for p in parents[h] if p in parents), default=-1)
        return depth[h]

    for j in jobs:
        level(j.job_hash)
    return depth


@dataclass
class PlannedGroup:
    """Jobs a backend hands over together (a SLURM array; the local backend's jobs of one graph level)."""

    name: str
    jobs: list[str]  # job labels, in task order
    resources: dict[str, Any]
    depends_on: list[str] = field(default_factory=list)  # names of groups (or backend ids) it waits for
    dependency: str = ""  # how: "afterok", "aftercorr" (SLURM), "parents COMPLETED" (local)


@dataclass
class Plan:
    """What a launch would submit: the dry run's answer."""

    backend: str
    profile: str
    jobs: int
    groups: list[PlannedGroup] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Backend(ABC):
    """Where jobs run. Backends record nothing themselves except through the store API.

    A backend owns: checking its cluster profile (:meth:`validate`), the dry run (:meth:`plan`), handing
    jobs over (:meth:`submit` = plan + schedule, then follow with ``ctx.wait``), reconciling and cancelling.
    """

    name: ClassVar[str]
    default_profile: ClassVar[str]

    @abstractmethod
    def validate(self, grid: Any, profile: dict[str, Any]) -> None:
        """Raise a one-line SpecError if ``profile`` (merged with the grid's [cluster]) cannot run ``grid``."""

    @abstractmethod
    def plan(self, jobs: list[PlanJob], profile: dict[str, Any]) -> Plan:
        """The groups ``jobs`` would be handed over in, with their dependencies and resources (no side effect)."""

    @abstractmethod
    def submit(self, ctx: LaunchContext, jobs: list[JobRow]) -> None:
        """Hand ``jobs`` (already recorded, runnable) to the backend; with ``ctx.wait`` follow them to the end."""

    @abstractmethod
    def reconcile(self, store: Store, grid_name: str) -> None:
        """Close attempts whose processes vanished, find jobs submitted but never recorded, etc."""

    @abstractmethod
    def cancel(self, store: Store, jobs: list[JobRow]) -> int:
        """Cancel ``jobs`` (stop the running ones); returns how many were cancelled."""
