"""Worker entry point: ``python -m workers.entry JOB_JSON [JOB_JSON ...] --settings FILE`` (torchrun or srun).

Several job files: a batch (``[resources] jobs_per_worker``, :func:`run_batch`), run one after the other in
this process, each job claimed, recorded and logged on its own.

``FILE`` is the :class:`specs.settings.WorkerSettings` the backend wrote (mode 0600: it holds the database
URL, so the password is never on a command line). A failure is recorded as one line naming its class
(:mod:`workers.errors`); the traceback goes to the log.

Everything the worker needs comes from the serialized job spec (it never reads the grid file).
Exit codes: 0 done (or nothing to do: another process holds/finished the job), 1 failed,
143 stopped by a signal (the attempt is recorded PREEMPTED and the job requeued).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import sys
import threading
import traceback
from pathlib import Path

from db import AttemptState, Store
from db.retry import with_retries
from specs.code_version import check_running_code, running_code_hash
from specs.job import JobSpec
from specs.settings import WorkerSettings, apply_umask
from workers.distributed import DistContext, broadcast_flag, setup_distributed, teardown
from workers.errors import describe
from workers.reporting import JobReporter
from workers.test_hooks import ENDED, reached

log = logging.getLogger("workers.entry")
STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR2, signal.SIGINT)


class Stops:
    """Why a worker stops: a signal stops the process (every job of a batch) and, with it, the running job;
    a job's own stop (a ``dlth-orch cancel`` of it, seen by its heartbeat) ends that job alone."""

    def __init__(self) -> None:
        self.process = threading.Event()
        self.job = threading.Event()
        self.wake: threading.Event | None = None  # the running job's heartbeat: look at the job's state now

    def next_job(self) -> threading.Event:
        """A fresh stop for the next job (a process already stopping stops it at once)."""
        self.job = threading.Event()
        if self.process.is_set():
            self.job.set()
        return self.job

    def install(self) -> Stops:
        """Stop on SIGTERM/SIGUSR2/SIGINT; SIGUSR1 (sent by a local cancel) wakes the running job's heartbeat."""
        def handler(signum: int, _frame: object) -> None:
            log.warning("received %s: stopping after this batch", signal.Signals(signum).name)
            self.process.set()
            self.job.set()

        def poke(_signum: int, _frame: object) -> None:
            if self.wake is not None:
                self.wake.set()

        for sig in STOP_SIGNALS:
            signal.signal(sig, handler)
        signal.signal(signal.SIGUSR1, poke)
        return self


def run(job_file: Path, settings: WorkerSettings, ctx: DistContext, stops: Stops | None = None,
        store: Store | None = None) -> int:
    """Run the job described by ``job_file`` on this rank; return the process exit code (0 also when the job
    was cancelled while it ran: a batch goes on with its next job)."""
    spec = JobSpec.from_json(job_file.read_text())
    job_dir = job_file.parent
    stops = stops or Stops().install()
    stop = stops.next_job()
    reporter: JobReporter | None = None
    claimed = True
    if ctx.is_main:
        store = store or with_retries(lambda: Store(settings.db_url, create=False), what="open database")
        reporter = JobReporter(store, spec.job_hash, job_dir)
        attempt = reporter.claim(backend=settings.backend, backend_id=settings.backend_id,
                                 host=socket.gethostname(), pid=os.getpid(), log_path=settings.log_path)
        claimed = attempt is not None
        if claimed:
            reporter.record_code(running_code_hash(), node_name())
            stops.wake = reporter.start_heartbeat(settings.heartbeat_s, on_cancel=stop.set)
    if not broadcast_flag(ctx, claimed):
        log.warning("job %s is held or finished by another process: nothing to do", spec.job_hash)
        return 0
    log.info("job %s (%s) rank %d/%d on %s", spec.job_hash, spec.label(), ctx.rank, ctx.world_size, ctx.device)
    try:
        return _train_and_record(spec, job_dir, ctx, reporter, stop, stops)
    finally:
        reached(ENDED, spec.job_hash)  # test-only (off unless a test asks)


