"""Worker entry point: ``python -m workers.entry JOB_JSON --settings FILE`` (run by torchrun or srun).

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


def _install_stop_handlers(stop: threading.Event) -> None:
    def handler(signum: int, _frame: object) -> None:
        log.warning("received %s: stopping after this batch", signal.Signals(signum).name)
        stop.set()

    for sig in STOP_SIGNALS:
        signal.signal(sig, handler)


def run(job_file: Path, settings: WorkerSettings, ctx: DistContext) -> int:
    """Run the job described by ``job_file`` on this rank; return the process exit code."""
    spec = JobSpec.from_json(job_file.read_text())
    job_dir = job_file.parent
    stop = threading.Event()
    _install_stop_handlers(stop)
    reporter: JobReporter | None = None
    claimed = True
    if ctx.is_main:
        store = with_retries(lambda: Store(settings.db_url, create=False), what="open database")
        reporter = JobReporter(store, spec.job_hash, job_dir)
        attempt = reporter.claim(backend=settings.backend, backend_id=settings.backend_id,
                                 host=socket.gethostname(), pid=os.getpid(), log_path=settings.log_path)
        claimed = attempt is not None
        if claimed:
            reporter.record_code(running_code_hash(), node_name())
            reporter.start_heartbeat(settings.heartbeat_s)
    if not broadcast_flag(ctx, claimed):
        log.warning("job %s is held or finished by another process: nothing to do", spec.job_hash)
        return 0
    log.info("job %s (%s) rank %d/%d on %s", spec.job_hash, spec.label(), ctx.rank, ctx.world_size, ctx.device)
    try:
        return _train_and_record(spec, job_dir, ctx, reporter, stop)
    finally:
        reached(ENDED, spec.job_hash)  # test-only (off unless a test asks)


def _train_and_record(spec: JobSpec, job_dir: Path, ctx: DistContext, reporter: JobReporter | None,
                      stop: threading.Event) -> int:
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
    if result is None:
        if reporter is not None:
            reporter.close(AttemptState.PREEMPTED, exit_code=143, reason="stopped by a signal; will resume")
        return 143
    if reporter is not None:
        reporter.final(result)
        log.info("job %s done: %s", spec.job_hash, {k: round(v, 4) for k, v in result.items()})
    return 0


def node_name() -> str:
    """The node this worker runs on: SLURM's name for it, else the host name."""
    return os.environ.get("SLURMD_NODENAME") or socket.gethostname()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m workers.entry", description=__doc__)
    parser.add_argument("job_file", type=Path, help="the job's job.json")
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
        return run(args.job_file.resolve(), settings.replace(**{k: v for k, v in own.items() if v}), ctx)
    finally:
        teardown(ctx)


if __name__ == "__main__":
    sys.exit(main())
