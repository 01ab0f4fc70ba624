"""``status``: where a grid stands - one header line (progress, elapsed time, ETA, cost so far), progress per
(subset, config) with the reference subset first and finished subsets collapsed to one row, failures."""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from datetime import timedelta

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from db import JobState, Store
from db.models import utcnow
from orchestrator import breaker
from orchestrator.backends.registry import backends_of_grid, get_backend
from orchestrator.efficiency import job_usage
from orchestrator.status_clock import UNFINISHED, Clock, clock, duration, hours
from specs.job import job_label
from specs.settings import env_settings

log = logging.getLogger(__name__)
STATE_STYLE = {"COMPLETED": "green", "RUNNING": "cyan", "QUEUED": "blue", "PENDING": "white",
               "FAILED": "red", "CANCELLED": "yellow", "WAITING": "magenta", "PARENT_FAILED": "red"}


@dataclass
class GroupProgress:
    subset: str
    config: str
    total: int = 0
    completed: int = 0
    running: int = 0
    failed: int = 0
    pending: int = 0  # not started yet: pending, waiting for parents, queued
    elapsed_s: float | None = None
    eta_s: float | None = None
    cost_hours: float = 0.0
    cost_unit: str = ""

    def set_clock(self, c: Clock) -> None:
        self.elapsed_s, self.eta_s, self.cost_hours, self.cost_unit = c.elapsed_s, c.eta_s, c.cost_hours, c.unit


@dataclass
class GridStatus:
    grid: str
    total: int
    counts: dict[str, int]
    reference: str = "full"  # the report's reference subset, listed first
    pending: int = 0
    elapsed_s: float | None = None
    eta_s: float | None = None
    cost_hours: float = 0.0
    cost_unit: str = ""
    groups: list[GroupProgress] = field(default_factory=list)
    failed: list[dict] = field(default_factory=list)
    stale: list[dict] = field(default_factory=list)
    waiting: list[dict] = field(default_factory=list)  # WAITING jobs and the parents they wait for
    parent_failed: list[dict] = field(default_factory=list)  # PARENT_FAILED jobs and the parent that failed
    retrying: list[dict] = field(default_factory=list)  # failed before, waiting for (or in) another attempt
    paused: str | None = None  # the breaker's one line when the grid is paused
    usage: list[dict] = field(default_factory=list)  # each job's latest measured resource use (efficiency.py)
    adaptive: str | None = None  # an adaptive grid's latest look (orchestrator/report/adaptive_section.py)

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
    from orchestrator.grid.graph import advance

    grid = store.get_grid(grid_name)
    advance(store, grid_name, grid.failure_budget if grid else 0)
    breaker.check(store, grid_name)


def grid_status(store: Store, grid_name: str, stale_after_s: float | None = None) -> GridStatus:
    """Summarise a grid's jobs (one query for the jobs)."""
    stale_after = timedelta(seconds=stale_after_s or env_settings().stale_s)
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
        elif j.failure_count and j.state in (JobState.PENDING, JobState.QUEUED, JobState.RUNNING):
            st.retrying.append({"job": j.job_hash, "label": label, "state": j.state, "failures": j.failure_count,
                                "error": j.last_error or ""})
        if j.state == JobState.RUNNING and j.heartbeat_at and now - j.heartbeat_at > stale_after:
            st.stale.append({"job": j.job_hash, "label": label,
                             "heartbeat_age_s": int((now - j.heartbeat_at).total_seconds())})
    attempts: dict[str, list] = {}
    for a in store.grid_attempts(grid_name) if jobs else []:
        attempts.setdefault(a.job_hash, []).append(a)
    by_group: dict[tuple[str, str], list] = {}
    for j in jobs:
        by_group.setdefault((j.subset_name, j.config_name), []).append(j)
        groups[(j.subset_name, j.config_name)].pending += j.state in UNFINISHED and j.state != JobState.RUNNING
    for key, members in by_group.items():
        groups[key].set_clock(clock(members, attempts, now))
    whole = clock(jobs, attempts, now)
    st.elapsed_s, st.eta_s, st.cost_hours, st.cost_unit = whole.elapsed_s, whole.eta_s, whole.cost_hours, whole.unit
    st.pending = sum(g.pending for g in groups.values())
    st.reference = _reference(store, grid_name)
    st.groups = sorted(groups.values(), key=lambda g: (g.subset != st.reference, g.subset, g.config))
    _graph_status(store, grid_name, jobs, st)
    pause = breaker.paused(store, grid_name)
    st.paused = breaker.pause_line(grid_name, pause) if pause else None
    st.usage = job_usage(store, grid_name)
    from orchestrator.report.adaptive_section import status_line  # here: importing status stays light

    st.adaptive = status_line(store, grid_name)
    return st


def _reference(store: Store, grid_name: str) -> str:
    """The grid's ``[report] reference`` as recorded at launch (default ``full``)."""
    g = store.get_grid(grid_name)
    try:
        ref = (json.loads(g.spec_json).get("report") or {}).get("reference", "full") if g else "full"
    except (ValueError, AttributeError):
        ref = "full"
    return ref if isinstance(ref, str) else "full"


