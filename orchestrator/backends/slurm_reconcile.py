"""Bring a grid's database rows in line with what SLURM says (one batched query per refresh).

- Arrays submitted but never recorded (the orchestrator died after ``sbatch``) are *adopted*: their
  tasks are found by job name and mapped to jobs through their submission manifest (``WorkDir``).
  A job that already has a live SLURM task is never given a second one; a spare one is cancelled.
- An attempt left open by a worker that died (killed, out of memory, node failure, time limit) is
  closed with SLURM's verdict, exit code and the last lines of its log.
- A worker that stops on a signal records PREEMPTED; when SLURM says the run was cancelled or hit its
  time limit, the attempt is corrected to CANCELLED / TIMEOUT.
- A job SLURM has finished with, but which is neither done nor failed (timed out, requeue refused, the
  worker found nothing to do), goes back to PENDING so the next submission runs it again.
- A WAITING or QUEUED job whose task SLURM no longer holds (cancelled while it waited on its parents,
  purged: in neither squeue nor sacct; for a WAITING job, not alive in squeue, the only view of tasks
  pending on a dependency) is noticed in that refresh and submitted again; see :func:`_forget`.
- A RUNNING job whose heartbeat stopped while SLURM says RUNNING is *flagged* (logged, listed), never killed.
- A RUNNING job whose heartbeat goes on but whose steps stopped (:mod:`orchestrator.stall`) is *stalled*: its
  attempt is closed FAILED ("stalled") and its task cancelled; it is resubmitted within the failure budget.
"""

from __future__ import annotations

import logging
import re
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from db import AttemptRow, AttemptState, JobRow, JobState, Store
from db.models import utcnow
from orchestrator.backends.slurm_cmd import scancel
from orchestrator.backends.slurm_retry import on_failure
from orchestrator.backends.slurm_sacct import SlurmRun, SlurmView, query
from orchestrator.backends.slurm_submit import first_submission, read_manifest, submitted_at
from orchestrator.stall import stalled
from orchestrator.workspace import log_tail
from specs.contract import LOG_DIR
from specs.settings import env_settings

log = logging.getLogger(__name__)
BACKEND = "slurm"
OOM_PATTERN = re.compile(r"exceeded job memory limit|out of memory|oom[-_ ]kill|OUT_OF_MEMORY", re.IGNORECASE)
TERMINAL_TO_ATTEMPT = {
    "COMPLETED": AttemptState.COMPLETED, "FAILED": AttemptState.FAILED, "CANCELLED": AttemptState.CANCELLED,
    "TIMEOUT": AttemptState.TIMEOUT, "DEADLINE": AttemptState.TIMEOUT, "OUT_OF_MEMORY": AttemptState.OUT_OF_MEMORY,
    "NODE_FAIL": AttemptState.NODE_FAIL, "BOOT_FAIL": AttemptState.NODE_FAIL, "PREEMPTED": AttemptState.PREEMPTED,
    "REQUEUED": AttemptState.PREEMPTED, "REVOKED": AttemptState.CANCELLED,
}
ACCOUNTING_LAG = timedelta(seconds=30)  # a task this young, in neither squeue nor sacct, may not be listed yet
UNKNOWN_GRACE = timedelta(minutes=10)  # missing this long while sacct or squeue did not answer: gone
CLOCK_SLACK = timedelta(seconds=30)


@dataclass
class ReconcileResult:
    """What one refresh found and changed."""

    commands: int = 0
    adopted: int = 0
    closed: int = 0
    corrected: int = 0
    requeued: int = 0  # jobs put back to PENDING for another submission
    cancelled_spares: int = 0
    unknown: int = 0
    vanished: int = 0  # jobs whose task SLURM no longer holds, to be submitted again
    stale: list[str] = field(default_factory=list)
    alive: int = 0  # jobs with a live SLURM task
    stalled: list[str] = field(default_factory=list)  # stopped: heartbeat alive, steps not moving

    def changed(self) -> bool:
        return bool(self.adopted or self.closed or self.corrected or self.requeued or self.cancelled_spares
                    or self.vanished or self.stalled)


