"""``status``: where every grid stands - counts by state, progress per (subset, config), failures."""

from __future__ import annotations

import logging
import os
from dataclasses import asdict, dataclass, field
from datetime import timedelta

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from db import JobState, Store
from db.models import utcnow
from orchestrator.backends.registry import backends_of_grid, get_backend
from specs.job import job_label

log = logging.getLogger(__name__)
STATE_STYLE = {"COMPLETED": "green", "RUNNING": "cyan", "QUEUED": "blue", "PENDING": "white",
               "FAILED": "red", "CANCELLED": "yellow"}


@dataclass
class GroupProgress:
    subset: str
    config: str
    total: int = 0
    completed: int = 0
    running: int = 0
    failed: int = 0


@dataclass
class GridStatus:
    grid: str
    total: int
    counts: dict[str, int]
    groups: list[GroupProgress] = field(default_factory=list)
    failed: list[dict] = field(default_factory=list)
    stale: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def refresh(store: Store, grid_name: str) -> None:
    """Bring the database in line with reality: results on disk, vanished or finished backend jobs."""
    from orchestrator.reconcile import ingest_finished_dirs

    ingest_finished_dirs(store, grid_name)
    for name in sorted(backends_of_grid(store, grid_name) | {"local"}):
        try:
            get_backend(name).reconcile(store, grid_name)
        except ImportError as exc:  # e.g. submitit missing on this machine
            log.warning("cannot reconcile %s jobs: %s", name, exc)


def grid_status(store: Store, grid_name: str, stale_after_s: float | None = None) -> GridStatus:
    """Summarise a grid's jobs (one query for the jobs)."""
    stale_after = timedelta(seconds=stale_after_s or float(os.environ.get("DLTH_STALE_S", "600")))
    jobs = store.jobs(grid_name)
    counts = {s: 0 for s in JobState.ALL}
    groups: dict[tuple[str, str], GroupProgress] = {}
    st = GridStatus(grid=grid_name, total=len(jobs), counts=counts)
    now = utcnow()
    for j in jobs:
        counts[j.state] += 1
        g = groups.setdefault((j.subset_name, j.config_name), GroupProgress(j.subset_name, j.config_name))
        g.total += 1
        g.completed += j.state == JobState.COMPLETED
        g.running += j.state == JobState.RUNNING
        g.failed += j.state == JobState.FAILED
        label = job_label(j.subset_name, j.config_name, j.seed)
        if j.state == JobState.FAILED:
            st.failed.append({"job": j.job_hash, "label": label, "failures": j.failure_count,
                              "error": j.last_error or ""})
        if j.state == JobState.RUNNING and j.heartbeat_at and now - j.heartbeat_at > stale_after:
            st.stale.append({"job": j.job_hash, "label": label,
                             "heartbeat_age_s": int((now - j.heartbeat_at).total_seconds())})
    st.groups = sorted(groups.values(), key=lambda g: (g.subset, g.config))
    return st


def print_status(st: GridStatus, console: Console) -> None:
    counts = "  ".join(f"[{STATE_STYLE[s]}]{s.lower()} {n}[/]" for s, n in st.counts.items() if n)
    done = st.counts.get(JobState.COMPLETED, 0)
    console.print(f"[bold]{escape(st.grid)}[/]: {done}/{st.total} completed   {counts}")
    table = Table(show_edge=False, pad_edge=False)
    for col in ("subset", "config", "done", "running", "failed"):
        table.add_column(col, justify="right" if col in ("done", "running", "failed") else "left")
    for g in st.groups:
        table.add_row(escape(g.subset), escape(g.config), f"{g.completed}/{g.total}", str(g.running or ""),
                      f"[red]{g.failed}[/]" if g.failed else "")
    console.print(table)
    for f in st.failed:
        console.print(f"[red]FAILED[/] {escape(f['label'])} ({f['job']}, {f['failures']} failures): "
                      f"{escape(str(f['error']))}")
    for s in st.stale:
        console.print(f"[yellow]STALE[/] {escape(s['label'])} ({s['job']}): RUNNING but no heartbeat for "
                      f"{s['heartbeat_age_s']}s")
