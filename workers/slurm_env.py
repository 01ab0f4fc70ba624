"""The SLURM side of a worker: array-task bootstrap, process-group environment, checkpoint-and-requeue.

Each SLURM array task runs ``python -m workers.slurm_env SUBMISSION_DIR`` (one process per task, started
by ``srun``). The submission directory was written by the orchestrator *before* ``sbatch``:
``manifest.json`` lists the array's jobs in index order, so a task finds its job from
``SLURM_ARRAY_TASK_ID`` alone and never depends on anything the orchestrator does after ``sbatch``.

The bootstrap places submitit's pickle for this task (a :class:`SlurmTask`) and hands over to submitit's
own job runner, which installs the ``SIGUSR2`` handler. :class:`SlurmTask` runs the real worker
(``python -m workers.entry``) as a child process with ``RANK``/``WORLD_SIZE``/``MASTER_ADDR``... taken from
SLURM's environment. On ``SIGUSR2`` (preemption, or the time limit ``signal_delay_s`` away) the child
stops after its current batch and records the attempt (its last epoch checkpoint is on disk); then
submitit calls :meth:`SlurmTask.checkpoint` and requeues the SLURM job, which resumes from that checkpoint.

``[resources] jobs_per_worker``: a task may run several jobs (the manifest task's ``batch``), one worker
process for them all (``python -m workers.entry JOB_JSON...``). A requeued task runs the same list again:
the jobs that ended (completed, failed, cancelled) are skipped by their claim, the preempted one resumes
from its checkpoint, and the ones not yet started start as if for the first time.

Code: the array's script puts a code snapshot first on ``PYTHONPATH`` (the bootstrap runs from it); each
task starts its worker from its own job's snapshot, read from the database when the task starts (so
``launch --code current`` re-points a queued task), else the one the manifest named at submission.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import submitit

from specs.code_version import code_env
from specs.contract import ARRAY_MANIFEST_FILE, LOG_DIR
from specs.procs import pid_alive
from specs.settings import WorkerSettings, apply_umask, release_if_done
from specs.submitit_adapter import place_task_pickle, run_task

log = logging.getLogger("workers.slurm_env")
MANIFEST = ARRAY_MANIFEST_FILE
LOG_SUBDIR = LOG_DIR
STOPPED_RC = 143  # workers.entry: stopped by a signal, attempt recorded PREEMPTED


def slurm_job_id(environ: dict[str, str] | None = None) -> str:
    """This task's SLURM id as squeue/sacct print it: ``ARRAY_TASK`` for array tasks, else the job id."""
    env = os.environ if environ is None else environ
    if env.get("SLURM_ARRAY_JOB_ID") and env.get("SLURM_ARRAY_TASK_ID"):
        return f"{env['SLURM_ARRAY_JOB_ID']}_{env['SLURM_ARRAY_TASK_ID']}"
    return env.get("SLURM_JOB_ID", "")


def distributed_env() -> dict[str, str]:
    """``MASTER_ADDR``, ``MASTER_PORT``, ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``LOCAL_WORLD_SIZE`` of
    this SLURM task (torch's ``env://`` initialisation), from submitit's reading of SLURM's variables."""
    dist = submitit.helpers.TorchDistributedEnvironment()
    return {
        "MASTER_ADDR": dist.master_addr,
        "MASTER_PORT": str(dist.master_port),
        "RANK": str(dist.rank),
        "WORLD_SIZE": str(dist.world_size),
        "LOCAL_RANK": str(dist.local_rank),
        "LOCAL_WORLD_SIZE": str(dist.local_world_size),
    }


