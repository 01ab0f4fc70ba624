"""Local backend: each job is a ``torchrun`` process group on this machine (a one-rank job is its worker
process alone: torchrun's own interpreter and rendezvous cost ~5 s per job, longer than a small job's
training), several at once.

Jobs are packed into the machine's CPU cores, or given GPUs of their own (see
:mod:`orchestrator.backends.local_slots`).
Ctrl-C (or SIGTERM) stops the workers cleanly: they record PREEMPTED and resume on the next launch.
A worker that dies without a word (``kill -9``, OOM killer) is recorded LOST on the next look and
retried, within the grid's failure budget, from its last epoch checkpoint.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from db import AttemptState, JobRow, JobState, Store
from orchestrator import breaker
from orchestrator.backends.base import Backend, LaunchContext, Plan, PlanJob, PlannedGroup, graph_levels
from orchestrator.backends.local_slots import Allocation, SlotPool
from orchestrator.backends.settings_file import release_finished_grids, release_grid_settings, write_grid_settings
from orchestrator.db_wait import ride_out
from orchestrator.grid.graph import advance
from orchestrator.preflight import check_local_resources
from orchestrator.provenance.runtime import job_code_env
from orchestrator.stall import stalled
from orchestrator.storage.gc import collect_grid
from orchestrator.workspace import JOB_FILE, log_tail
from specs.contract import LOG_DIR, JobPaths
from specs.job import JobSpec
from specs.procs import pid_alive
from specs.settings import remove_settings_file

log = logging.getLogger(__name__)
POLL_S = 0.5
STOP_GRACE_S = 30.0


@dataclass
class _Running:
    """One worker process and the jobs it runs (several with ``[resources] jobs_per_worker``), in order."""

    jobs: list[JobRow]
    spec: JobSpec
    proc: subprocess.Popen
    log_path: Path
    log_fh: IO[bytes]
    alloc: Allocation
    attempts: dict[str, int]  # each job's attempt count when the process started


def take_batch(queue: deque[JobRow], first: JobRow, spec: JobSpec, code: Callable[[str], str | None]) -> list[JobRow]:
    """``first`` and up to ``jobs_per_worker - 1`` more queued jobs of the same resource group and code snapshot
    (taken out of ``queue``): one worker process runs them one after the other. The queue holds only jobs
    that are ready (their parents COMPLETED), so a batch never waits on a parent."""
    batch = [first]
    want = spec.resources.jobs_per_worker
    if want == 1:
        return batch
    key, first_code = spec.resources, code(first.job_hash)
    for job in list(queue):
        if len(batch) >= want:
            break
        if JobSpec.from_json(job.spec_json).resources == key and code(job.job_hash) == first_code:
            queue.remove(job)
            batch.append(job)
    return batch


def released_jobs(ctx: LaunchContext) -> list[JobRow]:
    """Move the grid's dependent jobs along (:func:`orchestrator.grid.graph.advance`) and queue the released ones."""
    moves = advance(ctx.store, ctx.grid_name, ctx.failure_budget)
    if not moves.released:
        return []
    released = set(moves.released)
    jobs = [j for j in ctx.store.jobs(ctx.grid_name, [JobState.PENDING]) if j.job_hash in released]
    ctx.store.mark_queued([j.job_hash for j in jobs], LocalBackend.name, [None] * len(jobs))
    log.info("%d jobs released: their parents completed", len(jobs))
    return jobs


def worker_command(spec: JobSpec, job_files: list[Path], settings_file: Path, backend_id: str,
                   log_path: Path) -> list[str]:
    """The command line of one worker process, for its jobs' ``job_files`` run one after the other (the
    database URL is in the grid's ``settings_file``, mode 0600): torchrun for several ranks; the worker itself
    for one (without torchrun's variables it runs as rank 0 of 1)."""
    worker = ["-m", "workers.entry", *map(str, job_files), "--settings", str(settings_file), "--backend-id", backend_id,
              "--attempt-log", str(log_path)]
    if spec.resources.nproc_per_node == 1:
        return [sys.executable, *worker]
    return [sys.executable, "-m", "torch.distributed.run", "--standalone",
            f"--nproc-per-node={spec.resources.nproc_per_node}", *worker]