def _graph_status(store: Store, grid_name: str, jobs: list, st: GridStatus) -> None:
    """Which parents each WAITING job waits for; which parent left a PARENT_FAILED job without a start."""
    if not any(j.state in (JobState.WAITING, JobState.PARENT_FAILED) for j in jobs):
        return
    deps = store.grid_deps(grid_name)
    by_hash = {j.job_hash: j for j in jobs}

    def label(h: str) -> str:
        j = by_hash.get(h)
        return f"{j.subset_name}/{j.config_name}/s{j.seed}" if j else h

    for j in jobs:
        parents = [by_hash[p] for p in deps.get(j.job_hash, []) if p in by_hash]
        if j.state == JobState.WAITING:
            st.waiting.append({"job": j.job_hash, "label": label(j.job_hash),
                               "waits_for": [label(p.job_hash) for p in parents if p.state != JobState.COMPLETED],
                               "parent_states": [p.state for p in parents if p.state != JobState.COMPLETED]})
        elif j.state == JobState.PARENT_FAILED:
            bad = [p for p in parents if p.state != JobState.COMPLETED]
            st.parent_failed.append({"job": j.job_hash, "label": label(j.job_hash),
                                     "parents": [label(p.job_hash) for p in bad],
                                     "reason": "; ".join(f"{label(p.job_hash)} is {p.state}"
                                                         + (f" after {p.failure_count} failures" if p.failure_count
                                                            else "") for p in bad)})


def header_line(st: GridStatus) -> str:
    """``quickstart: 10/24 completed, 2 running, 12 pending · elapsed 3m 10s · ETA 4m 45s · cost 0.2 CPU-h``."""
    done = st.counts.get(JobState.COMPLETED, 0)
    others = [f"[{STATE_STYLE[s]}]{n} {s.lower()}[/]" for s, n in st.counts.items()
              if n and s not in (JobState.COMPLETED, JobState.PENDING, JobState.QUEUED, JobState.WAITING)]
    if st.pending:
        others.append(f"{st.pending} pending")
    parts = [f"[bold]{escape(st.grid)}[/]: {done}/{st.total} completed" + "".join(f", {o}" for o in others),
             f"elapsed {duration(st.elapsed_s)}"]
    if st.eta_s != 0:
        parts.append(f"ETA {duration(st.eta_s)}")
    parts.append(f"cost {hours(st.cost_hours, st.cost_unit)}")
    return " · ".join(parts)


def _rows(st: GridStatus) -> list[tuple[str, str, GroupProgress]]:
    """(subset, config label, progress) per table row: a subset whose jobs all completed is one row."""
    rows: list[tuple[str, str, GroupProgress]] = []
    by_subset: dict[str, list[GroupProgress]] = {}
    for g in st.groups:
        by_subset.setdefault(g.subset, []).append(g)
    for subset, groups in by_subset.items():
        if len(groups) > 1 and all(g.completed == g.total for g in groups):
            units = {g.cost_unit for g in groups if g.cost_unit}
            merged = GroupProgress(subset, "", sum(g.total for g in groups), sum(g.completed for g in groups),
                                   elapsed_s=max((g.elapsed_s or 0.0 for g in groups), default=None), eta_s=0.0,
                                   cost_hours=sum(g.cost_hours for g in groups),
                                   cost_unit=units.pop() if len(units) == 1 else ("mixed" if units else ""))
            rows.append((subset, f"all {len(groups)} configs", merged))
        else:
            rows.extend((subset, g.config, g) for g in groups)
    return rows


def print_status(st: GridStatus, console: Console) -> None:
    """The grid's status for a terminal: the header line, the progress table, then one line per problem."""
    console.print(header_line(st), soft_wrap=True)
    table = Table(show_edge=False, pad_edge=False)
    for col in ("subset", "config", "done", "pending", "running", "failed", "elapsed", "ETA", "cost"):
        table.add_column(col, justify="left" if col in ("subset", "config") else "right")
    for subset, config, g in _rows(st):
        name = f"{escape(subset)} (reference)" if subset == st.reference else escape(subset)
        table.add_row(name, escape(config), f"{g.completed}/{g.total}", str(g.pending or ""),
                      str(g.running or ""), f"[red]{g.failed}[/]" if g.failed else "", duration(g.elapsed_s),
                      "" if g.eta_s == 0 else duration(g.eta_s), hours(g.cost_hours, g.cost_unit))
    console.print(table)
    for f in st.failed:
        console.print(f"[red]FAILED[/] {escape(f['label'])} ({f['job']}, {f['failures']} failures): "
                      f"{escape(str(f['error']))}")
    for w in st.waiting:
        console.print(f"[magenta]WAITING[/] {escape(w['label'])} ({w['job']}): for "
                      f"{escape(', '.join(w['waits_for']) or 'nothing (starts on the next look)')}")
    for f in st.parent_failed:
        console.print(f"[red]PARENT_FAILED[/] {escape(f['label'])} ({f['job']}): will not run: "
                      f"{escape(f['reason'])} (dlth-orch retry of the parent brings it back)")
    for r in st.retrying:
        console.print(f"[yellow]RETRYING[/] {escape(r['label'])} ({r['job']}, {r['state'].lower()}, "
                      f"{r['failures']} failed attempts): {escape(str(r['error']))}")
    if st.paused:
        console.print(f"[bold red]PAUSED[/] {escape(st.paused)}")
    if st.adaptive:
        console.print(f"[cyan]ADAPTIVE[/] {escape(st.adaptive)}")
    for s in st.stale:
        console.print(f"[yellow]STALE[/] {escape(s['label'])} ({s['job']}): RUNNING but no heartbeat for "
                      f"{s['heartbeat_age_s']}s")
