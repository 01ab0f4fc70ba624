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

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from db import AttemptState, JobRow, JobState, Store
from orchestrator.backends.base import Backend, LaunchContext
from orchestrator.backends.slurm_cmd import SlurmError, scancel, slurm_available
from orchestrator.backends.slurm_profile import SlurmProfile, job_name
from orchestrator.backends.slurm_reconcile import BACKEND, ReconcileResult, reconcile_grid
from orchestrator.backends.slurm_submit import grid_dir, submit_jobs
from orchestrator.backends.slurm_target import array_conf, grid_conf, remember, targeting

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


def _detail(counts: dict[str, int], res: ReconcileResult) -> str:
    text = "  ".join(f"{s.lower()} {counts.get(s, 0)}" for s in (JobState.QUEUED, JobState.RUNNING, JobState.FAILED))
    return text + (f"  [yellow]stale {len(res.stale)}[/]" if res.stale else "")


class SlurmBackend(Backend):
    name = BACKEND

    def refresh(self, store: Store, grid_name: str) -> ReconcileResult:
        """One batched look at SLURM for the whole grid; the database follows it."""
        name = job_name(store, grid_name)
        with targeting(grid_conf(store, name)):
            return reconcile_grid(store, grid_name, name)

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
        with submit_lock(name):
            self.refresh(ctx.store, ctx.grid_name)  # adopts arrays a crashed orchestrator never recorded
            todo = runnable(ctx.store, ctx.grid_name, ctx.failure_budget, only)
            if todo:
                subs = submit_jobs(ctx.store, name, todo, profile, ctx.db_url, on_submitted=lambda sub: remember(
                    ctx.store, name, profile.slurm_conf, [sub.array_id]))
                log.info("%d jobs submitted in %d arrays", len(todo), len(subs))
            return len(todo)

    def follow(self, ctx: LaunchContext, profile: SlurmProfile) -> None:
        """Poll (with back-off) until no job of the grid is queued or running; resubmit what may run again."""
        store, grid = ctx.store, ctx.grid_name
        name = job_name(store, grid)
        backoff = Backoff(profile.poll_min_s, profile.poll_max_s)
        total = len(store.jobs(grid))
        progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                            TextColumn("{task.fields[detail]}"), TimeElapsedColumn(), disable=not ctx.progress)
        last: dict[str, int] = {}
        try:
            with progress:
                task = progress.add_task(f"{grid} (SLURM)", total=total, detail="")
                while True:
                    res = self.refresh(store, grid)
                    resubmitted = 0
                    if runnable(store, grid, ctx.failure_budget):
                        resubmitted = self._submit(ctx, profile, name, None)
                    counts = store.state_counts(grid)
                    progress.update(task, completed=counts.get(JobState.COMPLETED, 0), detail=_detail(counts, res))
                    if not any(counts.get(s, 0) for s in JobState.ACTIVE) and not resubmitted:
                        return
                    changed = res.changed() or resubmitted > 0 or counts != last
                    last = counts
                    time.sleep(backoff.next(changed))
        except KeyboardInterrupt:
            log.warning("stopped following %s: its SLURM jobs keep running (dlth-orch status shows them)", grid)

    def cancel(self, store: Store, jobs: list[JobRow]) -> int:
        """Mark the jobs CANCELLED (open attempts too), then ``scancel`` their SLURM tasks in one command."""
        hashes = {j.job_hash for j in jobs}
        for a in store.open_attempts(backend=BACKEND):
            if a.job_hash in hashes:
                store.finish_attempt(a.id, AttemptState.CANCELLED, reason="cancelled by the user (dlth-orch cancel)")
        n = store.set_state(list(hashes), JobState.CANCELLED,
                            [JobState.PENDING, JobState.QUEUED, JobState.RUNNING, JobState.FAILED])
        ids = sorted({j.backend_id for j in jobs if j.backend == BACKEND and j.backend_id
                      and j.state in (JobState.QUEUED, JobState.RUNNING)})
        confs = {a: array_conf(store, a) for a in {i.split("_")[0] for i in ids}}
        by_conf: dict[str, list[str]] = {}
        for slurm_id in ids:
            by_conf.setdefault(confs[slurm_id.split("_")[0]], []).append(slurm_id)
        for conf, some in by_conf.items():
            with targeting(conf):
                scancel(some)
        return n


def submission_dirs(store: Store, grid_name: str) -> list[Path]:
    """The grid's submission directories (manifests and submitit logs), oldest first."""
    d = grid_dir(job_name(store, grid_name))
    return sorted(p for p in d.iterdir() if p.is_dir()) if d.is_dir() else []