class LocalBackend(Backend):
    name = "local"
    default_profile = "local"

    def validate(self, grid: Any, profile: dict[str, Any]) -> None:
        check_local_resources(grid, profile)

    def plan(self, jobs: list[PlanJob], profile: dict[str, Any]) -> Plan:
        """One group per graph level: level k starts job by job as its parents (level < k) complete."""
        levels = graph_levels(jobs)
        groups: list[PlannedGroup] = []
        for k in sorted(set(levels.values())):
            members = [j for j in jobs if levels[j.job_hash] == k]
            slots = sorted({j.spec.resources.slots() for j in members})
            groups.append(PlannedGroup(
                name=f"level{k}", jobs=[j.label for j in members],
                resources={"slots_per_job": slots, "slots": SlotPool.for_profile(profile).total},
                depends_on=[f"level{k - 1}"] if k else [], dependency="parents COMPLETED" if k else ""))
        return Plan(self.name, str(profile.get("name", self.default_profile)), len(jobs), groups)

    def __init__(self) -> None:
        self.host = socket.gethostname()

    # --- reconcile ------------------------------------------------------------------------------
    def reconcile(self, store: Store, grid_name: str) -> None:
        """Attempts of this host whose worker process is gone are recorded LOST (job FAILED)."""
        for a in store.open_attempts(grid_name, backend=self.name):
            if a.host == self.host and not pid_alive(a.pid):
                tail = log_tail(a.log_path)
                store.finish_attempt(a.id, AttemptState.LOST, reason=f"worker process {a.pid} vanished\n{tail}",
                                     )
                log.warning("job %s: attempt %d lost (process %s gone)", a.job_hash, a.number, a.pid)
        release_grid_settings(store, grid_name)  # a launcher killed before it could remove it

    # --- submit ---------------------------------------------------------------------------------
    def submit(self, ctx: LaunchContext, jobs: list[JobRow]) -> None:
        if not jobs:
            return
        ctx.store.mark_queued([j.job_hash for j in jobs], self.name, [None] * len(jobs))
        if ctx.wait:
            self.run(ctx, jobs)

    def run(self, ctx: LaunchContext, jobs: list[JobRow]) -> None:
        """Run ``jobs`` to the end: pack them into the free slots, retry failures within the budget."""
        pool = SlotPool.for_profile(ctx.profile)
        for job in jobs:  # launch checked the grid; a job recorded by an older grid may still not fit
            pool.check_fits(JobSpec.from_json(job.spec_json).resources, "resources.nproc_per_node")
        queue: deque[JobRow] = deque(jobs)
        running: dict[str, _Running] = {}
        stopping = False
        paused = breaker.paused(ctx.store, ctx.grid_name) is not None  # the breaker stops new starts
        total = len(ctx.store.jobs(ctx.grid_name))
        settings_file = write_grid_settings(ctx.store, ctx.grid_name, ctx.db_url, self.name)

        def on_term(signum: int, _frame: object) -> None:
            raise KeyboardInterrupt

        old = signal.signal(signal.SIGTERM, on_term)
        progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                            TextColumn("{task.fields[detail]}"), TimeElapsedColumn(), disable=not ctx.progress)
        try:
            with progress:
                task = progress.add_task(ctx.grid_name, total=total, detail="")
                while (queue and not paused) or running:
                    while queue and not stopping and not paused:
                        job = queue[0]
                        spec = JobSpec.from_json(job.spec_json)
                        alloc = pool.take(spec.resources)
                        if alloc is None:
                            break
                        queue.popleft()
                        batch = take_batch(queue, job, spec, lambda h: ctx.store.code_of([h]).get(h))
                        running[job.job_hash] = self._start(ctx, batch, spec, alloc, settings_file)
                    time.sleep(POLL_S)
                    for r in running.values():
                        self._stop_if_stalled(ctx, r)
                    ended = [h for h, r in running.items() if r.proc.poll() is not None]
                    for h in ended:
                        r = running.pop(h)
                        pool.give_back(r.alloc)
                        again = ride_out(lambda r=r: self._finished(ctx, r), what=f"running {ctx.grid_name}")
                        if not stopping:
                            queue.extend(again)
                        paused = paused or ride_out(lambda: breaker.check(ctx.store, ctx.grid_name),
                                                    what=f"running {ctx.grid_name}") is not None
                    if ended and not stopping:  # children whose parents are now all COMPLETED start at once
                        queue.extend(ride_out(lambda: released_jobs(ctx), what=f"running {ctx.grid_name}"))
                    counts = ride_out(lambda: ctx.store.state_counts(ctx.grid_name), what=f"running {ctx.grid_name}")
                    progress.update(task, completed=counts.get(JobState.COMPLETED, 0),
                                    detail=f"running {len(running)}  queued {len(queue)}  "
                                           f"failed {counts.get(JobState.FAILED, 0)}")
                    if ended:
                        ctx.progressed(counts.get(JobState.COMPLETED, 0))
        except KeyboardInterrupt:
            stopping = True
            log.warning("stopping %d running jobs (they will resume on the next launch)", len(running))
            self._stop_all(ctx, running)
        finally:
            signal.signal(signal.SIGTERM, old)
            remove_settings_file(settings_file)  # every worker this launcher started has ended
        if stopping:
            raise KeyboardInterrupt

    def _start(self, ctx: LaunchContext, jobs: list[JobRow], spec: JobSpec, alloc: Allocation,
               settings_file: Path) -> _Running:
        """Start one worker process for ``jobs`` (a batch: its output goes to the first job's ``logs/``
        as ``*-batch.log``; each job's own log is written by the worker)."""
        job = jobs[0]
        job_dir = Path(job.job_dir)
        (job_dir / LOG_DIR).mkdir(parents=True, exist_ok=True)
        suffix = "-batch" if len(jobs) > 1 else ""
        log_path = job_dir / LOG_DIR / f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}{suffix}.log"
        fh = open(log_path, "ab")  # noqa: SIM115 (closed in _finished)
        threads = max(1, spec.resources.cpus_per_task)
        env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
               "PYTHONUNBUFFERED": "1", **alloc.env()}
        if spec.resources.nproc_per_node == 1:  # no torchrun: rank 0 of 1, whatever this shell inherited
            env.update({"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1"})
        env.update(job_code_env(ctx.store, job.job_hash, env))  # the job's frozen code first on sys.path
        JobPaths.of(job_dir).worker_settings.unlink(missing_ok=True)  # a per-job copy of older versions
        cmd = worker_command(spec, [Path(j.job_dir) / JOB_FILE for j in jobs], settings_file,
                             f"{self.host}:{os.getpid()}", log_path)
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        log.info("started %s (%s) pid %d%s%s", job.job_hash, spec.label(), proc.pid,
                 f" on GPUs {','.join(alloc.gpus)}" if alloc.gpus else "",
                 f" with {len(jobs) - 1} more jobs in the same process" if len(jobs) > 1 else "")
        return _Running(jobs, spec, proc, log_path, fh, alloc, {j.job_hash: j.attempt_count for j in jobs})

    def _stop_if_stalled(self, ctx: LaunchContext, r: _Running) -> None:
        """Kill a worker whose running job's steps stopped while its heartbeat went on: that job's attempt is
        FAILED, "stalled" (jobs of its batch not begun yet are queued again by :meth:`_finished`)."""
        if r.proc.poll() is not None:
            return
        for job in r.jobs:
            if (stall := stalled(job.job_dir, job.spec_json)) is None:
                continue
            ids = [a.id for a in ctx.store.open_attempts(ctx.grid_name, backend=self.name)
                   if a.job_hash == job.job_hash and a.host == self.host]
            if not stall.of(ids):  # an earlier attempt's progress file: this one has not beaten yet
                continue
            log.warning("job %s %s: stopping it (retried within the failure budget)", job.job_hash, stall.reason)
            for attempt_id in ids:
                ctx.store.finish_attempt(attempt_id, AttemptState.FAILED, exit_code=None, reason=stall.reason)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(r.proc.pid, signal.SIGKILL)
            r.proc.wait()
            return

    def _finished(self, ctx: LaunchContext, r: _Running) -> list[JobRow]:
        """Record how a worker process ended for each of its jobs; return the jobs that should run again."""
        r.log_fh.close()
        rc = r.proc.returncode
        store = ctx.store
        hashes = {j.job_hash for j in r.jobs}
        # close an attempt the worker could not close itself (crash, kill -9 of a rank, torchrun error)
        for a in store.open_attempts(ctx.grid_name, backend=self.name):
            if a.job_hash in hashes and a.host == self.host and not pid_alive(a.pid):
                state = AttemptState.LOST if rc is not None and rc < 0 else AttemptState.FAILED
                store.finish_attempt(a.id, state, exit_code=rc,
                                     reason=f"exit code {rc}\n{log_tail(r.log_path)}")
        rows = [store.job(h.job_hash) for h in r.jobs]
        if any(j is not None and j.state == JobState.COMPLETED for j in rows):
            collect_grid(store, ctx.grid_name)  # the grid's [storage] policy, as its jobs finish
        started = any(j is not None and j.attempt_count > r.attempts[j.job_hash] for j in rows)
        again: list[JobRow] = []
        for before, job in zip(r.jobs, rows, strict=True):
            assert job is not None
            if job.state in (JobState.PENDING, JobState.QUEUED) and rc not in (0, 143):
                if started:  # the process died after another job of its batch: this one never began
                    log.warning("job %s: its worker process exited %s before it started: queued again",
                                job.job_hash, rc)
                    again.append(before)
                    continue
                # never got as far as claiming the job (import error, bad environment): a failure
                store.set_state([job.job_hash], JobState.FAILED, [JobState.PENDING, JobState.QUEUED])
                log.error("job %s exited %s before starting:\n%s", job.job_hash, rc, log_tail(r.log_path, 8))
                job = store.job(job.job_hash)
                assert job is not None
            if job.state == JobState.FAILED and job.failure_count <= ctx.failure_budget:
                log.warning("job %s failed (%d/%d): retrying", job.job_hash, job.failure_count, ctx.failure_budget)
                store.set_state([job.job_hash], JobState.QUEUED, [JobState.FAILED])
                again.append(before)
            # QUEUED after a 143: stopped by a signal, resumes on the next launch
        return again

    def _stop_all(self, ctx: LaunchContext, running: dict[str, _Running]) -> None:
        for r in running.values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(r.proc.pid, signal.SIGTERM)
        deadline = time.time() + STOP_GRACE_S
        for r in running.values():
            try:
                r.proc.wait(timeout=max(0.1, deadline - time.time()))
            except subprocess.TimeoutExpired:
                os.killpg(r.proc.pid, signal.SIGKILL)
                r.proc.wait()
            self._finished(ctx, r)

    # --- cancel ---------------------------------------------------------------------------------
    def cancel(self, store: Store, jobs: list[JobRow]) -> int:
        """Stop running workers of this host (SIGTERM) and mark the jobs CANCELLED.

        A worker that may run several jobs (``jobs_per_worker`` > 1) is not stopped: the job is recorded
        CANCELLED first, then ``SIGUSR1`` makes the worker look at its job's state now; it stops that job
        alone and goes on with its next one."""
        hashes = {j.job_hash for j in jobs}
        batched = {j.job_hash for j in jobs if _runs_batched(j)}
        for a in store.open_attempts(backend=self.name):
            if a.job_hash in hashes and a.host == self.host and pid_alive(a.pid):
                if a.job_hash in batched:
                    store.finish_attempt(a.id, AttemptState.CANCELLED, reason="cancelled by the user")
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(a.pid, signal.SIGUSR1)
                    continue
                os.kill(a.pid, signal.SIGTERM)
                store.finish_attempt(a.id, AttemptState.CANCELLED, reason="cancelled by the user")
        n = store.set_state(list(hashes), JobState.CANCELLED, JobState.CANCELLABLE)
        release_finished_grids(store)
        return n


def _runs_batched(job: JobRow) -> bool:
    """Whether the job's worker may run several jobs (``[resources] jobs_per_worker`` > 1), read from its
    recorded spec (a spec this version cannot fully parse counts as not batched)."""
    try:
        res = json.loads(job.spec_json).get("resources") or {}
        return int(res.get("jobs_per_worker", 1)) > 1
    except (ValueError, TypeError, AttributeError):
        return False