class SlurmTask(submitit.helpers.Checkpointable):
    """One job of an array, run under submitit: the worker is a child process, requeued on ``SIGUSR2``."""

    def __init__(self, job_hash: str, job_file: str, settings_file: str, stop_grace_s: float,
                 code_root: str = "", code_hash: str | None = None,
                 batch: list[tuple[str, str]] | None = None) -> None:
        self.job_hash, self.job_file, self.settings_file = job_hash, job_file, settings_file
        self.stop_grace_s = stop_grace_s
        self.code_root, self.code_hash = code_root, code_hash  # the snapshot named at submission
        self.batch = batch  # (job hash, job file) of every job of a batched task, in order
        self._proc: subprocess.Popen | None = None

    @property
    def jobs(self) -> list[tuple[str, str]]:
        """``(job hash, job file)`` of each job this task runs, in order."""
        return self.batch or [(self.job_hash, self.job_file)]

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "_proc"}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.__dict__.setdefault("batch", None)  # a pickle of an older version, found by a requeued task
        self._proc = None

    def worker_env(self) -> dict[str, str]:
        env = dict(os.environ)
        for key in ("MASTER_ADDR", "MASTER_PORT", "RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE"):
            env.pop(key, None)
        env.update(distributed_env())
        env["PYTHONUNBUFFERED"] = "1"
        code = job_code(WorkerSettings.read(self.settings_file).db_url, self.job_hash, self.code_hash)
        if code and self.code_root:  # the job's snapshot (re-pointed by `launch --code current` until it starts)
            env.update(code_env(self.code_root, code, env))
        threads = os.environ.get("SLURM_CPUS_PER_TASK", "1")
        env.setdefault("OMP_NUM_THREADS", threads)
        env.setdefault("MKL_NUM_THREADS", threads)
        return env

    def worker_command(self) -> list[str]:
        """The worker's command line: the grid's settings file (0600, the database URL), and this task's
        SLURM id and log, which are no secret."""
        return [sys.executable, "-u", "-m", "workers.entry", *(f for _, f in self.jobs), "--settings",
                self.settings_file,
                "--backend-id", slurm_job_id(), "--attempt-log", str(submitit.JobEnvironment().paths.stdout)]

    def __call__(self) -> None:
        rank0 = submitit.JobEnvironment().global_rank == 0
        if rank0:
            db_url = WorkerSettings.read(self.settings_file).db_url
            for job_hash, _ in self.jobs:
                close_stale_attempts(db_url, job_hash, slurm_job_id())
        cmd = self.worker_command()
        env = self.worker_env()
        log.info("rank %s/%s (local rank %s) on node %s: MASTER_ADDR=%s MASTER_PORT=%s", env["RANK"],
                 env["WORLD_SIZE"], env["LOCAL_RANK"], os.environ.get("SLURMD_NODENAME", "?"),
                 env["MASTER_ADDR"], env["MASTER_PORT"])
        self._proc = subprocess.Popen(cmd, env=env)
        while (rc := self._proc.poll()) is None:  # poll, not wait: the SIGUSR2 handler must not find a lock
            time.sleep(0.2)
        if rc == STOPPED_RC and not rank0:
            self._await_requeue()
        if rank0 and rc != STOPPED_RC:  # requeued otherwise
            release_settings(self.settings_file)
        if rc != 0:
            raise RuntimeError(f"worker exited with code {rc} (job {self.job_hash})")

    def _await_requeue(self) -> None:
        """A rank other than 0 whose worker stopped on a signal: rank 0 checkpoints and requeues the whole
        SLURM job (submitit), which ends this task too; exiting first (non-zero) would end the step before
        that under ``srun --kill-on-bad-exit``. Waits at most as long as rank 0 may take."""
        log.info("worker stopped by a signal: waiting for rank 0 to requeue the job")
        time.sleep(self.stop_grace_s + 60)

    def checkpoint(self, *args: Any, **kwargs: Any) -> submitit.helpers.DelayedSubmission:
        """Called by submitit's ``SIGUSR2`` handler: let the worker stop and record its attempt, then requeue.

        The worker saved a checkpoint at the end of its last epoch; the requeued task resumes from it.
        """
        proc = self._proc
        if proc is not None and pid_alive(proc.pid):
            with contextlib.suppress(ProcessLookupError):  # SLURM may have signalled it already
                proc.send_signal(signal.SIGUSR2)
            deadline = time.time() + self.stop_grace_s
            while pid_alive(proc.pid) and time.time() < deadline:
                time.sleep(0.2)
            if pid_alive(proc.pid):
                log.warning("worker %d did not stop within %.0fs: requeueing anyway", proc.pid, self.stop_grace_s)
        fresh = SlurmTask(self.job_hash, self.job_file, self.settings_file, self.stop_grace_s, self.code_root,
                          self.code_hash, self.batch)
        return submitit.helpers.DelayedSubmission(fresh)