def verdict(run: SlurmRun, tail: str, signal_delay_s: int) -> str:
    """The attempt state that a finished SLURM run stands for."""
    state = TERMINAL_TO_ATTEMPT.get(run.state, AttemptState.FAILED)
    if state == AttemptState.PREEMPTED and run.timelimit_s and run.elapsed_s is not None \
            and run.elapsed_s >= run.timelimit_s - signal_delay_s - 30:
        return AttemptState.TIMEOUT  # requeued on the time limit's SIGUSR2
    if state == AttemptState.FAILED and OOM_PATTERN.search(tail):  # killed by OverMemoryKill (no cgroups)
        return AttemptState.OUT_OF_MEMORY
    return state


READABLE = {AttemptState.OUT_OF_MEMORY: "out of memory", AttemptState.TIMEOUT: "time limit",
            AttemptState.NODE_FAIL: "node failure", AttemptState.CANCELLED: "cancelled",
            AttemptState.PREEMPTED: "preempted", AttemptState.FAILED: "failed", AttemptState.LOST: "lost"}


def describe(run: SlurmRun, state: str | None = None) -> str:
    """``out of memory: SLURM 12_3 FAILED exit code 0 signal 9 on node7``."""
    code = "" if run.exit_code is None else f" exit code {run.exit_code}"
    sig = f" signal {run.signal}" if run.signal else ""
    head = f"{READABLE.get(state, state.lower())}: " if state else ""
    return f"{head}SLURM {run.slurm_id} {run.state}{code}{sig} on {run.nodes or '?'}"


def _run_of(attempt: AttemptRow, runs: list[SlurmRun]) -> SlurmRun | None:
    """The run during which ``attempt`` started: of the runs that could have held it (started before it
    and not ended before it, give or take the clocks' skew), the one that started nearest to it. Runs
    of a requeued job can follow each other within seconds, closer than the skew allowed for."""
    held = [run for run in runs if run.start is not None and run.start <= attempt.started_at + CLOCK_SLACK
            and (run.end is None or run.end >= attempt.started_at - CLOCK_SLACK)]
    return min(held, key=lambda run: abs((attempt.started_at - run.start).total_seconds()), default=None)


class _Manifests:
    def __init__(self) -> None:
        self._cache: dict[str, dict[str, Any] | None] = {}

    def of(self, run: SlurmRun) -> dict[str, Any] | None:
        """The submission manifest of the array ``run`` belongs to."""
        if not run.workdir:
            return None
        if run.workdir not in self._cache:
            self._cache[run.workdir] = read_manifest(run.workdir)
        return self._cache[run.workdir]

    def job_of(self, run: SlurmRun) -> str | None:
        m = self.of(run)
        if m is None or run.task_index >= len(m["tasks"]):
            return None
        return str(m["tasks"][run.task_index]["job_hash"])

    def signal_delay(self, run: SlurmRun, default: int = 90) -> int:
        if not run.workdir:
            return default
        if run.workdir not in self._cache:
            self._cache[run.workdir] = read_manifest(run.workdir)
        m = self._cache[run.workdir]
        return int(m.get("signal_delay_s", default)) if m else default


def _stale_after() -> timedelta:
    return timedelta(seconds=env_settings().stale_s)


def reconcile_grid(store: Store, grid_name: str, job_name: str) -> ReconcileResult:
    """One refresh of a grid's SLURM jobs (one sacct, plus one squeue when accounting lags)."""
    res = ReconcileResult()
    since = first_submission(job_name)
    if since is None:
        return res  # never submitted to SLURM from this workspace
    jobs = {j.job_hash: j for j in store.jobs(grid_name)}
    expect = [j.backend_id for j in jobs.values() if _holds_task(j) and j.state in JobState.ACTIVE]
    waiting = [j.backend_id for j in jobs.values() if _holds_task(j) and j.state == JobState.WAITING]
    view = query(job_name, since, expect, waiting)
    res.commands = view.commands
    manifests = _Manifests()
    _adopt(store, jobs, view, manifests, res)
    attempts: dict[str, list[AttemptRow]] = defaultdict(list)
    for a in store.grid_attempts(grid_name):
        if a.backend == BACKEND:
            attempts[a.job_hash].append(a)
    _correct_stops(store, attempts, view, manifests, res)
    jobs = {j.job_hash: j for j in store.jobs(grid_name)}
    gone: dict[str, str] = {}  # job -> its task that SLURM no longer holds
    for job in jobs.values():
        if not _holds_task(job):
            continue
        if job.state == JobState.WAITING:
            sid = job.backend_id or ""
            if not view.alive(sid):
                gone[job.job_hash] = sid
        elif job.state in JobState.ACTIVE:
            _settle(store, job_name, job, attempts.get(job.job_hash, []), view, manifests, gone, res)
    _forget(store, gone, view, res)
    return res


