"""``launch``: grid file -> validated spec -> jobs recorded in the database -> handed to a backend.

The pipeline (:func:`launch`): validate (grid file, backend profile, backbones) -> expand -> plan (the dry
run, :mod:`orchestrator.dry_run`, stops here and writes nothing) -> take the grid's lock -> record (job
files, then the grid row and its job rows in one transaction) -> advance the graph -> submit (the backend
schedules the whole graph) -> follow (local: run to the end; SLURM: ``--wait``).

The grid lock lives in the database (:mod:`db.locks`), so two launchers of one grid, on one host or on
two hosts sharing a PostgreSQL server, never both record and submit it: the second is told who holds it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from db import JobRow, JobState, NewJob, Store, workspace_dir
from orchestrator.backends.base import Backend
from orchestrator.breaker import BreakerSettings
from orchestrator.grid import ExpandedJob, GridSpec, expand, load_grid, resolve_subsets
from orchestrator.workspace import job_dir_text, write_job_file, write_manifest
from subsets import DatasetMeta, Manifest

if TYPE_CHECKING:
    from orchestrator.provenance.freeze import Frozen

log = logging.getLogger(__name__)
DEFAULT_MAX_JOBS = 100_000  # launch --max-jobs: a larger grid must be asked for


@dataclass(frozen=True)
class RecordResult:
    grid_id: int
    new: int
    known: int
    jobs: list[ExpandedJob]


class LauncherBusy(RuntimeError):
    """Another launcher holds the grid's lock (one line naming it)."""


@dataclass(frozen=True)
class Validated:
    """A grid checked against a backend and its profile, before anything is written."""

    grid: GridSpec
    backend: Backend
    profile_name: str
    profile: dict[str, Any]


def validate(grid_file: Path, cluster: str, profile: str | None, max_jobs: int = DEFAULT_MAX_JOBS, *,
             dry_run: bool = False, db_url: str | None = None) -> Validated:
    """Read the grid (at most ``max_jobs`` jobs), take its tickets from the database at ``db_url``
    (:mod:`orchestrator.grid.ticket`), load and check the backend's profile, pre-flight the backbones (one-line
    errors; checks that passed before are remembered, except by a ``dry_run``, which writes nothing)."""
    from orchestrator.backbone_cache import BackboneCache
    from orchestrator.backends.registry import get_backend
    from orchestrator.preflight import check_backbones
    from orchestrator.profiles import load_profile

    grid = load_grid(grid_file, max_jobs=max_jobs)
    if db_url is not None:
        from orchestrator.grid.ticket import take_tickets

        grid = take_tickets(grid, db_url)
    backend = get_backend(cluster)
    name = profile or grid.cluster.get("profile") or backend.default_profile
    prof = load_profile(name, {k: v for k, v in grid.cluster.items() if k != "profile"})
    backend.validate(grid, prof)  # a bad profile is reported before any job is recorded
    check_backbones(grid, BackboneCache.in_workspace(read_only=dry_run))  # fails here, not in every job
    BreakerSettings.from_table(grid.raw.get("breaker"), str(grid.path))
    return Validated(grid, backend, name, prof)


def prepare_data(v: Validated) -> DatasetMeta:
    """Build a builtin dataset the grid names (if missing), then pre-flight its files; nothing is recorded yet."""
    from orchestrator.backends.slurm_target import targeting
    from orchestrator.preflight_data import check_data

    meta = ensure_dataset(v.grid)
    expansion(v.grid, meta)  # what only the dataset can tell (e.g. a rewind point past the end) fails first
    with targeting(str(v.profile.get("slurm_conf") or "")):  # the profile's cluster (its node count), not the default
        check_data(meta, v.backend.name)
    return meta


def ensure_dataset(grid: GridSpec) -> DatasetMeta:
    """Load the grid's dataset, building a builtin one first when it is missing and ``prepare`` names it."""
    root = Path(grid.dataset_root)
    if not (root / "meta.json").is_file() and grid.dataset_prepare:
        from workers.data.builtin import prepare_builtin  # data preparation lives in the data layer

        log.info("preparing the %s dataset in %s", grid.dataset_prepare, root)
        prepare_builtin(grid.dataset_prepare, root, int(grid.train.get("image_size", 32)), **grid.dataset_limits)
    return DatasetMeta.load(root)


