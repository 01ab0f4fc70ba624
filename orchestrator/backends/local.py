"""Local backend: each job is a ``torchrun`` process group on this machine, several at once.

Jobs are packed into the machine's CPU cores, or given GPUs of their own (see
:mod:`orchestrator.backends.local_slots`).
Ctrl-C (or SIGTERM) stops the workers cleanly: they record PREEMPTED and resume on the next launch.
A worker that dies without a word (``kill -9``, OOM killer) is recorded LOST on the next look and
retried, within the grid's failure budget, from its last epoch checkpoint.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from db import AttemptState, JobRow, JobState, Store
from orchestrator.backends.base import Backend, LaunchContext
from orchestrator.backends.local_slots import Allocation, SlotPool
from orchestrator.workspace import JOB_FILE, log_tail
from specs.contract import LOG_DIR
from specs.job import JobSpec
from specs.procs import pid_alive

log = logging.getLogger(__name__)
POLL_S = 0.5
STOP_GRACE_S = 30.0


@dataclass
class _Running:
    job: JobRow
    spec: JobSpec
    proc: subprocess.Popen
    log_path: Path
    log_fh: IO[bytes]
    alloc: Allocation


def worker_command(spec: JobSpec, job_file: Path, db_url: str) -> list[str]:
    """The torchrun command line of one job."""
    return [
        sys.executable, "-m", "torch.distributed.run", "--standalone",
        f"--nproc-per-node={spec.resources.nproc_per_node}",
        "-m", "workers.entry", str(job_file), "--db", db_url,
    ]


class LocalBackend(Backend):
    name = "local"

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
        total = len(ctx.store.jobs(ctx.grid_name))

        def on_term(signum: int, _frame: object) -> None:
            raise KeyboardInterrupt

        old = signal.signal(signal.SIGTERM, on_term)
        progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                            TextColumn("{task.fields[detail]}"), TimeElapsedColumn(), disable=not ctx.progress)
        try:
            with progress:
                task = progress.add_task(ctx.grid_name, total=total, detail="")
                while queue or running:
                    while queue and not stopping:
                        job = queue[0]
                        spec = JobSpec.from_json(job.spec_json)
                        alloc = pool.take(spec.resources)
                        if alloc is None:
                            break
                        queue.popleft()
                        running[job.job_hash] = self._start(ctx, job, spec, alloc)
                    time.sleep(POLL_S)
                    for h in [h for h, r in running.items() if r.proc.poll() is not None]:
                        r = running.pop(h)
                        pool.give_back(r.alloc)
                        again = self._finished(ctx, r)
                        if again is not None and not stopping:
                            queue.append(again)
                    counts = ctx.store.state_counts(ctx.grid_name)
                    progress.update(task, completed=counts.get(JobState.COMPLETED, 0),
                                    detail=f"running {len(running)}  queued {len(queue)}  "
                                           f"failed {counts.get(JobState.FAILED, 0)}")
        except KeyboardInterrupt:
            stopping = True
            log.warning("stopping %d running jobs (they will resume on the next launch)", len(running))
            self._stop_all(ctx, running)
        finally:
            signal.signal(signal.SIGTERM, old)
        if stopping:
            raise KeyboardInterrupt

    def _start(self, ctx: LaunchContext, job: JobRow, spec: JobSpec, alloc: Allocation) -> _Running:
        job_dir = Path(job.job_dir)
        (job_dir / LOG_DIR).mkdir(parents=True, exist_ok=True)
        log_path = job_dir / LOG_DIR / f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
        fh = open(log_path, "ab")  # noqa: SIM115 (closed in _finished)
        threads = max(1, spec.resources.cpus_per_task)
        env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
               "PYTHONUNBUFFERED": "1", "DLTH_BACKEND": self.name,
               "DLTH_BACKEND_ID": f"{self.host}:{os.getpid()}", "DLTH_LOG_PATH": str(log_path), **alloc.env()}
        cmd = worker_command(spec, job_dir / JOB_FILE, ctx.db_url)
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        log.info("started %s (%s) pid %d%s", job.job_hash, spec.label(), proc.pid,
                 f" on GPUs {','.join(alloc.gpus)}" if alloc.gpus else "")
        return _Running(job, spec, proc, log_path, fh, alloc)

    def _finished(self, ctx: LaunchContext, r: _Running) -> JobRow | None:
        """Record how a job's process group ended; return the job if it should run again."""
        r.log_fh.close()
        rc = r.proc.returncode
        store = ctx.store
        # close an attempt the worker could not close itself (crash, kill -9 of a rank, torchrun error)
        for a in store.open_attempts(ctx.grid_name, backend=self.name):
            if a.job_hash == r.job.job_hash and a.host == self.host and not pid_alive(a.pid):
                state = AttemptState.LOST if rc is not None and rc < 0 else AttemptState.FAILED
                store.finish_attempt(a.id, state, exit_code=rc,
                                     reason=f"exit code {rc}\n{log_tail(r.log_path)}")
        job = store.job(r.job.job_hash)
        assert job is not None
        if job.state in (JobState.PENDING, JobState.QUEUED) and rc not in (0, 143):
            # never got as far as claiming the job (import error, bad environment): a failure
            store.set_state([job.job_hash], JobState.FAILED, [JobState.PENDING, JobState.QUEUED])
            log.error("job %s exited %s before starting:\n%s", job.job_hash, rc, log_tail(r.log_path, 8))
            job = store.job(r.job.job_hash)
            assert job is not None
        if job.state == JobState.FAILED and job.failure_count <= ctx.failure_budget:
            log.warning("job %s failed (%d/%d): retrying", job.job_hash, job.failure_count, ctx.failure_budget)
            store.set_state([job.job_hash], JobState.QUEUED, [JobState.FAILED])
            return r.job
        if job.state == JobState.QUEUED and rc == 143:
            return None  # stopped by a signal: resumes on the next launch
        return None

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
        """Stop running workers of this host (SIGTERM) and mark the jobs CANCELLED."""
        hashes = {j.job_hash for j in jobs}
        for a in store.open_attempts(backend=self.name):
            if a.job_hash in hashes and a.host == self.host and pid_alive(a.pid):
                os.kill(a.pid, signal.SIGTERM)
                store.finish_attempt(a.id, AttemptState.CANCELLED, reason="cancelled by the user")
        return store.set_state(list(hashes), JobState.CANCELLED,
                               [JobState.PENDING, JobState.QUEUED, JobState.RUNNING, JobState.FAILED])
