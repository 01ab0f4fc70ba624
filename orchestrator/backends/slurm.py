"""SLURM backend: jobs run as SLURM job arrays submitted through submitit.

- ``submit`` records and submits, then returns (``ctx.wait=False``) or follows the grid to the end,
  resubmitting failed jobs within the grid's failure budget, with back-off between polls.
- Every SLURM job of a grid is named ``dlth-<grid>-<hash>`` (:func:`slurm_profile.job_name`): one
  ``sacct --name`` finds them all (see :mod:`slurm_reconcile` for what a refresh does).
- Preemption and time limits: the worker checkpoints every epoch; on SIGUSR2 submitit requeues the task,
  which resumes from the last checkpoint. Neither counts against the failure budget.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from db import AttemptState, JobRow, JobState, Store
from orchestrator import breaker
from orchestrator.backends.base import Backend, LaunchContext, Plan, PlanJob, PlannedGroup
from orchestrator.backends.settings_file import release_finished_grids, release_grid_settings
from orchestrator.backends.slurm_cmd import SlurmError, scancel, slurm_available
from orchestrator.backends.slurm_graph import plan_graph
from orchestrator.backends.slurm_profile import SlurmProfile, job_name
from orchestrator.backends.slurm_reconcile import BACKEND, ReconcileResult, reconcile_grid
from orchestrator.backends.slurm_report import relink_report_job
from orchestrator.backends.slurm_submit import grid_dir, submit_jobs
from orchestrator.backends.slurm_target import by_cluster, grid_conf, remember, targeting
from orchestrator.db_wait import ride_out
from orchestrator.grid.graph import advance
from orchestrator.storage.gc import collect_grid

log = logging.getLogger(__name__)
LOCK_TIMEOUT_S = 600.0


@contextlib.contextmanager
def submit_lock(name: str) -> Iterator[None]:
    """Serialise refresh-and-submit of one grid between orchestrators (no job is ever submitted twice)."""
    d = grid_dir(name)
    d.mkdir(parents=True, exist_ok=True)
    with open(d / ".submit.lock", "a+") as fh:
        deadline = time.time() + LOCK_TIMEOUT_S
        while True:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.time() > deadline:
                    raise SlurmError(f"another orchestrator holds {d / '.submit.lock'}") from None
                time.sleep(0.2)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


class Backoff:
    """Poll interval: ``lo`` after a change, growing by ``factor`` while nothing changes, at most ``hi``."""

    def __init__(self, lo: float, hi: float, factor: float = 1.5) -> None:
        self.lo, self.hi, self.factor = lo, max(lo, hi), factor
        self.delay = lo

    def next(self, changed: bool) -> float:
        self.delay = self.lo if changed else min(self.hi, self.delay * self.factor)
        return self.delay


def runnable(store: Store, grid_name: str, failure_budget: int, only: set[str] | None = None) -> list[JobRow]:
    """PENDING jobs and FAILED ones within the failure budget (optionally only those in ``only``)."""
    return [j for j in store.jobs(grid_name, [JobState.PENDING, JobState.FAILED])
            if (only is None or j.job_hash in only)
            and (j.state == JobState.PENDING or j.failure_count <= failure_budget)]


def untasked(store: Store, grid_name: str) -> list[JobRow]:
    """WAITING jobs that no SLURM task holds (never submitted, or their task vanished)."""
    return [j for j in store.jobs(grid_name, [JobState.WAITING]) if not j.backend_id]


def relink_children(store: Store, grid_name: str, submitting: set[str]) -> list[JobRow]:
    """WAITING jobs to submit along with ``submitting``: those no SLURM task holds yet, and those held by a
    task that waits for a parent being resubmitted now (pending forever with ``DependencyNeverSatisfied``
    after the parent's failure): that task is cancelled and the child resubmitted against the new one."""
    again = set(store.descendants(submitting)) if submitting else set()
    out = untasked(store, grid_name) + [j for j in store.jobs(grid_name, [JobState.WAITING])
                                        if j.backend_id and j.job_hash in again]
    stale = sorted({j.backend_id for j in out if j.backend_id})
    if stale:
        log.info("re-linking %d waiting jobs to their resubmitted parents (cancelling %s)", len(out),
                 ", ".join(stale[:5]))
        scancel(stale)
    return out


def _detail(counts: dict[str, int], res: ReconcileResult) -> str:
    text = "  ".join(f"{s.lower()} {counts.get(s, 0)}" for s in (JobState.QUEUED, JobState.RUNNING, JobState.FAILED))
    return text + (f"  [yellow]stale {len(res.stale)}[/]" if res.stale else "")


class SlurmBackend(Backend):
    name = BACKEND
    default_profile = "slurm-local"

    def validate(self, grid: Any, profile: dict[str, Any]) -> None:
        SlurmProfile.from_dict(profile)

    def plan(self, jobs: list[PlanJob], profile: dict[str, Any]) -> Plan:
        """The arrays a submission of ``jobs`` would sbatch, with their dependencies (no SLURM call)."""
        prof = SlurmProfile.from_dict(profile)
        plans = plan_graph(jobs, prof, prof.max_array_size)
        names = [f"array{i}" for i in range(len(plans))]
        groups = []
        for i, p in enumerate(plans):
            dep = p.dependency(names) or ""
            kind, _, on = dep.partition(":")
            waits = sorted({x.split("_")[0] for x in on.split(":")}) if on else []
            res = {k: v for k, v in p.params.items() if k in ("nodes", "ntasks_per_node", "cpus_per_task", "mem",
                                                              "time", "gpus_per_node", "partition")}
            groups.append(PlannedGroup(names[i], [j.label for j in p.members], res, waits, kind))
        return Plan(self.name, str(profile.get("name", self.default_profile)), len(jobs), groups)

    def refresh(self, store: Store, grid_name: str, failure_budget: int | None = None) -> ReconcileResult:
        """One batched look at SLURM for the whole grid; the database follows it. Children of a parent
        that will never complete become PARENT_FAILED and their pending tasks are cancelled."""
        name = job_name(store, grid_name)
        with targeting(grid_conf(store, name)):
            res = reconcile_grid(store, grid_name, name)
            grid = store.get_grid(grid_name)
            budget = failure_budget if failure_budget is not None else (grid.failure_budget if grid else 0)
            moves = advance(store, grid_name, budget)
            if moves.parent_failed:
                dead = set(moves.parent_failed)
                ids = sorted({j.backend_id for j in store.jobs(grid_name, [JobState.PARENT_FAILED])
                              if j.job_hash in dead and j.backend == BACKEND and j.backend_id})
                if ids:
                    scancel(ids)
        release_grid_settings(store, grid_name)  # when its last job ended
        collect_grid(store, grid_name)  # the grid's [storage] policy, as its jobs finish
        return res

    def reconcile(self, store: Store, grid_name: str) -> None:
        if not slurm_available():
            log.warning("SLURM tools not found: cannot refresh the SLURM jobs of %s", grid_name)
            return
        self.refresh(store, grid_name)

    def submit(self, ctx: LaunchContext, jobs: list[JobRow]) -> None:
        profile = SlurmProfile.from_dict(ctx.profile)
        if not slurm_available():
            raise SlurmError("sbatch/sacct not found: run on a SLURM login node (or scripts/slurm-cluster.sh up)")
        name = job_name(ctx.store, ctx.grid_name)
        remember(ctx.store, name, profile.slurm_conf)
        with targeting(profile.slurm_conf):
            self._submit(ctx, profile, name, {j.job_hash for j in jobs})
            if ctx.wait:
                self.follow(ctx, profile)

    def _submit(self, ctx: LaunchContext, profile: SlurmProfile, name: str, only: set[str] | None) -> int:
        """Refresh, then submit what is still runnable, under the grid's submit lock; returns how many."""
        store, grid = ctx.store, ctx.grid_name
        with submit_lock(name):
            self.refresh(store, grid, ctx.failure_budget)  # adopts arrays a crashed orchestrator never recorded
            if breaker.check(store, grid):
                return 0  # paused: nothing new is handed to SLURM until `dlth-orch resume`
            todo = runnable(store, grid, ctx.failure_budget, only)
            todo += relink_children(store, grid, {j.job_hash for j in todo})
            if todo:
                deps = store.grid_deps(grid)
                planned = {j.job_hash for j in todo}
                known = {j.job_hash: j.backend_id for j in store.jobs(grid, [JobState.QUEUED, JobState.RUNNING,
                                                                              JobState.WAITING])
                         if j.backend == BACKEND and j.backend_id and j.job_hash not in planned}
                subs = submit_jobs(store, name, todo, profile, ctx.db_url, grid_name=grid, parents=deps,
                                   known_ids=known,
                                   on_submitted=lambda sub: remember(store, name, profile.slurm_conf,
                                                                     [sub.array_id]))
                log.info("%d jobs submitted in %d arrays", len(todo), len(subs))
                relink_report_job(store, grid, name, profile, ctx.db_url)  # after the grid's last task
            return len(todo)

    def follow(self, ctx: LaunchContext, profile: SlurmProfile) -> None:
        """Poll (with back-off) until no job of the grid is queued or running; resubmit what may run again."""
        store, grid = ctx.store, ctx.grid_name
        name = job_name(store, grid)
        backoff = Backoff(profile.poll_min_s, profile.poll_max_s)
        total = len(ride_out(lambda: store.jobs(grid), what=f"following {grid}"))
        progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                            TextColumn("{task.fields[detail]}"), TimeElapsedColumn(), disable=not ctx.progress)
        last: dict[str, int] = {}
        try:
            with progress:
                task = progress.add_task(f"{grid} (SLURM)", total=total, detail="")
                while True:
                    res, resubmitted, pause, counts = ride_out(lambda: self._poll(ctx, profile, name),
                                                               what=f"following {grid}")
                    progress.update(task, completed=counts.get(JobState.COMPLETED, 0), detail=_detail(counts, res))
                    ctx.progressed(counts.get(JobState.COMPLETED, 0))
                    if pause and not counts.get(JobState.RUNNING, 0):
                        return  # the rest is held; `launch` prints the pause line
                    if not any(counts.get(s, 0) for s in (*JobState.ACTIVE, JobState.WAITING)) and not resubmitted:
                        return
                    changed = res.changed() or resubmitted > 0 or counts != last
                    last = counts
                    time.sleep(backoff.next(changed))
        except KeyboardInterrupt:
            log.warning("stopped following %s: its SLURM jobs keep running (dlth-orch status shows them)", grid)

    def _poll(self, ctx: LaunchContext, profile: SlurmProfile,
              name: str) -> tuple[ReconcileResult, int, breaker.BreakerState | None, dict[str, int]]:
        """One look of the follower: refresh, trip the breaker, resubmit what may run again, count."""
        store, grid = ctx.store, ctx.grid_name
        res = self.refresh(store, grid, ctx.failure_budget)
        resubmitted = 0
        pause = breaker.check(store, grid)
        if (runnable(store, grid, ctx.failure_budget) or untasked(store, grid)) and not pause:
            resubmitted = self._submit(ctx, profile, name, None)
        return res, resubmitted, pause, store.state_counts(grid)

    def cancel(self, store: Store, jobs: list[JobRow]) -> int:
        """Mark the jobs CANCELLED (open attempts too), then ``scancel`` their SLURM tasks in one command.

        A task that still holds other live jobs (``jobs_per_worker``) is not cancelled: its worker stops the
        cancelled job at its next heartbeat and skips a cancelled job it has not started."""
        hashes = {j.job_hash for j in jobs}
        for a in store.open_attempts(backend=BACKEND):
            if a.job_hash in hashes:
                store.finish_attempt(a.id, AttemptState.CANCELLED, reason="cancelled by the user (dlth-orch cancel)")
        n = store.set_state(list(hashes), JobState.CANCELLED, JobState.CANCELLABLE)
        release_finished_grids(store)
        ids = sorted({j.backend_id for j in jobs if j.backend == BACKEND and j.backend_id
                      and j.state in (JobState.QUEUED, JobState.RUNNING, JobState.WAITING)})
        live = (JobState.QUEUED, JobState.RUNNING, JobState.WAITING)
        grids = {g for h in hashes for g in store.job_grids(h)}
        shared = {j.backend_id for g in grids for j in store.jobs(g, list(live)) if j.backend == BACKEND}
        ids = [i for i in ids if i not in shared]
        for conf, some in by_cluster(store, ids).items():
            with targeting(conf):
                scancel(some)
        return n


def submission_dirs(store: Store, grid_name: str) -> list[Path]:
    """The grid's submission directories (manifests and submitit logs), oldest first."""
    d = grid_dir(job_name(store, grid_name))
    return sorted(p for p in d.iterdir() if p.is_dir()) if d.is_dir() else []