@dataclass(frozen=True)
class Expansion:
    """A grid's subsets resolved against its dataset, and its jobs."""

    grid: GridSpec
    meta: DatasetMeta
    manifests: dict[str, Manifest]
    jobs: list[ExpandedJob]


_last_expansion: list[Expansion] = []  # the latest one (at most one)


def expansion(grid: GridSpec, meta: DatasetMeta) -> Expansion:
    """Resolve and expand ``grid`` on ``meta``, once per pair of objects: a launch's early check
    (:func:`prepare_data`), its :func:`record_grid` and each adaptive round share one expansion (both are
    immutable; a grid file read again is a new object, expanded anew)."""
    last = _last_expansion[0] if _last_expansion else None
    if last is not None and last.grid is grid and last.meta is meta:
        return last
    manifests = resolve_subsets(grid, meta)
    out = Expansion(grid, meta, manifests, expand(grid, meta, manifests))
    _last_expansion[:] = [out]
    return out


def record_grid(store: Store, grid: GridSpec, meta: DatasetMeta) -> RecordResult:
    """Expand ``grid`` and record its jobs (idempotent): job files and subset manifests on disk first, then
    the grid row and its job rows in ONE transaction (never a grid without its jobs). Launchers call it
    while holding the grid's lock (:func:`holding_grid`).

    A relaunch reads each job file and rewrites only those whose text differs (or that are gone); the
    database inserts only the jobs and links it does not hold yet."""
    exp = expansion(grid, meta)
    jobs = exp.jobs
    if grid.adaptive is not None or grid.audit_only:  # [adaptive]'s seeds, a ticket's audit (imported here: scipy)
        from orchestrator.adaptive.controller import adaptive_jobs

        jobs = adaptive_jobs(store, grid, jobs)
    root = workspace_dir()
    manifest_files = {name: write_manifest(m, root) for name, m in exp.manifests.items()}
    rows = []
    written = 0
    for ej in jobs:
        spec = ej.spec
        job_dir = job_dir_text(spec.job_hash, root)
        written += write_job_file(spec, job_dir, manifest_files[ej.subset_name])
        rows.append(NewJob(job_hash=spec.job_hash, spec_json=spec.to_json(), method=spec.method,
                           config_key=spec.config_key, seed=spec.seed, job_dir=job_dir, subset_name=ej.subset_name,
                           config_name=ej.config_name, parents=spec.depends_on))
    grid_id, new, known = store.record_grid(grid.name, grid.to_json(), grid.spec_hash, str(grid.path),
                                            grid.failure_budget, rows)
    log.debug("grid %s: %d job files written, %d new jobs, %d known", grid.name, written, new, known)
    return RecordResult(grid_id, new, known, jobs)


def runnable_jobs(store: Store, grid_name: str, failure_budget: int, *, include_queued: bool) -> list[JobRow]:
    """Jobs to hand to a backend: PENDING, FAILED within the failure budget, and (local) stale QUEUED."""
    states = [JobState.PENDING, JobState.FAILED] + ([JobState.QUEUED] if include_queued else [])
    out = []
    for j in store.jobs(grid_name, states):
        if j.state == JobState.FAILED and j.failure_count > failure_budget:
            continue
        out.append(j)
    return out


@contextmanager
def holding_grid(store: Store, grid_name: str) -> Iterator[None]:
    """Hold the grid's launcher lock (in the database) for the block; :class:`LauncherBusy` naming the
    holder when another launcher, on any host, has it."""
    with store.grid_lock(grid_name) as got:
        if not got.held:
            who = got.holder.describe() if got.holder else "a launcher that is just finishing"
            raise LauncherBusy(f"grid {grid_name!r}: another launcher is running it ({who}); wait for it, or "
                               "follow it with: dlth-orch status")
        yield


