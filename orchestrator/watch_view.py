"""What ``dlth-orch watch`` shows, one frame at a time: per (subset, configuration) how many jobs are done,
running, queued, waiting or failed; each running job's epoch and throughput (its ``metrics.jsonl``, the
heartbeat's age); an ETA for the grid; the breaker's state.

A frame costs the backends exactly one :func:`orchestrator.status.refresh` (one batched ``sacct``/``squeue``
on SLURM, as ``status``), then reads the database and the running jobs' metric files only.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Group
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from db import JobState, Store
from db.models import utcnow
from orchestrator.status import GridStatus, grid_status, refresh
from specs.contract import JobPaths
from specs.job import JobSpec, job_label

COLUMNS = ("done", "running", "queued", "waiting", "failed")
BUCKET = {JobState.COMPLETED: "done", JobState.RUNNING: "running", JobState.QUEUED: "queued",
          JobState.PENDING: "queued", JobState.WAITING: "waiting", JobState.FAILED: "failed",
          JobState.PARENT_FAILED: "failed"}


@dataclass
class RunningJob:
    """A running job as its last finished epoch describes it."""

    label: str
    job: str
    epoch: int  # epochs finished
    epochs: int
    images_per_s: float | None
    epoch_time_s: float | None
    heartbeat_age_s: float | None


@dataclass
class Frame:
    """One frame of the live view (JSON-ready with :meth:`to_dict`)."""

    grid: str
    total: int
    groups: list[dict[str, Any]]
    running: list[RunningJob]
    eta_s: float | None
    breaker: str
    status: GridStatus = field(repr=False)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("status")
        return d


def _last_epoch(job_dir: Path) -> dict[str, Any]:
    """The last record of ``metrics.jsonl`` ({} before the first epoch ends)."""
    path = JobPaths.of(job_dir).epoch_metrics
    try:
        with open(path, "rb") as fh:
            fh.seek(0, 2)
            fh.seek(max(0, fh.tell() - 8192))
            lines = fh.read().decode(errors="replace").splitlines()
    except FileNotFoundError:
        return {}
    for line in reversed(lines):
        try:
            return dict(json.loads(line))
        except (json.JSONDecodeError, TypeError):
            continue  # a torn last line, or the cut first one
    return {}


def _job_seconds(store: Store, grid: str) -> dict[str, float]:
    """Training seconds of each completed job (the sum of its attempts)."""
    done: dict[str, float] = {}
    for a in store.grid_attempts(grid):
        if a.ended_at is not None:
            done[a.job_hash] = done.get(a.job_hash, 0.0) + (a.ended_at - a.started_at).total_seconds()
    return done


def eta_seconds(remaining: int, running: list[RunningJob], job_s: list[float]) -> float | None:
    """Seconds until the grid is done: the jobs left (the running ones in part) times a job's length, over
    as many at once as run now. A job's length: the mean of the completed ones, else the running ones'
    epoch time x epochs. None while nothing is known."""
    if remaining == 0 and not running:
        return 0.0
    per_job = sum(job_s) / len(job_s) if job_s else None
    if per_job is None:
        guesses = [r.epoch_time_s * r.epochs for r in running if r.epoch_time_s]
        per_job = sum(guesses) / len(guesses) if guesses else None
    if per_job is None:
        return None
    left = remaining + sum(1 - r.epoch / max(1, r.epochs) for r in running)
    return left * per_job / max(1, len(running))


def build_frame(store: Store, grid: str) -> Frame:
    """Refresh the grid once (as ``status`` does) and describe it."""
    refresh(store, grid)
    st = grid_status(store, grid)
    jobs = store.jobs(grid)
    groups: dict[tuple[str, str], dict[str, Any]] = {}
    running: list[RunningJob] = []
    now = utcnow()
    for j in jobs:
        g = groups.setdefault((j.subset_name, j.config_name), {"subset": j.subset_name, "config": j.config_name,
                                                               "total": 0, **dict.fromkeys(COLUMNS, 0)})
        g["total"] += 1
        if bucket := BUCKET.get(JobState(j.state)):
            g[bucket] += 1
        if j.state == JobState.RUNNING:
            last = _last_epoch(Path(j.job_dir))
            running.append(RunningJob(
                label=job_label(j.subset_name, j.config_name, j.seed), job=j.job_hash,
                epoch=int(last["epoch"]) + 1 if "epoch" in last else 0,
                epochs=JobSpec.from_json(j.spec_json).train.epochs, images_per_s=last.get("images_per_s"),
                epoch_time_s=last.get("epoch_time_s"),
                heartbeat_age_s=(now - j.heartbeat_at).total_seconds() if j.heartbeat_at else None))
    finished = _job_seconds(store, grid)
    done = {j.job_hash for j in jobs if j.state == JobState.COMPLETED}
    remaining = sum(j.state in (JobState.PENDING, JobState.QUEUED, JobState.WAITING) for j in jobs)
    eta = eta_seconds(remaining, running, [s for h, s in finished.items() if h in done])
    breaker = f"paused: {st.paused}" if st.paused else "closed (running)"
    return Frame(grid=grid, total=len(jobs), groups=sorted(groups.values(), key=lambda g: (g["subset"], g["config"])),
                 running=running, eta_s=eta, breaker=breaker, status=st)


def _duration(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "?"
    s = int(round(seconds))
    return f"{s // 3600}h{s // 60 % 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def render(frame: Frame) -> Group:
    """The frame as rich renderables."""
    done = sum(g["done"] for g in frame.groups)
    head = Text.from_markup(f"[bold]{escape(frame.grid)}[/]: {done}/{frame.total} done   ETA "
                            f"{_duration(frame.eta_s)}   breaker: "
                            + (f"[bold red]{escape(frame.breaker)}[/]" if frame.status.paused
                               else f"[green]{escape(frame.breaker)}[/]"))
    groups = Table("subset", "config", *COLUMNS, show_edge=False, pad_edge=False)
    for g in frame.groups:
        groups.add_row(escape(g["subset"]), escape(g["config"]), f"{g['done']}/{g['total']}",
                       *(str(g[c] or "") for c in COLUMNS[1:]))
    parts: list[Any] = [head, groups]
    if frame.running:
        run = Table("running", "job", "epoch", "images/s", "epoch time", "heartbeat", show_edge=False,
                    pad_edge=False)
        for r in frame.running:
            run.add_row(escape(r.label), r.job[:12], f"{r.epoch}/{r.epochs}",
                        f"{r.images_per_s:,.0f}" if r.images_per_s else "-",
                        f"{r.epoch_time_s:.1f}s" if r.epoch_time_s else "-",
                        f"{r.heartbeat_age_s:.0f}s ago" if r.heartbeat_age_s is not None else "-")
        parts.append(run)
    for f in frame.status.failed:
        parts.append(Text.from_markup(f"[red]FAILED[/] {escape(f['label'])}: {escape(str(f['error']))[:200]}"))
    return Group(*parts)


def is_over(frame: Frame) -> bool:
    """Nothing left to watch: every job ended, or the breaker paused the grid with nothing running."""
    active = sum(g["running"] + g["queued"] + g["waiting"] for g in frame.groups)
    return active == 0 or (frame.status.paused is not None and not frame.running)


def watch_loop(store: Store, grid: str, interval_s: float, show: Callable[[Frame], None],
               frames: int | None = None, stop_when_over: bool = True) -> Frame:
    """Build and show a frame every ``interval_s`` seconds (``frames`` of them, else until the grid is over)."""
    n = 0
    while True:
        started = time.monotonic()
        frame = build_frame(store, grid)
        show(frame)
        n += 1
        if (frames is not None and n >= frames) or (stop_when_over and is_over(frame)):
            return frame
        time.sleep(max(0.0, interval_s - (time.monotonic() - started)))
