"""Time and cost for ``status``: elapsed wall time, an ETA and the device-hours spent so far, for a grid
and for each of its (subset, config) groups, measured from the jobs' attempts (as the report's cost)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from db import JobState
from db.store import AttemptRow, JobRow
from orchestrator.report.cost import attempts_hours, devices_held, spec_resources

__all__ = ["UNFINISHED", "Clock", "clock", "duration", "hours"]

UNFINISHED = JobState.UNFINISHED  # type: ignore[attr-defined]


@dataclass(frozen=True)
class Clock:
    """Elapsed seconds since the first attempt started (to the last end once nothing is left to run), the
    estimated seconds left (``None``: nothing finished yet to estimate from; 0: nothing left) and the
    device-hours of every attempt so far in ``unit`` (GPU-hours, CPU-hours; "mixed" when both)."""

    elapsed_s: float | None
    eta_s: float | None
    cost_hours: float
    unit: str


def clock(jobs: Iterable[JobRow], attempts: dict[str, list[AttemptRow]], now: datetime) -> Clock:
    """The clock of a set of jobs (a grid, or one group of it)."""
    starts: list[datetime] = []
    ends: list[datetime] = []
    cost, units, done, left = 0.0, set(), 0, 0
    for j in jobs:
        done += j.state == JobState.COMPLETED
        left += j.state in UNFINISHED
        spans = [(a.started_at, a.ended_at) for a in attempts.get(j.job_hash, [])]
        if not spans:
            continue
        devices, unit = devices_held(spec_resources(j.spec_json))
        cost += attempts_hours(spans, devices, now)
        units.add(unit)
        starts += [s for s, _ in spans]
        ends += [e or now for _, e in spans]
    if not starts:
        return Clock(None, None if left else 0.0, 0.0, next(iter(units), ""))
    end = now if left else max(ends)
    elapsed = max(0.0, (end - min(starts)).total_seconds())
    eta = 0.0 if not left else (elapsed / done * left if done else None)
    return Clock(elapsed, eta, cost, units.pop() if len(units) == 1 else "mixed")


def duration(seconds: float | None) -> str:
    """``45s``, ``6m 03s``, ``2h 05m``, ``3d 04h``; ``-`` for unknown."""
    if seconds is None:
        return "-"
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m {s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h {s % 3600 // 60:02d}m"
    return f"{s // 86400}d {s % 86400 // 3600:02d}h"


def hours(value: float, unit: str) -> str:
    """Device-hours as ``0.412 CPU-h`` (three significant digits), or ``-`` when nothing ran."""
    if not unit:
        return "-"
    short = unit.replace("-hours", "-h")
    return f"{value:.3g} {short}"
