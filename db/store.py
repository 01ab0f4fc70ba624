"""The store API: the only way the rest of dlth-orch reads or writes the database.

Every state change happens in one transaction with a conditional ``UPDATE`` so that two workers or
orchestrators can never both move the same job (see :meth:`Store.claim`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import and_, func, select, update
from sqlalchemy.orm import Session

from db.engine import make_engine
from db.models import (
    FINAL_EPOCH,
    Attempt,
    AttemptState,
    Grid,
    GridJob,
    Job,
    JobState,
    Metric,
    utcnow,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class NewJob:
    """A job to record: its identity, serialized spec and the grid's labels for it."""

    job_hash: str
    spec_json: str
    method: str
    config_key: str
    seed: int
    job_dir: str
    subset_name: str
    config_name: str


@dataclass(frozen=True)
class JobRow:
    """A job as seen through one grid."""

    id: int
    job_hash: str
    spec_json: str
    subset_name: str
    config_name: str
    config_key: str
    method: str
    seed: int
    state: str
    job_dir: str
    attempt_count: int
    failure_count: int
    backend: str | None
    backend_id: str | None
    last_error: str | None
    heartbeat_at: datetime | None


@dataclass(frozen=True)
class AttemptRow:
    id: int
    job_hash: str
    number: int
    state: str
    backend: str
    backend_id: str | None
    host: str | None
    pid: int | None
    started_at: datetime
    ended_at: datetime | None
    exit_code: int | None
    exit_reason: str | None
    log_path: str | None


@dataclass(frozen=True)
class GridRow:
    id: int
    name: str
    spec_hash: str
    spec_json: str
    source_path: str
    failure_budget: int