def report_refresher(store: Store, grid_name: str) -> Callable[[int], object] | None:
    """``[report] every = N``: what rewrites the report files while the grid runs, and ``[notify]``: what sends
    the grid's notifications (``None``: neither asked for)."""
    from orchestrator.notify import with_notifications
    from orchestrator.report_files import Refresher, report_every

    every = report_every(store, grid_name)
    return with_notifications(store, grid_name, Refresher(store, grid_name, every).poll if every else None)


def launch(v: Validated, store: Store, db_url: str, meta: DatasetMeta, *, wait: bool, progress: bool,
           console: Any, frozen: Frozen | None = None) -> int:
    """Record the grid's jobs and hand the runnable ones to the backend (after :func:`validate`); ``frozen``:
    the code snapshot the jobs run (:mod:`orchestrator.provenance.freeze`), recorded and pointed at first.
    Returns how many jobs were new or handed to the backend (0: a relaunch with nothing to do)."""
    from rich.markup import escape

    from orchestrator.backends.base import LaunchContext
    from orchestrator.grid.graph import advance
    from orchestrator.status import refresh
    from orchestrator.words import plural

    grid, backend = v.grid, v.backend
    with holding_grid(store, grid.name):  # before anything is recorded
        rec = record_grid(store, grid, meta)
        if frozen is not None:  # the frozen-code step: jobs point at the snapshot before any is submitted
            frozen.record(store, grid.name)
            console.print(frozen.describe())
        console.print(f"grid [bold]{escape(grid.name)}[/]: {plural(len(rec.jobs), 'job')} ({rec.new} new, {rec.known} "
                      "already known)")
        refresh(store, grid.name)
        advance(store, grid.name, grid.failure_budget)
        local = backend.name == "local"
        ctx = LaunchContext(store=store, db_url=db_url, grid_name=grid.name, failure_budget=grid.failure_budget,
                            profile=v.profile, wait=wait, progress=progress,
                            on_progress=report_refresher(store, grid.name))
        jobs = runnable_jobs(store, grid.name, grid.failure_budget, include_queued=local)
        waiting = len(store.jobs(grid.name, [JobState.WAITING]))
        console.print(f"{plural(len(jobs), 'job')} to run"
                      + (f", {waiting} waiting for their parents" if waiting else ""))
        backend.submit(ctx, jobs)
        if (grid.adaptive is not None or grid.audited) and wait:  # [adaptive] or a ticket's audit: a step per round
            from orchestrator.adaptive.controller import run_rounds

            run_rounds(store, grid, lambda: record_grid(store, grid, meta), lambda js: backend.submit(ctx, js),
                       lambda: runnable_jobs(store, grid.name, grid.failure_budget, include_queued=local),
                       lambda m: console.print(escape(m)))
    return rec.new + len(jobs)


def unchanged_report(store: Store, grid_name: str) -> tuple[Path, list[str]] | None:
    """After a launch that ran nothing: (the page, the decision's lines) of the grid's last report when it
    covers the grid as it stands (every job ended, the same completed and total counts, its files there),
    read back without making the report again (that imports scipy and matplotlib and redraws every plot);
    ``None`` when it must be made."""
    import json

    from orchestrator.report_files import grid_finished, last_written

    last = last_written(store, grid_name)
    if not last or not last.get("complete") or not grid_finished(store, grid_name):
        return None
    counts = store.state_counts(grid_name)
    if (last.get("jobs_completed"), last.get("jobs_total")) != (counts.get(JobState.COMPLETED, 0),
                                                                 sum(counts.values())):
        return None
    folder = Path(str(last.get("dir", "")))
    try:
        decision = json.loads((folder / "report.json").read_text()).get("decision") or {}
    except (OSError, ValueError, AttributeError):
        return None
    page = folder / "report.html"
    if not page.is_file() or not isinstance(decision, dict) or not isinstance(decision.get("headline"), str):
        return None
    details = decision.get("details")
    details = [d for d in details if isinstance(d, str)] if isinstance(details, list) else []
    return page, [decision["headline"], *details]