def _train_and_record(spec: JobSpec, job_dir: Path, ctx: DistContext, reporter: JobReporter | None,
                      stop: threading.Event, stops: Stops) -> int:
    """Train the claimed job on this rank and record how the attempt ended; return the exit code."""
    from workers.train import Trainer  # torch-heavy imports after the process group is up

    try:
        check_running_code()  # a worker that fell back to the live code fails here, on its attempt
        result = Trainer(spec, job_dir, ctx, reporter, stop).run()
    except BaseException as exc:
        if reporter is not None:
            tail = "".join(traceback.format_exception(exc)[-6:])
            betons = tuple(str(Path(spec.dataset_root) / f"{s}.beton") for s in ("train", "val"))
            line = describe(exc, data_files=betons)
            log.error("job %s failed: %s", spec.job_hash, line)
            reporter.close(AttemptState.FAILED, exit_code=1, reason=line, log_tail=tail)
        raise
    finally:
        stops.wake = None
    if result is None and not stops.process.is_set():  # this job alone was stopped: cancelled
        if reporter is not None:
            reporter.close(AttemptState.CANCELLED, reason="cancelled by the user (dlth-orch cancel)")
        log.warning("job %s cancelled: the worker goes on with its next job", spec.job_hash)
        return 0
    if result is None:
        if reporter is not None:
            reporter.close(AttemptState.PREEMPTED, exit_code=143, reason="stopped by a signal; will resume")
        return 143
    if reporter is not None:
        reporter.final(result)
        log.info("job %s done: %s", spec.job_hash, {k: round(v, 4) for k, v in result.items()})
    return 0


def run_batch(job_files: list[Path], settings: WorkerSettings, ctx: DistContext) -> int:
    """Run ``job_files`` one after the other in this process (``[resources] jobs_per_worker``).

    Each job is claimed, logged (its own file, :func:`workers.batch.job_log_path`), recorded and retried on
    its own; a job that fails is recorded FAILED and the next one starts. A signal stops the running job
    (PREEMPTED, as a lone job) and leaves the jobs not yet started QUEUED, unclaimed (no attempt, no failure
    counted). Returns 143 if stopped by a signal, else 0 (every job recorded its own end)."""
    from workers.batch import ProcessState, job_log, job_log_path, preload

    stops = Stops().install()
    store = with_retries(lambda: Store(settings.db_url, create=False), what="open database") if ctx.is_main else None
    preload()
    baseline = ProcessState.capture()
    try:
        for n, job_file in enumerate(job_files):
            if stops.process.is_set():
                log.warning("stopped: %d jobs of this batch not started (they stay queued)", len(job_files) - n)
                return 143
            baseline.restore()
            path = job_log_path(job_file.parent)
            with job_log(path):
                try:
                    rc = run(job_file, settings.replace(log_path=str(path)), ctx, stops, store)
                except Exception:  # recorded FAILED by run(); the others still run
                    log.exception("job %s failed: going on with the next job of the batch", job_file.parent.name)
                    continue
            if rc == 143:
                return 143
        return 0
    finally:
        if store is not None:
            store.close()


def node_name() -> str:
    """The node this worker runs on: SLURM's name for it, else the host name."""
    return os.environ.get("SLURMD_NODENAME") or socket.gethostname()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m workers.entry", description=__doc__)
    parser.add_argument("job_file", type=Path, nargs="+",
                        help="the job's job.json; several: run them one after the other (jobs_per_worker)")
    parser.add_argument("--settings", required=True, type=Path, help="the grid's worker settings file (JSON, 0600)")
    parser.add_argument("--backend-id", help="this attempt's id in its backend (overrides the settings file's)")
    # names that are no prefix of a torchrun option (torchrun's parser would take an abbreviation as its own)
    parser.add_argument("--attempt-log", help="this attempt's log file (overrides the settings file's)")
    args = parser.parse_args(argv)
    apply_umask()
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format=f"%(asctime)s [rank {os.environ.get('RANK', '0')}] %(levelname)s %(name)s: "
                               "%(message)s")
    ctx = setup_distributed()
    try:
        settings = WorkerSettings.read(args.settings)
        own = {"backend_id": args.backend_id, "log_path": args.attempt_log}
        settings = settings.replace(**{k: v for k, v in own.items() if v})
        if len(args.job_file) > 1:
            return run_batch([f.resolve() for f in args.job_file], settings, ctx)
        return run(args.job_file[0].resolve(), settings, ctx)
    finally:
        teardown(ctx)


if __name__ == "__main__":
    sys.exit(main())
