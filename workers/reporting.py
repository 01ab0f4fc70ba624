"""What a worker tells the outside world: job-directory files first, then the database.

Order matters (nothing is lost): metrics go to ``metrics.jsonl`` / ``final_metrics.json`` in the job
directory before the database hears of them, and database writes are retried with back-off. If the
database stays unreachable the orchestrator ingests the job directory on its next ``status``.

The heartbeat carries the step counter: each beat also writes ``progress.json`` in the job directory
(``{"step", "moved_at", "step_s", "beat_at", "phase", "attempt"}``), from which the orchestrator tells a job whose
heartbeat is alive but whose steps stopped (:mod:`orchestrator.stall`).

A recorded failure also applies the breaker's rule (:mod:`specs.breaker`): the worker trips it, so a grid
launched with ``--no-wait`` pauses without anyone looking; a worker of a paused grid does not start.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from db import JobState, Store, write_final_metrics
from db.retry import with_retries
from specs.atomic import write_json_atomic
from specs.breaker import COUNTED, pause_line
from specs.contract import EPOCH_METRICS_FILE, PROGRESS_FILE
from workers.tensorboard_log import EpochBoard
from workers.usage import UsageMeter

log = logging.getLogger(__name__)
T = TypeVar("T")
__all__ = ["EPOCH_METRICS_FILE", "JobReporter", "read_epoch_metrics"]


class JobReporter:
    """Records one attempt of one job: files in ``job_dir`` and rows through the store API."""

    def __init__(self, store: Store, job_hash: str, job_dir: Path) -> None:
        self.store, self.job_hash, self.job_dir = store, job_hash, job_dir
        self.attempt_id: int | None = None
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self.board = EpochBoard(job_dir)  # the reporter lives on rank 0 only: so do the event files
        self.meter = UsageMeter()  # what this attempt uses, recorded when it ends
        self._step, self._moved_at, self._step_s, self._phase = 0, time.time(), 0.0, "start"

    def _db(self, what: str, fn: Callable[[], T]) -> T | None:
        try:
            return with_retries(fn, what=what)
        except Exception:  # the DB stayed away: files on disk hold the truth
            log.exception("database write failed for good: %s (job %s)", what, self.job_hash)
            return None

    def claim(self, backend: str, backend_id: str | None, host: str, pid: int, log_path: str | None) -> int | None:
        """Open an attempt (None: another process holds or finished the job, or its grid is paused by the
        breaker: then the job is handed back untouched, and runs again after ``dlth-orch resume``)."""
        held = with_retries(lambda: [g for g in self.store.job_grids(self.job_hash)
                                     if self.store.breaker_state(g).paused], what="breaker state")
        if held:
            log.warning("job %s not started: grid %s is paused by the breaker (dlth-orch resume %s)",
                        self.job_hash, held[0], held[0])
            return None
        self.attempt_id = with_retries(
            lambda: self.store.claim(self.job_hash, backend=backend, backend_id=backend_id, host=host, pid=pid,
                                     log_path=log_path),
            what="claim",
        )
        return self.attempt_id

    def record_code(self, code_hash: str | None, node: str | None) -> None:
        """Record the code version this attempt runs (None: the live code) and the node it runs on."""
        attempt_id = self.attempt_id
        if attempt_id is not None:
            self._db("attempt code", lambda: self.store.set_attempt_code(attempt_id, code_hash, node))

    def step(self, step: int) -> None:
        """The training step counter moved to ``step`` (carried by the next heartbeat)."""
        now = time.time()
        if self._phase == "train" and step > self._step:  # a moving average of the seconds per step
            dt = (now - self._moved_at) / (step - self._step)
            self._step_s = dt if not self._step_s else 0.9 * self._step_s + 0.1 * dt
        self._step, self._moved_at, self._phase = step, now, "train"

    def phase(self, name: str) -> None:
        """Outside training steps (``"eval"``, ...): a stall is judged only while ``"train"``."""
        self._phase, self._moved_at = name, time.time()

    def write_progress(self) -> None:
        """``progress.json``: the step counter and when it last moved (every heartbeat)."""
        try:
            write_json_atomic(self.job_dir / PROGRESS_FILE, {
                "step": self._step, "moved_at": self._moved_at, "step_s": self._step_s, "beat_at": time.time(),
                "phase": self._phase, "attempt": self.attempt_id})
        except OSError as exc:
            log.warning("cannot write %s: %s", PROGRESS_FILE, exc)

    def start_heartbeat(self, every_s: float, on_cancel: Callable[[], None] | None = None) -> threading.Event:
        """Beat every ``every_s`` seconds; with ``on_cancel``, also look at the job's state and call it once the
        job is CANCELLED (a batched worker stops that job alone). Returns an event that triggers a beat now."""
        wake = self._wake

        def beat() -> None:
            while not self._stop.is_set():
                wake.wait(every_s)
                wake.clear()
                if self._stop.is_set():
                    return
                self.write_progress()
                self._db("heartbeat", lambda: self.store.heartbeat(self.job_hash))
                if on_cancel is not None and self._cancelled():
                    log.warning("job %s was cancelled: stopping it", self.job_hash)
                    on_cancel()
                    return

        self._thread = threading.Thread(target=beat, name="heartbeat", daemon=True)
        self._thread.start()
        return wake

    def _cancelled(self) -> bool:
        job = self._db("job state", lambda: self.store.job(self.job_hash))
        return job is not None and job.state == JobState.CANCELLED

    def stop_heartbeat(self) -> None:
        self._stop.set()
        self._wake.set()

    def epoch(self, epoch: int, values: dict[str, float]) -> None:
        with open(self.job_dir / EPOCH_METRICS_FILE, "a") as fh:
            fh.write(json.dumps({"epoch": epoch, "time": time.time(), **values}) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        self.board.epoch(epoch, values)
        self.meter.sample()
        self._db("epoch metrics", lambda: self.store.log_metrics(self.job_hash, epoch, values, self.attempt_id))

    def final(self, values: dict[str, float]) -> None:
        """Final metrics: to ``final_metrics.json`` (fsync + rename) first, then the DB in one transaction."""
        epochs = {int(e): v for e, v in read_epoch_metrics(self.job_dir).items()}
        write_final_metrics(self.job_dir, self.job_hash, values, epochs)
        self.board.final(values, max(epochs) if epochs else None)
        self.board.close()
        self.stop_heartbeat()
        attempt_id = self.attempt_id
        self._record_usage()
        self._db("final metrics", lambda: self.store.complete(self.job_hash, attempt_id, values))
        self.attempt_id = None

    def close(self, state: str, *, exit_code: int | None = None, reason: str | None = None,
              log_tail: str | None = None) -> None:
        self.board.close()
        self.stop_heartbeat()
        if self.attempt_id is not None:
            attempt_id = self.attempt_id
            self._record_usage()
            self._db(f"attempt {state}", lambda: self.store.finish_attempt(
                attempt_id, state, exit_code=exit_code, reason=reason, log_tail=log_tail or reason))
            self.attempt_id = None
            if state in COUNTED:
                self._db("breaker", self._trip_breaker)

    def _record_usage(self) -> None:
        """What this attempt used (before it is closed, so that a closed attempt has it)."""
        attempt_id = self.attempt_id
        if attempt_id is not None:
            usage = self.meter.usage()
            self._db("attempt usage", lambda: self.store.set_attempt_usage(attempt_id, usage))

    def _trip_breaker(self) -> None:
        """Apply the breaker's rule to the grids of this job, now that a counted failure is recorded.

        The worker records the trip and nothing else: every worker that starts afterwards refuses to train
        (:meth:`claim`), and the next orchestrator look holds the grid's pending SLURM tasks on the grid's
        own cluster (``hold_pending``). A worker does not hold them itself: it may run where ``scontrol``
        cannot reach the grid's cluster, and the rooms' rule keeps the SLURM commands in the orchestrator.
        """
        for grid in self.store.job_grids(self.job_hash):
            state, tripped = self.store.trip_breaker(grid, by=f"the worker of job {self.job_hash}",
                                                     hold_pending=True)
            if tripped:
                log.warning("%s", pause_line(grid, state))


def read_epoch_metrics(job_dir: Path) -> dict[str, dict[str, float]]:
    """``{epoch: values}`` from ``metrics.jsonl`` (the last record of an epoch wins)."""
    out: dict[str, dict[str, float]] = {}
    path = job_dir / EPOCH_METRICS_FILE
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line torn by a kill
            epoch = str(rec.pop("epoch"))
            rec.pop("time", None)
            out[epoch] = rec
    return out