def _holds_task(job: JobRow) -> bool:
    return job.backend == BACKEND and bool(job.backend_id)


def _forget(store: Store, gone: dict[str, str], view: SlurmView, res: ReconcileResult) -> None:
    """Jobs whose SLURM task is gone (cancelled while it waited on its parents, purged): WAITING ones keep
    waiting without a task, QUEUED ones go back to PENDING; the next submission gives them a new task
    (against their parents' live tasks). A child whose parents failed is marked PARENT_FAILED by
    :func:`orchestrator.grid.graph.advance` in the same refresh."""
    if not gone:
        return
    moved = store.forget_tasks(gone)
    res.vanished += len(moved)
    for h in moved:
        run = view.latest(gone[h])
        how = f"it ended {run.state}" if run else "neither squeue nor sacct knows it"
        log.warning("job %s: its SLURM task %s is gone (%s): it will be submitted again", h, gone[h], how)


def _adopt(store: Store, jobs: dict[str, JobRow], view: SlurmView, manifests: _Manifests,
           res: ReconcileResult) -> None:
    """Record live SLURM tasks the database does not know (submitted, then the orchestrator died)."""
    live_ids = {sid for sid, runs in view.runs.items() if runs[-1].alive}
    spare: list[str] = []
    for sid in sorted(live_ids):
        run = view.runs[sid][-1]
        h = manifests.job_of(run)
        job = jobs.get(h) if h else None
        if job is None or job.backend_id == sid:
            continue
        recorded_alive = job.backend == BACKEND and job.backend_id in live_ids
        if job.state in (JobState.COMPLETED, JobState.CANCELLED) or recorded_alive or job.state == JobState.RUNNING:
            if run.state == "PENDING":
                spare.append(sid)
            continue
        store.mark_queued([job.job_hash], BACKEND, [sid])
        jobs[job.job_hash] = store.job(job.job_hash) or job
        res.adopted += 1
        log.warning("adopted SLURM task %s for job %s (submitted but never recorded)", sid, job.job_hash)
    if spare:
        scancel(spare)
        res.cancelled_spares += len(spare)
        log.warning("cancelled %d spare SLURM tasks of jobs that already have one or are finished", len(spare))


def _correct_stops(store: Store, attempts: dict[str, list[AttemptRow]], view: SlurmView, manifests: _Manifests,
                   res: ReconcileResult) -> None:
    """PREEMPTED attempts (the worker's guess on a signal) whose run SLURM calls TIMEOUT or CANCELLED."""
    for job_attempts in attempts.values():
        for a in job_attempts:
            if a.state != AttemptState.PREEMPTED or not a.backend_id or a.backend_id not in view.runs:
                continue
            runs = view.runs[a.backend_id]
            run = _run_of(a, runs)
            if run is None or not run.ended:
                continue
            state = verdict(run, "", manifests.signal_delay(run))
            if state in (AttemptState.TIMEOUT, AttemptState.CANCELLED) and store.correct_stop_reason(
                    a.id, state, describe(run, state)):
                res.corrected += 1