def job_code(db_url: str, job_hash: str, submitted: str | None) -> str | None:
    """The snapshot ``job_hash`` runs now: the database's pointer (``launch --code current`` may have moved
    it since submission), else ``submitted`` (the manifest's) when the database cannot be read."""
    from db import Store
    from db.retry import with_retries

    try:
        store = Store(db_url, create=False)
    except Exception as exc:  # the worker itself reports a missing database clearly
        log.warning("cannot read the job's code version (%s): using the submitted one %s", exc, submitted)
        return submitted
    try:
        return with_retries(lambda: store.code_of([job_hash]), what="code version").get(job_hash) or submitted
    except Exception as exc:
        log.warning("cannot read the job's code version (%s): using the submitted one %s", exc, submitted)
        return submitted
    finally:
        store.close()


def close_stale_attempts(db_url: str, job_hash: str, backend_id: str) -> None:
    """Close attempts still open under this very SLURM id: a requeued task's previous run was killed
    before it could record its end (one SLURM id never runs twice at once, so they are stale)."""
    from db import AttemptState, Store
    from db.retry import with_retries

    try:
        store = Store(db_url, create=False)
    except Exception as exc:  # the worker itself reports a missing database clearly
        log.warning("cannot check for stale attempts: %s", exc)
        return
    try:
        stale = with_retries(lambda: [a for a in store.open_attempts(backend="slurm")
                                      if a.job_hash == job_hash and a.backend_id == backend_id],
                             what="open attempts")
        for a in stale:
            log.warning("attempt %d of %s was left open by a previous run of %s: closing it PREEMPTED",
                        a.number, job_hash, backend_id)
            with_retries(lambda a=a: store.finish_attempt(
                a.id, AttemptState.PREEMPTED, reason=f"SLURM job {backend_id} was requeued before this "
                "attempt recorded its end"), what="close stale attempt")
    finally:
        store.close()


def release_settings(settings_file: str) -> None:
    """Remove the grid's settings file if this task's job was the grid's last (nothing else may start)."""
    from db import Store

    try:
        settings = WorkerSettings.read(settings_file)
    except (OSError, ValueError):  # removed by now (cancel, a refresh) or unreadable: nothing to do
        return
    if settings.grid is None:
        return
    try:
        with Store(settings.db_url, create=False) as store:
            if release_if_done(settings_file, store, settings.grid):
                log.info("grid %s: its last job ended: worker settings file removed", settings.grid)
    except Exception as exc:  # noqa: BLE001 (the next refresh or cancel removes it instead)
        log.warning("cannot check whether grid %s has jobs left: %s", settings.grid, exc)


def bootstrap(submission_dir: Path) -> None:
    """Run this array task's job: place submitit's pickle for it (first run only), then submitit's runner."""
    manifest = json.loads((submission_dir / MANIFEST).read_text())
    index = int(os.environ.get("SLURM_ARRAY_TASK_ID", "0"))
    task = manifest["tasks"][index]
    folder = submission_dir / LOG_SUBDIR  # every task logs here: %A_%a_0_log.out
    place_task_pickle(folder, SlurmTask(task["job_hash"], task["job_file"], manifest["settings_file"],
                                        float(manifest["stop_grace_s"]), manifest.get("code_root", ""),
                                        task.get("code_hash"),
                                        [(j["job_hash"], j["job_file"]) for j in task.get("batch", [])] or None),
                      time_min=int(manifest["time_min"]), max_requeues=int(manifest["max_requeues"]))
    run_task(folder)


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        sys.exit("usage: python -m workers.slurm_env SUBMISSION_DIR")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    log.addHandler(handler)  # submitit logs through its own handler
    log.setLevel(logging.INFO)
    apply_umask()
    bootstrap(Path(args[0]).resolve())


if __name__ == "__main__":
    main()
