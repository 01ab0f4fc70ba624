"""The backend interface: hand jobs over, bring the database in line with reality, cancel."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar

from db import JobRow, Store


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


class Backend(ABC):
    """Where jobs run. Backends record nothing themselves except through the store API."""

    name: ClassVar[str]

    @abstractmethod
    def submit(self, ctx: LaunchContext, jobs: list[JobRow]) -> None:
        """Hand ``jobs`` (already recorded, runnable) to the backend; with ``ctx.wait`` follow them to the end."""

    @abstractmethod
    def reconcile(self, store: Store, grid_name: str) -> None:
        """Close attempts whose processes vanished, find jobs submitted but never recorded, etc."""

    @abstractmethod
    def cancel(self, store: Store, jobs: list[JobRow]) -> int:
        """Cancel ``jobs`` (stop the running ones); returns how many were cancelled."""
