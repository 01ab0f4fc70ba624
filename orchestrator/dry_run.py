"""``launch --dry-run``: what a launch would record and run, with nothing written (no database, job
directory, dataset or cache file).

- The data: a prepared dataset is read (``meta.json`` and labels, not the ``.beton`` files); a builtin
  one that is not built yet is planned from its labels alone (:func:`workers.data.builtin.builtin_labels`:
  exact classes, counts and job identities); a builtin whose labels cannot be read yet (its source not
  installed) is planned with stand-ins: the jobs, configurations, groups and resources are exact, while
  each subset's classes and samples, and hence the job identities, are "resolved at launch". (A grid
  whose own, non-builtin dataset is missing is refused when it is read.)
- The database is read, never written or created: each job is new (not recorded for this grid), already
  done, to retry (failed within the failure budget), or in another state; a missing database means
  every job is new.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from orchestrator.backends.base import Plan, PlanJob
from orchestrator.grid import expand, resolve_subsets
from orchestrator.words import plural
from subsets import DatasetMeta, DatasetMetaError, Manifest
from subsets.meta import SPLITS
from subsets.registry import identity_params

if TYPE_CHECKING:
    from orchestrator.grid import ExpandedJob, GridSpec
    from orchestrator.launch import Validated

log = logging.getLogger(__name__)
AT_LAUNCH = "resolved at launch"
STANDIN_FINGERPRINT = "unresolved"


@dataclass(frozen=True)
class SubsetPlan:
    """One subset as the dry run knows it (``None``: resolved at launch)."""

    name: str
    strategy: str
    jobs: int
    classes: int | None
    train_samples: int | None


@dataclass(frozen=True)
class DryRun:
    """The dry run's answer: the backend's plan, the data it was planned on, the jobs by what a launch
    would do with them, and the subsets."""

    plan: Plan
    data: str  # "prepared", "builtin" (planned from its labels) or "missing" (stand-ins)
    data_note: str
    by_status: dict[str, int]
    subsets: list[SubsetPlan] = field(default_factory=list)
    database_note: str = ""

    @property
    def would_run(self) -> int:
        """Jobs a launch would hand to the backend now or once their parents complete."""
        return sum(self.by_status.get(k, 0) for k in ("new", "to retry", "pending", "waiting"))

    def to_dict(self) -> dict[str, Any]:
        """The plan's JSON (as before: backend, profile, jobs, groups) with the new parts beside it."""
        return {**self.plan.to_dict(), "would_run": self.would_run, "by_status": self.by_status,
                "data": {"state": self.data, "note": self.data_note},
                "subsets": [asdict(s) for s in self.subsets], "database": self.database_note}


def planned_meta(grid: GridSpec) -> tuple[DatasetMeta | None, str, str]:
    """(the dataset's metadata or ``None``, its state, a note): prepared, a builtin planned from its
    labels, or missing (a builtin whose labels cannot be read here yet, e.g. its source not installed)."""
    root = Path(grid.dataset_root)
    if (root / "meta.json").is_file() or not grid.dataset_prepare:  # (the grid refuses a missing non-builtin)
        return DatasetMeta.load(root), "prepared", f"{root}"
    from workers.data.builtin import builtin_labels  # the data layer knows its builtin datasets
    from workers.data.errors import DataWriteError

    what = f"{root}: builtin {grid.dataset_prepare}, built at launch"
    try:
        meta = builtin_labels(grid.dataset_prepare, root, int(grid.train.get("image_size", 32)), **grid.dataset_limits)
    except (DataWriteError, DatasetMetaError, OSError) as exc:
        line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        return None, "missing", (f"{what}; its labels cannot be read yet ({line}): each subset's classes and "
                                 f"samples, and the job identities, are {AT_LAUNCH}")
    return meta, "builtin", f"{what} (classes and counts known)"


def _standins(grid: GridSpec) -> tuple[DatasetMeta, dict[str, Manifest]]:
    """A dataset and manifests that stand for data not prepared yet (no class, no sample)."""
    empty = {s: np.zeros(0, dtype=np.int64) for s in SPLITS}
    meta = DatasetMeta(Path(grid.dataset_root).resolve(), "(not prepared)", [], {s: f"{s}.beton" for s in SPLITS},
                       empty)
    manifests = {}
    for name, table in grid.subsets.items():
        params = {k: v for k, v in table.items() if k != "strategy"}
        manifests[name] = Manifest(name=name, strategy=table["strategy"], params=params, classes=[], indices=empty,
                                   dataset_fingerprint=STANDIN_FINGERPRINT,
                                   identity=identity_params(table["strategy"], params))
    return meta, manifests


def _subset_plans(grid: GridSpec, jobs: list[ExpandedJob], manifests: dict[str, Manifest] | None) -> list[SubsetPlan]:
    counts: dict[str, int] = {}
    for ej in jobs:
        counts[ej.subset_name] = counts.get(ej.subset_name, 0) + 1
    out = []
    for name, table in grid.subsets.items():
        m = manifests.get(name) if manifests else None
        out.append(SubsetPlan(name, table["strategy"], counts.get(name, 0), m.num_classes if m else None,
                              len(m.indices["train"]) if m else None))
    return out