def _settle(store: Store, job_name: str, job: JobRow, attempts: list[AttemptRow], view: SlurmView,
            manifests: _Manifests, gone: dict[str, str], res: ReconcileResult) -> None:
    sid = job.backend_id
    assert sid is not None
    runs = view.runs.get(sid)
    if not runs:
        res.unknown += 1
        if job.state != JobState.QUEUED:
            return
        seen = [a.started_at for a in attempts if a.backend_id == sid]
        submitted = submitted_at(job_name, sid.split("_", 1)[0])
        if view.complete:  # accounting and the controller both answered: the task is gone, unless it was
            # submitted moments ago (a task that died at once may have left squeue before slurmdbd lists it;
            # taken for gone, it would be resubmitted as it was, its failure never recorded)
            last = max([t for t in (submitted, *seen) if t is not None], default=None)
            if last is None or utcnow() - last > ACCOUNTING_LAG:
                gone[job.job_hash] = sid
            return
        if utcnow() - max([*seen, submitted or utcnow()]) > UNKNOWN_GRACE:  # one did not answer: give it time
            gone[job.job_hash] = sid
        return
    latest = runs[-1]
    open_attempts = [a for a in attempts if a.state == AttemptState.RUNNING and a.backend_id == sid]
    if latest.alive:
        res.alive += 1
        for a in open_attempts:  # left open by an earlier run of a requeued task
            run = _run_of(a, runs)
            if run is not None and run is not latest and run.ended:
                _close(store, job, a, run, manifests, res)
        if latest.state == "RUNNING" and job.state == JobState.RUNNING and _stop_if_stalled(store, job, open_attempts):
            res.stalled.append(job.job_hash)
            return
        hb = job.heartbeat_at
        if latest.state == "RUNNING" and job.state == JobState.RUNNING and hb and utcnow() - hb > _stale_after():
            res.stale.append(job.job_hash)
            log.warning("job %s: SLURM says %s is RUNNING but its heartbeat stopped %ds ago (not killed)",
                        job.job_hash, sid, int((utcnow() - hb).total_seconds()))
        return
    for a in open_attempts:
        _close(store, job, a, _run_of(a, runs) or latest, manifests, res)
    fresh = store.job(job.job_hash)
    if fresh is None or fresh.state != JobState.QUEUED:
        return
    ran = [a for a in attempts if a.backend_id == sid and latest.start and a.started_at + CLOCK_SLACK >= latest.start]
    tail = log_tail(_task_log(latest), 20)
    state = verdict(latest, tail, manifests.signal_delay(latest))
    if state == AttemptState.CANCELLED:
        res.requeued += store.set_state([job.job_hash], JobState.CANCELLED, [JobState.QUEUED])
        log.info("job %s: SLURM task %s was cancelled", job.job_hash, sid)
    elif not ran and state in AttemptState.FAILURES:
        # the task died before the worker claimed the job: record that as a failed attempt
        attempt_id = store.claim(job.job_hash, backend=BACKEND, backend_id=sid, host=latest.nodes or "?", pid=None,
                                 log_path=str(_task_log(latest) or "") or None)
        if attempt_id is not None:
            retry = on_failure(job.job_hash, job.job_dir, state, manifests.of(latest), checkpointed=False)
            store.finish_attempt(attempt_id, state, exit_code=latest.exit_code,
                                 reason=f"{describe(latest, state)}, before the worker started" + _said(retry),
                                 log_tail=tail)
            res.closed += 1
    else:
        res.requeued += store.set_state([job.job_hash], JobState.PENDING, [JobState.QUEUED])
        log.info("job %s: SLURM is done with %s (%s) but the job is not: back to PENDING", job.job_hash, sid,
                 latest.state)


def _stop_if_stalled(store: Store, job: JobRow, open_attempts: list[AttemptRow]) -> bool:
    """Close a stalled job's attempt FAILED ("stalled") and cancel its task; True if it was stalled."""
    stall = stalled(job.job_dir, job.spec_json)
    if stall is None or not stall.of([a.id for a in open_attempts]):
        return False
    reason = stall.reason
    for a in open_attempts:
        store.finish_attempt(a.id, AttemptState.FAILED, reason=reason)
    scancel([job.backend_id or ""])
    log.warning("job %s %s: cancelled SLURM task %s (resubmitted within the failure budget)", job.job_hash,
                reason, job.backend_id)
    return True


def _task_log(run: SlurmRun) -> Path | None:
    if not run.workdir:
        return None
    path = Path(run.workdir) / LOG_DIR / f"{run.slurm_id}_0_log.out"
    return path if path.is_file() else None


def _said(retry: str | None) -> str:
    return f"; {retry}" if retry else ""


def _close(store: Store, job: JobRow, a: AttemptRow, run: SlurmRun, manifests: _Manifests,
           res: ReconcileResult) -> None:
    """Close an attempt the worker left open, with SLURM's verdict on the run it belonged to; record what
    its retry asks for (:mod:`orchestrator.backends.slurm_retry`)."""
    tail = log_tail(a.log_path or _task_log(run), 20)
    state = verdict(run, tail, manifests.signal_delay(run))
    if state == AttemptState.COMPLETED:  # SLURM finished but the worker never said so: it left no result
        state = AttemptState.LOST
    retry = on_failure(job.job_hash, job.job_dir, state, manifests.of(run), checkpointed=False)
    store.finish_attempt(a.id, state, exit_code=run.exit_code,
                         reason=f"{describe(run, state)}; the worker did not record its end" + _said(retry),
                         log_tail=tail)
    res.closed += 1
    log.warning("job %s attempt %d: closed %s (%s)", a.job_hash, a.number, state, describe(run, state))