class Store:
    """Typed access to the dlth-orch database at ``url``."""

    def __init__(self, url: str, *, create: bool = True) -> None:
        self.url = url
        self.engine = make_engine(url)
        if create:
            from db.schema import ensure_schema

            ensure_schema(self.engine)

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session inside one transaction: committed on success, rolled back on error."""
        with Session(self.engine, expire_on_commit=False) as s, s.begin():
            yield s

    def close(self) -> None:
        self.engine.dispose()

    # --- grids and jobs -----------------------------------------------------------------------
    def upsert_grid(
        self, name: str, spec_json: str, spec_hash: str, source_path: str, failure_budget: int
    ) -> int:
        """Record a grid (or update its spec); return its id."""
        with self.session() as s:
            grid = s.scalar(select(Grid).where(Grid.name == name))
            if grid is None:
                grid = Grid(name=name)
                s.add(grid)
            grid.spec_json, grid.spec_hash = spec_json, spec_hash
            grid.source_path, grid.failure_budget = source_path, failure_budget
            s.flush()
            return grid.id

    def add_jobs(self, grid_id: int, jobs: Sequence[NewJob]) -> tuple[int, int]:
        """Record ``jobs`` in one transaction: new jobs PENDING, known ones only linked to the grid.

        Returns ``(new, already_known)``. Idempotent: calling it twice adds nothing the second time.
        """
        new = 0
        with self.session() as s:
            hashes = [j.job_hash for j in jobs]
            known = {j.job_hash: j for j in s.scalars(select(Job).where(Job.job_hash.in_(hashes)))}
            linked = set(s.scalars(select(GridJob.job_id).where(GridJob.grid_id == grid_id)))
            for j in jobs:
                row = known.get(j.job_hash)
                if row is None:
                    row = Job(
                        job_hash=j.job_hash, spec_json=j.spec_json, method=j.method, config_key=j.config_key,
                        seed=j.seed, job_dir=j.job_dir, state=JobState.PENDING,
                    )
                    s.add(row)
                    s.flush()
                    known[j.job_hash] = row
                    new += 1
                if row.id not in linked:
                    s.add(GridJob(grid_id=grid_id, job_id=row.id, subset_name=j.subset_name,
                                  config_name=j.config_name))
                    linked.add(row.id)
        return new, len(jobs) - new

    def get_grid(self, name: str) -> GridRow | None:
        with self.session() as s:
            g = s.scalar(select(Grid).where(Grid.name == name))
            return None if g is None else _grid_row(g)

    def list_grids(self) -> list[GridRow]:
        with self.session() as s:
            return [_grid_row(g) for g in s.scalars(select(Grid).order_by(Grid.name))]

    def jobs(self, grid_name: str, states: Iterable[str] | None = None) -> list[JobRow]:
        """Jobs of a grid (optionally only in ``states``), ordered by subset, config, seed."""
        with self.session() as s:
            q = (
                select(Job, GridJob.subset_name, GridJob.config_name)
                .join(GridJob, GridJob.job_id == Job.id)
                .join(Grid, Grid.id == GridJob.grid_id)
                .where(Grid.name == grid_name)
                .order_by(GridJob.subset_name, GridJob.config_name, Job.seed, Job.id)
            )
            if states is not None:
                q = q.where(Job.state.in_(list(states)))
            return [_job_row(j, sub, cfg) for j, sub, cfg in s.execute(q)]

    def job(self, job_hash: str) -> JobRow | None:
        with self.session() as s:
            j = s.scalar(select(Job).where(Job.job_hash == job_hash))
            return None if j is None else _job_row(j, "", "")

    # --- state transitions --------------------------------------------------------------------
    def mark_queued(self, job_hashes: Sequence[str], backend: str, backend_ids: Sequence[str | None]) -> None:
        """Jobs handed to a backend: PENDING/FAILED/QUEUED -> QUEUED with the backend's id."""
        with self.session() as s:
            for h, bid in zip(job_hashes, backend_ids, strict=True):
                s.execute(
                    update(Job)
                    .where(Job.job_hash == h, Job.state.in_(
                        [JobState.PENDING, JobState.FAILED, JobState.QUEUED, JobState.CANCELLED]))
                    .values(state=JobState.QUEUED, backend=backend, backend_id=bid, updated_at=utcnow())
                )

    def claim(
        self, job_hash: str, *, backend: str, backend_id: str | None, host: str, pid: int | None,
        log_path: str | None = None,
    ) -> int | None:
        """Atomically move a job QUEUED/PENDING -> RUNNING and open a new attempt.

        Returns the attempt id, or ``None`` when another process already holds or finished the job.
        """
        with self.session() as s:
            res = s.execute(
                update(Job)
                .where(Job.job_hash == job_hash, Job.state.in_([JobState.PENDING, JobState.QUEUED]))
                .values(state=JobState.RUNNING, attempt_count=Job.attempt_count + 1,
                        heartbeat_at=utcnow(), updated_at=utcnow(), backend=backend, backend_id=backend_id)
            )
            if res.rowcount != 1:
                return None
            job = s.scalar(select(Job).where(Job.job_hash == job_hash))
            assert job is not None
            attempt = Attempt(job_id=job.id, number=job.attempt_count, state=AttemptState.RUNNING,
                              backend=backend, backend_id=backend_id, host=host, pid=pid, log_path=log_path)
            s.add(attempt)
            s.flush()
            return attempt.id

    def heartbeat(self, job_hash: str) -> None:
        with self.session() as s:
            s.execute(update(Job).where(Job.job_hash == job_hash).values(heartbeat_at=utcnow()))

    def finish_attempt(
        self, attempt_id: int, state: str, *, exit_code: int | None = None, reason: str | None = None,
        log_tail: str | None = None,
    ) -> str:
        """Close an attempt and move its job accordingly; returns the job's new state.

        COMPLETED -> job COMPLETED; PREEMPTED/TIMEOUT -> job QUEUED (requeued, no failure counted);
        CANCELLED -> job CANCELLED; FAILED/NODE_FAIL/OUT_OF_MEMORY/LOST -> job FAILED, failure counted.
        Closing an attempt that is already closed changes nothing.
        """
        with self.session() as s:
            attempt = s.get(Attempt, attempt_id)
            if attempt is None:
                raise KeyError(f"attempt {attempt_id} not found")
            job = s.get(Job, attempt.job_id)
            assert job is not None
            if attempt.state != AttemptState.RUNNING:
                return job.state
            attempt.state, attempt.ended_at = state, utcnow()
            attempt.exit_code, attempt.exit_reason, attempt.log_tail = exit_code, reason, log_tail
            if job.state == JobState.COMPLETED:
                return job.state
            if state == AttemptState.COMPLETED:
                job.state, job.last_error = JobState.COMPLETED, None
            elif state in AttemptState.REQUEUE:
                job.state = JobState.QUEUED
            elif state == AttemptState.CANCELLED:
                job.state = JobState.CANCELLED
            else:
                job.state = JobState.FAILED
                job.failure_count += 1
                job.last_error = _last_line(reason or log_tail or state)
            job.updated_at = utcnow()
            return job.state

    def open_attempts(self, grid_name: str | None = None, backend: str | None = None) -> list[AttemptRow]:
        """Attempts still marked RUNNING (for reconciliation with the backend)."""
        with self.session() as s:
            q = select(Attempt, Job.job_hash).join(Job, Job.id == Attempt.job_id).where(
                Attempt.state == AttemptState.RUNNING)
            if backend is not None:
                q = q.where(Attempt.backend == backend)
            if grid_name is not None:
                q = q.join(GridJob, GridJob.job_id == Job.id).join(Grid, Grid.id == GridJob.grid_id).where(
                    Grid.name == grid_name)
            return [_attempt_row(a, h) for a, h in s.execute(q)]

    def attempts(self, job_hash: str) -> list[AttemptRow]:
        with self.session() as s:
            q = (select(Attempt, Job.job_hash).join(Job, Job.id == Attempt.job_id)
                 .where(Job.job_hash == job_hash).order_by(Attempt.number))
            return [_attempt_row(a, h) for a, h in s.execute(q)]

    def reset_jobs(self, job_hashes: Sequence[str], from_states: Sequence[str]) -> int:
        """Move jobs in ``from_states`` back to PENDING (e.g. retry failed ones); returns how many."""
        with self.session() as s:
            res = s.execute(
                update(Job).where(Job.job_hash.in_(list(job_hashes)), Job.state.in_(list(from_states)))
                .values(state=JobState.PENDING, updated_at=utcnow())
            )
            return int(res.rowcount or 0)

    def set_state(self, job_hashes: Sequence[str], state: str, from_states: Sequence[str]) -> int:
        """Conditionally set the state of several jobs; returns how many moved."""
        with self.session() as s:
            res = s.execute(
                update(Job).where(Job.job_hash.in_(list(job_hashes)), Job.state.in_(list(from_states)))
                .values(state=state, updated_at=utcnow())
            )
            return int(res.rowcount or 0)

    # --- metrics ------------------------------------------------------------------------------
    def log_metrics(self, job_hash: str, epoch: int, values: dict[str, float], attempt_id: int | None) -> None:
        """Record metrics of one epoch (or ``FINAL_EPOCH``); a re-run epoch overwrites its values."""
        with self.session() as s:
            job_id = s.scalar(select(Job.id).where(Job.job_hash == job_hash))
            if job_id is None:
                raise KeyError(f"job {job_hash} not found")
            existing = {
                m.name: m for m in s.scalars(
                    select(Metric).where(Metric.job_id == job_id, Metric.epoch == epoch,
                                         Metric.name.in_(list(values))))
            }
            for name, value in values.items():
                m = existing.get(name)
                if m is None:
                    s.add(Metric(job_id=job_id, attempt_id=attempt_id, epoch=epoch, name=name, value=float(value)))
                else:
                    m.value, m.attempt_id = float(value), attempt_id

    def metrics(self, job_hash: str, final_only: bool = False) -> dict[int, dict[str, float]]:
        """``{epoch: {name: value}}`` of a job (``FINAL_EPOCH`` = -1 for final metrics)."""
        with self.session() as s:
            q = select(Metric).join(Job, Job.id == Metric.job_id).where(Job.job_hash == job_hash)
            if final_only:
                q = q.where(Metric.epoch == FINAL_EPOCH)
            out: dict[int, dict[str, float]] = {}
            for m in s.scalars(q):
                out.setdefault(m.epoch, {})[m.name] = m.value
            return out

    def final_metrics(self, grid_name: str) -> dict[str, dict[str, float]]:
        """``{job_hash: {name: value}}`` of the final metrics of every job of a grid (one query)."""
        with self.session() as s:
            q = (
                select(Job.job_hash, Metric.name, Metric.value)
                .join(Metric, Metric.job_id == Job.id)
                .join(GridJob, GridJob.job_id == Job.id)
                .join(Grid, and_(Grid.id == GridJob.grid_id, Grid.name == grid_name))
                .where(Metric.epoch == FINAL_EPOCH)
            )
            out: dict[str, dict[str, float]] = {}
            for h, name, value in s.execute(q):
                out.setdefault(h, {})[name] = value
            return out

    def state_counts(self, grid_name: str) -> dict[str, int]:
        with self.session() as s:
            q = (
                select(Job.state, func.count())
                .join(GridJob, GridJob.job_id == Job.id)
                .join(Grid, Grid.id == GridJob.grid_id)
                .where(Grid.name == grid_name)
                .group_by(Job.state)
            )
            return {state: int(n) for state, n in s.execute(q)}


def _last_line(text: str) -> str:
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1][:500] if lines else text[:500]


def _grid_row(g: Grid) -> GridRow:
    return GridRow(g.id, g.name, g.spec_hash, g.spec_json, g.source_path, g.failure_budget)


def _job_row(j: Job, subset_name: str, config_name: str) -> JobRow:
    return JobRow(
        id=j.id, job_hash=j.job_hash, spec_json=j.spec_json, subset_name=subset_name, config_name=config_name,
        config_key=j.config_key, method=j.method, seed=j.seed, state=j.state, job_dir=j.job_dir,
        attempt_count=j.attempt_count, failure_count=j.failure_count, backend=j.backend,
        backend_id=j.backend_id, last_error=j.last_error, heartbeat_at=j.heartbeat_at,
    )


def _attempt_row(a: Attempt, job_hash: str) -> AttemptRow:
    return AttemptRow(
        id=a.id, job_hash=job_hash, number=a.number, state=a.state, backend=a.backend, backend_id=a.backend_id,
        host=a.host, pid=a.pid, started_at=a.started_at, ended_at=a.ended_at, exit_code=a.exit_code,
        exit_reason=a.exit_reason, log_path=a.log_path,
    )