def _by_status(jobs: list[ExpandedJob], grid: GridSpec, db_url: str) -> tuple[dict[str, int], str]:
    """Each job by what a launch would do with it, from the database read without writing; a missing
    (or unreadable) database counts every job as new and says so."""
    from db import JobState

    rows, note = _recorded(grid.name, db_url)
    out = {"new": 0, "done": 0, "to retry": 0}
    for ej in jobs:
        state, failures = rows.get(ej.spec.job_hash, (None, 0))
        if state is None:
            key = "new"
        elif state == JobState.COMPLETED:
            key = "done"
        elif state == JobState.FAILED:
            key = "to retry" if failures <= grid.failure_budget else "failed (no retries left)"
        else:
            key = str(state).lower().replace("_", " ")
        out[key] = out.get(key, 0) + 1
    return out, note


def _recorded(grid_name: str, db_url: str) -> tuple[dict[str, tuple[str, int]], str]:
    """``{job_hash: (state, failure_count)}`` of the grid's recorded jobs, and a note when the database was
    not read."""
    from db import Store
    from db.engine import is_sqlite, parse_url, sqlite_path

    parsed = parse_url(db_url)
    if is_sqlite(parsed) and not sqlite_path(parsed).exists():
        return {}, "no database yet: every job is new"
    try:
        store = Store(db_url, create=False)  # never creates, never migrates
    except Exception as exc:  # noqa: BLE001  (unreachable, outdated schema: the plan still stands)
        line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        return {}, f"database not read ({line}): every job counted as new"
    try:
        return store.job_states(grid_name), ""
    finally:
        store.close()


def dry_run(v: Validated, db_url: str) -> DryRun:
    """Expand the grid on its (planned) data, ask the backend for its plan and read the database; writes
    nothing."""
    meta, state, note = planned_meta(v.grid)
    manifests: dict[str, Manifest] | None = None
    if meta is not None:
        manifests = resolve_subsets(v.grid, meta)
        jobs = expand(v.grid, meta, manifests)
    else:
        jobs = expand(v.grid, *_standins(v.grid))
    plan_jobs = [PlanJob(ej.spec.job_hash, ej.spec.label(), ej.spec, ej.spec.depends_on) for ej in jobs]
    plan = v.backend.plan(plan_jobs, v.profile)
    by_status, db_note = _by_status(jobs, v.grid, db_url) if meta is not None else (
        {"new": len(jobs), "done": 0, "to retry": 0}, f"job identities are {AT_LAUNCH}: database not read")
    return DryRun(plan, state, note, by_status, _subset_plans(v.grid, jobs, manifests), db_note)


def print_dry_run(dr: DryRun, console: Any) -> None:
    """The dry run as text: what would run, the data, the subsets, then one row per group (array / graph
    level) with its jobs, resources and dependencies."""
    from rich.markup import escape
    from rich.table import Table

    plan = dr.plan
    console.print(f"dry run: {plural(plan.jobs, 'job')} on [bold]{plan.backend}[/] (profile {escape(plan.profile)}), "
                  f"{plural(len(plan.groups), 'group')}; nothing written", soft_wrap=True)
    parts = [f"{n} {k}" for k, n in dr.by_status.items() if n or k in ("new", "done", "to retry")]
    console.print(f"a launch would run {plural(dr.would_run, 'job')}: {', '.join(parts)}", soft_wrap=True)
    if dr.database_note:
        console.print(f"[dim]{escape(dr.database_note)}[/dim]", soft_wrap=True)
    console.print(f"data: {escape(dr.data_note)}", soft_wrap=True)
    subsets = Table(show_edge=False, pad_edge=False)
    for col in ("subset", "strategy", "jobs", "classes", "train samples"):
        subsets.add_column(col, justify="left" if col in ("subset", "strategy") else "right")
    for s in dr.subsets:
        subsets.add_row(escape(s.name), escape(s.strategy), str(s.jobs),
                        AT_LAUNCH if s.classes is None else str(s.classes),
                        AT_LAUNCH if s.train_samples is None else f"{s.train_samples:,}")
    console.print(subsets)
    table = Table(show_edge=False, pad_edge=False)
    for col in ("group", "jobs", "first job", "resources", "waits for"):
        table.add_column(col, justify="right" if col == "jobs" else "left")
    for g in plan.groups:
        res = " ".join(f"{k}={v}" for k, v in g.resources.items())
        waits = f"{g.dependency}: {', '.join(g.depends_on)}" if g.depends_on else ""
        table.add_row(escape(g.name), str(len(g.jobs)), escape(g.jobs[0] if g.jobs else ""), escape(res),
                      escape(waits))
    console.print(table)
