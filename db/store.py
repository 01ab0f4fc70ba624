"""The store API: the only way the rest of dlth-orch reads or writes the database.

Transactions: every public method is one transaction. Writers take the write lock up front (``BEGIN
IMMEDIATE`` on SQLite; row locks in a fixed order, job before attempt, on PostgreSQL), so concurrent
workers and orchestrators neither lose updates nor deadlock. State changes are conditional ``UPDATE``\\ s:
two processes can never both claim or move the same job (see :meth:`Store.claim`).

Errors: opening a store raises :class:`~db.engine.StoreError` (one line; :class:`~db.engine.StoreUnavailable`
when worth retrying). Later calls raise SQLAlchemy's ``OperationalError`` when the database goes away:
workers wrap them in :func:`db.retry.with_retries`.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import and_, bindparam, case, exists, func, or_, select, update
from sqlalchemy.orm import Session

from db import migrate, netfs
from db.adaptive_looks import AdaptiveLookStore
from db.engine import WRITE_OPTION, StoreError, is_sqlite, make_engine, sqlite_path
from db.launches import LaunchStore
from db.locks import GridLock, LockHolder, grid_lock, lock_holder
from db.models import (
    FINAL_EPOCH,
    Attempt,
    AttemptState,
    Grid,
    GridJob,
    Job,
    JobDep,
    JobState,
    Meta,
    Metric,
    utcnow,
)
from db.result_file import FinalResult
from db.usage import Usage, UsageStore, usage_of
from specs import breaker as breaker_rule
from specs.breaker import BreakerSettings, BreakerState
from specs.lifecycle import check_transition, initial_state, job_state_after

log = logging.getLogger(__name__)
_CHUNK = 500  # rows per multi-row INSERT (well under SQLite's bound-parameter limit)


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
    parents: tuple[str, ...] = ()  # hashes of the jobs it depends on (recorded in the same call or before)


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
    ingested_from_disk: bool = False


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
    usage: Usage | None = None  # what it used (0005)


@dataclass(frozen=True)
class GridRow:
    id: int
    name: str
    spec_hash: str
    spec_json: str
    source_path: str
    failure_budget: int


@dataclass(frozen=True)
class MetricRow:
    """One metric value of one job (long form, for export)."""

    job_hash: str
    epoch: int
    name: str
    value: float
    attempt_id: int | None


_JOB_COLUMNS = (
    Job.id, Job.job_hash, Job.spec_json, GridJob.subset_name, GridJob.config_name, Job.config_key, Job.method,
    Job.seed, Job.state, Job.job_dir, Job.attempt_count, Job.failure_count, Job.backend, Job.backend_id,
    Job.last_error, Job.heartbeat_at, Job.ingested_from_disk,
)


class Store(LaunchStore, UsageStore, AdaptiveLookStore):
    """Typed access to the dlth-orch database at ``url``.

    ``create=True`` (the orchestrator): create the schema or upgrade it to the newest revision.
    ``create=False`` (workers): never create or migrate; refuse a missing database, or one whose schema
    revision is not this code's, with a one-line :class:`StoreError`.
    """

    def __init__(self, url: str, *, create: bool = True) -> None:
        self.url = url
        self.worker = not create
        self.engine = make_engine(url, must_exist=not create)
        self._job_ids: dict[str, int] = {}
        try:
            if create:
                from db.schema import ensure_schema

                ensure_schema(self.engine)
            else:
                migrate.check_current(self.engine)
            if is_sqlite(self.engine):
                self._check_sqlite_location()
        except BaseException:
            self.engine.dispose()
            raise

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def backend(self) -> str:
        """``"sqlite"`` or ``"postgresql"``."""
        return self.engine.dialect.name

    @contextmanager
    def session(self, *, write: bool = True) -> Iterator[Session]:
        """A session inside one transaction: committed on success, rolled back on error.

        ``write=False`` for read-only work: on SQLite it reads a consistent snapshot without taking the
        write lock; write transactions take it at once (``BEGIN IMMEDIATE``).
        """
        with Session(self.engine, expire_on_commit=False) as s, s.begin():
            s.connection(execution_options={WRITE_OPTION: write})
            yield s

    def close(self) -> None:
        self.engine.dispose()

    def schema_revision(self) -> str | None:
        """The database's alembic revision."""
        return migrate.current(self.engine).revision

    # --- meta and the SQLite network file system check -------------------------------------------
    def get_meta(self, key: str) -> str | None:
        with self.session(write=False) as s:
            return s.scalar(select(Meta.value).where(Meta.key == key))

    def set_meta(self, key: str, value: str) -> None:
        with self.session() as s:
            _upsert(s, Meta, [{"key": key, "value": value, "updated_at": utcnow()}], ["key"],
                    ["value", "updated_at"])

    def _check_sqlite_location(self) -> None:
        path = sqlite_path(self.engine)
        if netfs.network_fs_type(path) is None:
            return
        hosts = json.loads(self.get_meta("orchestrator_hosts") or "[]")
        if not self.worker and netfs.hostname() not in hosts:
            hosts = sorted({*hosts, netfs.hostname()})
            self.set_meta("orchestrator_hosts", json.dumps(hosts))
        known = hosts[0] if self.worker and hosts and netfs.hostname() not in hosts else None
        netfs.check_sqlite_location(path, worker=self.worker, orchestrator_host=known)

    # --- grids and jobs -----------------------------------------------------------------------
    def upsert_grid(
        self, name: str, spec_json: str, spec_hash: str, source_path: str, failure_budget: int
    ) -> int:
        """Record a grid (or update its spec); return its id."""
        with self.session() as s:
            return _upsert_grid(s, name, spec_json, spec_hash, source_path, failure_budget)

    def record_grid(
        self, name: str, spec_json: str, spec_hash: str, source_path: str, failure_budget: int,
        jobs: Sequence[NewJob],
    ) -> tuple[int, int, int]:
        """Record a grid and its jobs in ONE transaction (:meth:`upsert_grid` + :meth:`add_jobs`): a failure
        leaves neither, never a grid without its jobs. Returns ``(grid_id, new, already_known)``."""
        with self.session() as s:
            grid_id = _upsert_grid(s, name, spec_json, spec_hash, source_path, failure_budget)
            new = self._add_jobs(s, grid_id, jobs)
        return grid_id, new, len(jobs) - new

    @contextmanager
    def grid_lock(self, grid_name: str) -> Iterator[GridLock]:
        """The grid's launcher lock, held in the database (:mod:`db.locks`): at most one launcher per grid,
        on any host. Does not wait: yields a :class:`~db.locks.GridLock` saying whether it is held (and
        by whom, when not); released on exit."""
        with grid_lock(self.engine, grid_name) as got:
            yield got

    def lock_holder(self, grid_name: str) -> LockHolder | None:
        """Who holds the grid's launcher lock now (None: nobody)."""
        return lock_holder(self.engine, grid_name)

    def add_jobs(self, grid_id: int, jobs: Sequence[NewJob]) -> tuple[int, int]:
        """Record ``jobs`` in one transaction: new jobs PENDING (WAITING when they have parents), known
        ones only linked to the grid; dependency edges with them. Parents must be in ``jobs`` or known.

        Returns ``(new, already_known)``. Idempotent, also when two orchestrators add the same jobs at once.
        """
        with self.session() as s:
            new = self._add_jobs(s, grid_id, jobs)
        return new, len(jobs) - new

    def _add_jobs(self, s: Session, grid_id: int, jobs: Sequence[NewJob]) -> int:
        """:meth:`add_jobs` inside the caller's transaction; returns how many jobs were new."""
        now = utcnow()
        unique = {j.job_hash: j for j in jobs}
        q = select(Job.job_hash, Job.id).join(GridJob, GridJob.job_id == Job.id).where(GridJob.grid_id == grid_id)
        linked = {h: job_id for h, job_id in s.execute(q)}  # one query: a relaunch stops here
        ids = {**linked, **self._ids_of(s, [h for h in unique if h not in linked])}  # inserts only what is missing
        rows = [{"job_hash": j.job_hash, "spec_json": j.spec_json, "method": j.method,
                 "config_key": j.config_key, "seed": j.seed, "job_dir": j.job_dir,
                 "state": initial_state(bool(j.parents)), "attempt_count": 0, "failure_count": 0,
                 "created_at": now, "updated_at": now, "ingested_from_disk": False}
                for j in unique.values() if j.job_hash not in ids]
        new = _insert_ignore(s, Job, rows, ["job_hash"])
        if rows:
            ids.update(self._ids_of(s, [r["job_hash"] for r in rows]))
        parents = sorted({p for j in unique.values() for p in j.parents} - set(ids))
        if parents:
            ids.update(self._ids_of(s, parents))
        missing = [p for p in parents if p not in ids]
        if missing:
            raise KeyError(f"parent job {missing[0]} is neither recorded nor among the jobs to record")
        links = [{"grid_id": grid_id, "job_id": ids[j.job_hash], "subset_name": j.subset_name,
                  "config_name": j.config_name} for j in unique.values() if j.job_hash not in linked]
        _insert_ignore(s, GridJob, links, ["grid_id", "job_id"])
        fresh = {r["job_hash"] for r in rows}  # a known job's edges were recorded with it
        deps = [{"child_id": ids[j.job_hash], "parent_id": ids[p]}
                for j in unique.values() if j.job_hash in fresh for p in j.parents]
        _insert_ignore(s, JobDep, deps, ["child_id", "parent_id"])
        return new

    def _ids_of(self, s: Session, hashes: Sequence[str]) -> dict[str, int]:
        out: dict[str, int] = {}
        for i in range(0, len(hashes), _CHUNK):
            q = select(Job.job_hash, Job.id).where(Job.job_hash.in_(hashes[i:i + _CHUNK]))
            out.update((h, job_id) for h, job_id in s.execute(q))
        return out

    def _job_id(self, s: Session, job_hash: str) -> int:
        job_id = self._job_ids.get(job_hash)
        if job_id is None:
            job_id = s.scalar(select(Job.id).where(Job.job_hash == job_hash))
            if job_id is None:
                raise KeyError(f"job {job_hash} not found")
            self._job_ids[job_hash] = job_id
        return job_id

    def get_grid(self, name: str) -> GridRow | None:
        with self.session(write=False) as s:
            g = s.scalar(select(Grid).where(Grid.name == name))
            return None if g is None else _grid_row(g)

    def list_grids(self) -> list[GridRow]:
        with self.session(write=False) as s:
            return [_grid_row(g) for g in s.scalars(select(Grid).order_by(Grid.name))]

    def jobs(self, grid_name: str, states: Iterable[str] | None = None) -> list[JobRow]:
        """Jobs of a grid (optionally only in ``states``), ordered by subset, config, seed."""
        with self.session(write=False) as s:
            q = (
                select(*_JOB_COLUMNS)
                .join(GridJob, GridJob.job_id == Job.id)
                .join(Grid, Grid.id == GridJob.grid_id)
                .where(Grid.name == grid_name)
                .order_by(GridJob.subset_name, GridJob.config_name, Job.seed, Job.id)
            )
            if states is not None:
                q = q.where(Job.state.in_(list(states)))
            return [JobRow(*row) for row in s.execute(q)]

    def job_states(self, grid_name: str) -> dict[str, tuple[str, int]]:
        """``{job_hash: (state, failure_count)}`` of a grid's jobs: one light query, no specs (a dry run of
        a large grid)."""
        with self.session(write=False) as s:
            q = (select(Job.job_hash, Job.state, Job.failure_count).join(GridJob, GridJob.job_id == Job.id)
                 .join(Grid, Grid.id == GridJob.grid_id).where(Grid.name == grid_name))
            return {h: (state, failures) for h, state, failures in s.execute(q)}

    def job(self, job_hash: str) -> JobRow | None:
        with self.session(write=False) as s:
            j = s.scalar(select(Job).where(Job.job_hash == job_hash))
            return None if j is None else _job_row(j, "", "")

    # --- the job graph ------------------------------------------------------------------------
    def grid_deps(self, grid_name: str) -> dict[str, list[str]]:
        """``{child_hash: [parent_hash, ...]}`` for every job of the grid that has parents (one query)."""
        child, parent = Job.__table__.alias("child"), Job.__table__.alias("parent")
        with self.session(write=False) as s:
            q = (select(child.c.job_hash, parent.c.job_hash)
                 .select_from(JobDep.__table__)
                 .join(child, child.c.id == JobDep.child_id).join(parent, parent.c.id == JobDep.parent_id)
                 .join(GridJob, GridJob.job_id == child.c.id).join(Grid, Grid.id == GridJob.grid_id)
                 .where(Grid.name == grid_name).order_by(child.c.job_hash, parent.c.job_hash))
            out: dict[str, list[str]] = {}
            for c, p in s.execute(q):
                out.setdefault(c, []).append(p)
            return out

    def parents(self, job_hash: str) -> list[JobRow]:
        """The jobs ``job_hash`` depends on."""
        return self._related(job_hash, JobDep.child_id, JobDep.parent_id)

    def children(self, job_hash: str) -> list[JobRow]:
        """The jobs that depend on ``job_hash``."""
        return self._related(job_hash, JobDep.parent_id, JobDep.child_id)

    def _related(self, job_hash: str, this: Any, other: Any) -> list[JobRow]:
        with self.session(write=False) as s:
            job_id = self._job_id(s, job_hash)
            q = select(Job).join(JobDep, other == Job.id).where(this == job_id).order_by(Job.job_hash)
            return [_job_row(j, "", "") for j in s.scalars(q)]

    def descendants(self, job_hashes: Iterable[str]) -> list[str]:
        """Every job that depends, directly or not, on one of ``job_hashes`` (not those themselves)."""
        seen: set[str] = set()
        frontier = set(job_hashes)
        start = set(frontier)
        child, parent = Job.__table__.alias("child"), Job.__table__.alias("parent")
        with self.session(write=False) as s:
            while frontier:
                hashes = sorted(frontier)
                frontier = set()
                for i in range(0, len(hashes), _CHUNK):
                    q = (select(child.c.job_hash).select_from(JobDep.__table__)
                         .join(child, child.c.id == JobDep.child_id).join(parent, parent.c.id == JobDep.parent_id)
                         .where(parent.c.job_hash.in_(hashes[i:i + _CHUNK])))
                    frontier |= {h for (h,) in s.execute(q)} - seen - start
                seen |= frontier
        return sorted(seen)

    def ready_jobs(self, grid_name: str) -> list[JobRow]:
        """WAITING jobs of a grid whose parents are all COMPLETED."""
        ready = self._ready_ids(grid_name)
        return [j for j in self.jobs(grid_name, [JobState.WAITING]) if j.id in ready]

    def _ready_ids(self, grid_name: str) -> set[int]:
        with self.session(write=False) as s:
            q = (select(Job.id).join(GridJob, GridJob.job_id == Job.id).join(Grid, Grid.id == GridJob.grid_id)
                 .where(Grid.name == grid_name, Job.state == JobState.WAITING, _parents_completed()))
            return set(s.scalars(q))

    # --- state transitions --------------------------------------------------------------------
    def mark_queued(self, job_hashes: Sequence[str], backend: str, backend_ids: Sequence[str | None]) -> None:
        """Jobs handed to a backend: PENDING/FAILED/QUEUED/CANCELLED -> QUEUED with the backend's id.

        A WAITING job stays WAITING with the backend's id: the backend holds it until its parents complete
        (SLURM ``--dependency``)."""
        pairs = sorted(zip(job_hashes, backend_ids, strict=True))  # a fixed lock order: no deadlock
        if not pairs:
            return
        jobs = Job.__table__
        stmt = (jobs.update()
                .where(jobs.c.job_hash == bindparam("h"), or_(*(  # not IN: executemany cannot expand lists
                    jobs.c.state == st for st in (JobState.PENDING, JobState.FAILED, JobState.QUEUED,
                                                  JobState.CANCELLED, JobState.WAITING))))
                .values(state=case((jobs.c.state == JobState.WAITING, JobState.WAITING), else_=JobState.QUEUED),
                        backend=backend, backend_id=bindparam("bid"), updated_at=utcnow()))
        with self.session() as s:
            s.execute(stmt, [{"h": h, "bid": bid} for h, bid in pairs])

    def claim(
        self, job_hash: str, *, backend: str, backend_id: str | None, host: str, pid: int | None,
        log_path: str | None = None,
    ) -> int | None:
        """Atomically move a job QUEUED/PENDING (or WAITING) -> RUNNING and open a new attempt, only when all
        its parents are COMPLETED (whatever the backend: a child never runs before its parents).

        Returns the attempt id, or ``None`` when another process already holds or finished the job.
        Safe to retry: if this very process (same host, pid and backend id) already holds the job, its
        open attempt's id is returned (a retried claim whose first commit did reach the database).
        """
        with self.session() as s:
            now = utcnow()
            row = s.execute(
                update(Job)
                .where(Job.job_hash == job_hash,
                       Job.state.in_([JobState.PENDING, JobState.QUEUED, JobState.WAITING]), _parents_completed())
                .values(state=JobState.RUNNING, attempt_count=Job.attempt_count + 1, heartbeat_at=now,
                        updated_at=now, backend=backend, backend_id=backend_id)
                .returning(Job.id, Job.attempt_count)
            ).first()
            if row is None:
                return s.scalar(
                    select(Attempt.id).join(Job, Job.id == Attempt.job_id)
                    .where(Job.job_hash == job_hash, Job.state == JobState.RUNNING,
                           Attempt.state == AttemptState.RUNNING, Attempt.host == host, Attempt.pid == pid,
                           Attempt.backend_id.is_(None) if backend_id is None else Attempt.backend_id == backend_id)
                )
            job_id, number = row
            attempt = Attempt(job_id=job_id, number=number, state=AttemptState.RUNNING, backend=backend,
                              backend_id=backend_id, host=host, pid=pid, log_path=log_path, started_at=now)
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
        Closing an attempt that is already closed changes nothing, except that a COMPLETED from the
        worker wins over an earlier guess (e.g. LOST from a reconciliation that lost sight of it): a
        finished result is never thrown away.
        """
        with self.session() as s:
            job, attempt = self._lock_attempt(s, attempt_id)
            return _close_attempt(job, attempt, state, exit_code=exit_code, reason=reason, log_tail=log_tail)

    def correct_stop_reason(self, attempt_id: int, state: str, reason: str) -> bool:
        """Change a closed attempt's stop reason (PREEMPTED/TIMEOUT/CANCELLED) to ``state``; True if changed.

        A worker stopped by a signal records PREEMPTED; the backend's accounting can tell later whether it
        was its time limit (TIMEOUT) or ``scancel`` (CANCELLED). A job that was QUEUED because of the stop
        becomes CANCELLED when the attempt turns out CANCELLED. Failures and completions are never touched.
        """
        if state not in AttemptState.STOPS:
            raise ValueError(f"state: expected one of {', '.join(AttemptState.STOPS)}, got {state!r}")
        with self.session() as s:
            job, attempt = self._lock_attempt(s, attempt_id)
            if attempt.state not in AttemptState.STOPS or attempt.state == state:
                return False
            attempt.state = state
            attempt.exit_reason = f"{reason} (the worker recorded {attempt.exit_reason or 'a stop'})"
            if state == AttemptState.CANCELLED and job.state == JobState.QUEUED:
                job.state, job.updated_at = JobState.CANCELLED, utcnow()
            return True

    def _lock_attempt(self, s: Session, attempt_id: int) -> tuple[Job, Attempt]:
        job_id = s.scalar(select(Attempt.job_id).where(Attempt.id == attempt_id))
        if job_id is None:
            raise KeyError(f"attempt {attempt_id} not found")
        job = s.get(Job, job_id, with_for_update={"key_share": True})  # job first, then attempt
        attempt = s.get(Attempt, attempt_id, with_for_update={"key_share": True})
        assert job is not None and attempt is not None
        return job, attempt

    def complete(
        self, job_hash: str, attempt_id: int | None, metrics: dict[str, float], *,
        epoch_metrics: dict[int, dict[str, float]] | None = None, exit_code: int = 0,
    ) -> str:
        """Record a job's final metrics and close its attempt COMPLETED, in one transaction.

        Preferable to ``log_metrics(FINAL_EPOCH) + finish_attempt`` (never a COMPLETED job without its
        metrics, or metrics of a job left RUNNING). Idempotent; returns the job's state.
        """
        with self.session() as s:
            job_id = self._job_id(s, job_hash)
            job = s.get(Job, job_id, with_for_update={"key_share": True})
            assert job is not None
            rows = _metric_rows(job_id, attempt_id, FINAL_EPOCH, metrics)
            for epoch, values in (epoch_metrics or {}).items():
                rows += _metric_rows(job_id, attempt_id, epoch, values)
            _upsert_metrics(s, rows)
            if attempt_id is None:
                _complete_job(job)
                return job.state
            attempt = s.get(Attempt, attempt_id, with_for_update={"key_share": True})
            if attempt is None or attempt.job_id != job_id:
                raise KeyError(f"attempt {attempt_id} of job {job_hash} not found")
            return _close_attempt(job, attempt, AttemptState.COMPLETED, exit_code=exit_code, reason=None,
                                  log_tail=None)

    def open_attempts(self, grid_name: str | None = None, backend: str | None = None) -> list[AttemptRow]:
        """Attempts still marked RUNNING (for reconciliation with the backend)."""
        with self.session(write=False) as s:
            q = select(Attempt, Job.job_hash).join(Job, Job.id == Attempt.job_id).where(
                Attempt.state == AttemptState.RUNNING)
            if backend is not None:
                q = q.where(Attempt.backend == backend)
            if grid_name is not None:
                q = q.join(GridJob, GridJob.job_id == Job.id).join(Grid, Grid.id == GridJob.grid_id).where(
                    Grid.name == grid_name)
            return [_attempt_row(a, h) for a, h in s.execute(q.order_by(Attempt.id))]

    def attempts(self, job_hash: str) -> list[AttemptRow]:
        with self.session(write=False) as s:
            q = (select(Attempt, Job.job_hash).join(Job, Job.id == Attempt.job_id)
                 .where(Job.job_hash == job_hash).order_by(Attempt.number))
            return [_attempt_row(a, h) for a, h in s.execute(q)]

    def grid_attempts(self, grid_name: str) -> list[AttemptRow]:
        """Every attempt of every job of a grid (one query), by job and attempt number."""
        with self.session(write=False) as s:
            q = (select(Attempt, Job.job_hash).join(Job, Job.id == Attempt.job_id)
                 .join(GridJob, GridJob.job_id == Job.id).join(Grid, Grid.id == GridJob.grid_id)
                 .where(Grid.name == grid_name).order_by(Job.job_hash, Attempt.number))
            return [_attempt_row(a, h) for a, h in s.execute(q)]

    def reset_jobs(self, job_hashes: Sequence[str], from_states: Sequence[str]) -> int:
        """Move jobs in ``from_states`` back to PENDING (e.g. retry failed ones); returns how many."""
        return self.set_state(job_hashes, JobState.PENDING, from_states)

    def set_state(self, job_hashes: Sequence[str], state: str, from_states: Sequence[str], *,
                  check: bool = True) -> int:
        """Conditionally set the state of several jobs; returns how many moved.

        Every ``from_states -> state`` must be a transition of :data:`specs.lifecycle.TRANSITIONS`
        (:class:`~specs.lifecycle.TransitionError` otherwise); ``check=False`` only to seed test data.
        """
        if check:
            check_transition(tuple(from_states), state)
        hashes = sorted(set(job_hashes))
        moved = 0
        with self.session() as s:
            for i in range(0, len(hashes), _CHUNK):
                res = s.execute(
                    update(Job).where(Job.job_hash.in_(hashes[i:i + _CHUNK]), Job.state.in_(list(from_states)))
                    .values(state=state, updated_at=utcnow())
                )
                moved += int(res.rowcount or 0)
        return moved

    def forget_tasks(self, tasks: dict[str, str]) -> list[str]:
        """Jobs whose backend task (``{job hash: backend id}``) is gone: a WAITING job keeps waiting without
        a task (the next submission gives it one), a QUEUED job goes back to PENDING. Only jobs still in
        those states *and* still recorded with that very id move (a task given meanwhile is kept); returns
        the hashes that moved."""
        moved: list[str] = []
        with self.session() as s:
            for h, bid in sorted(tasks.items()):
                row = s.execute(
                    update(Job).where(Job.job_hash == h, Job.backend_id == bid,
                                      Job.state.in_([JobState.WAITING, JobState.QUEUED]))
                    .values(state=case((Job.state == JobState.QUEUED, JobState.PENDING), else_=Job.state),
                            backend_id=None, updated_at=utcnow())
                    .returning(Job.job_hash)
                ).first()
                if row is not None:
                    moved.append(h)
        return moved

    # --- the breaker (the rule is specs.breaker's; its state lives in dlth_meta) ------------------
    def job_grids(self, job_hash: str) -> list[str]:
        """Names of the grids that hold a job."""
        with self.session(write=False) as s:
            q = (select(Grid.name).join(GridJob, GridJob.grid_id == Grid.id).join(Job, Job.id == GridJob.job_id)
                 .where(Job.job_hash == job_hash).order_by(Grid.name))
            return list(s.scalars(q))

    def breaker_state(self, grid_name: str) -> BreakerState:
        """The breaker's state of a grid (not paused if never tripped)."""
        return BreakerState.from_json(self.get_meta(breaker_rule.meta_key(grid_name)))

    def save_breaker_state(self, grid_name: str, state: BreakerState) -> None:
        self.set_meta(breaker_rule.meta_key(grid_name), state.to_json())

    def trip_breaker(self, grid_name: str, *, by: str, hold_pending: bool = False) -> tuple[BreakerState, bool]:
        """Apply the breaker's rule to a grid's attempts and record a trip, in one write transaction (the
        breaker's row locked where it exists; SQLite serialises writers anyway); returns ``(state, tripped
        now)``. ``hold_pending``: the tripping process cannot hold the grid's SLURM tasks itself."""
        key = breaker_rule.meta_key(grid_name)
        with self.session() as s:
            grid = s.scalar(select(Grid).where(Grid.name == grid_name))
            raw = s.scalar(select(Meta.value).where(Meta.key == key).with_for_update())
            state = BreakerState.from_json(raw)
            if grid is None or state.paused:
                return state, False
            q = (select(Attempt, Job.job_hash).join(Job, Job.id == Attempt.job_id)
                 .join(GridJob, GridJob.job_id == Job.id).where(GridJob.grid_id == grid.id, Attempt.number == 1))
            attempts = [_attempt_row(a, h) for a, h in s.execute(q)]
            settings = BreakerSettings.of_grid(grid.spec_json, grid.source_path or None)
            if not breaker_rule.trip(state, settings, attempts, by):
                return state, False
            state.hold_pending = hold_pending
            _upsert(s, Meta, [{"key": key, "value": state.to_json(), "updated_at": utcnow()}], ["key"],
                    ["value", "updated_at"])
            return state, True

    # --- metrics ------------------------------------------------------------------------------
    def log_metrics(self, job_hash: str, epoch: int, values: dict[str, float], attempt_id: int | None) -> None:
        """Record metrics of one epoch (or ``FINAL_EPOCH``); a re-run epoch overwrites its values.

        One ``INSERT ... ON CONFLICT DO UPDATE``: idempotent and safe to retry. NaN is stored as NULL and
        read back as NaN.
        """
        if not values:
            return
        with self.session() as s:
            _upsert_metrics(s, _metric_rows(self._job_id(s, job_hash), attempt_id, epoch, values))

    def metrics(self, job_hash: str, final_only: bool = False) -> dict[int, dict[str, float]]:
        """``{epoch: {name: value}}`` of a job (``FINAL_EPOCH`` = -1 for final metrics)."""
        with self.session(write=False) as s:
            q = (select(Metric.epoch, Metric.name, Metric.value).join(Job, Job.id == Metric.job_id)
                 .where(Job.job_hash == job_hash))
            if final_only:
                q = q.where(Metric.epoch == FINAL_EPOCH)
            out: dict[int, dict[str, float]] = {}
            for epoch, name, value in s.execute(q):
                out.setdefault(epoch, {})[name] = _from_db(value)
            return out

    def final_metrics(self, grid_name: str) -> dict[str, dict[str, float]]:
        """``{job_hash: {name: value}}`` of the final metrics of every job of a grid (one query)."""
        with self.session(write=False) as s:
            q = (
                select(Job.job_hash, Metric.name, Metric.value)
                .join(Metric, Metric.job_id == Job.id)
                .join(GridJob, GridJob.job_id == Job.id)
                .join(Grid, and_(Grid.id == GridJob.grid_id, Grid.name == grid_name))
                .where(Metric.epoch == FINAL_EPOCH)
            )
            out: dict[str, dict[str, float]] = {}
            for h, name, value in s.execute(q):
                out.setdefault(h, {})[name] = _from_db(value)
            return out

    def grid_metrics(self, grid_name: str) -> list[MetricRow]:
        """Every metric of every job of a grid, long form (one query), by job, epoch and name."""
        with self.session(write=False) as s:
            q = (
                select(Job.job_hash, Metric.epoch, Metric.name, Metric.value, Metric.attempt_id)
                .join(Metric, Metric.job_id == Job.id)
                .join(GridJob, GridJob.job_id == Job.id)
                .join(Grid, and_(Grid.id == GridJob.grid_id, Grid.name == grid_name))
                .order_by(Job.job_hash, Metric.epoch, Metric.name)
            )
            return [MetricRow(h, e, n, _from_db(v), a) for h, e, n, v, a in s.execute(q)]

    def state_counts(self, grid_name: str) -> dict[str, int]:
        with self.session(write=False) as s:
            q = (
                select(Job.state, func.count())
                .join(GridJob, GridJob.job_id == Job.id)
                .join(Grid, Grid.id == GridJob.grid_id)
                .where(Grid.name == grid_name)
                .group_by(Job.state)
            )
            return {state: int(n) for state, n in s.execute(q)}

    def grid_backends(self, grid_name: str) -> set[str]:
        """Backends that hold (or held) some of the grid's jobs (one ``DISTINCT`` query, no job rows)."""
        with self.session(write=False) as s:
            q = (select(Job.backend).distinct().join(GridJob, GridJob.job_id == Job.id)
                 .join(Grid, Grid.id == GridJob.grid_id).where(Grid.name == grid_name, Job.backend.is_not(None)))
            return set(s.scalars(q))

    def grid_finished(self, grid_name: str) -> bool:
        """No job of the grid is pending, waiting, queued or running (failed and cancelled ones count as ended)."""
        counts = self.state_counts(grid_name)
        return sum(counts.get(s, 0) for s in JobState.UNFINISHED) == 0 and sum(counts.values()) > 0  # type: ignore[attr-defined]

    # --- results on disk (read by db.ingest; the store only records what it found) ---------------
    def complete_from_result(self, job_hash: str, result: FinalResult, reason: str) -> bool:
        """Complete a job from a result found on disk unless it is COMPLETED with final metrics already.

        Records the final and per-epoch metrics, closes its open attempts as COMPLETED (``reason``), marks
        it COMPLETED and ``ingested_from_disk``. Returns True if it changed anything.
        """
        with self.session() as s:
            job_id = self._job_id(s, job_hash)
            job = s.get(Job, job_id, with_for_update={"key_share": True})
            assert job is not None
            has_final = s.scalar(select(exists().where(Metric.job_id == job_id, Metric.epoch == FINAL_EPOCH)))
            if job.state == JobState.COMPLETED and has_final:
                return False
            open_attempts = list(s.scalars(
                select(Attempt).where(Attempt.job_id == job_id, Attempt.state == AttemptState.RUNNING)
                .order_by(Attempt.number).with_for_update(key_share=True)))
            attempt_id = open_attempts[-1].id if open_attempts else s.scalar(
                select(func.max(Attempt.id)).where(Attempt.job_id == job_id))
            rows = _metric_rows(job_id, attempt_id, FINAL_EPOCH, result.metrics)
            for epoch, values in result.epoch_metrics.items():
                rows += _metric_rows(job_id, attempt_id, epoch, values)
            _upsert_metrics(s, rows)
            for attempt in open_attempts:
                attempt.state, attempt.ended_at, attempt.exit_reason = AttemptState.COMPLETED, utcnow(), reason
            _complete_job(job)
            job.ingested_from_disk = True
            log.info("job %s: COMPLETED from its job directory (%d metrics)", job_hash, len(rows))
            return True

    def unfinished_ran(self, grid_name: str) -> list[tuple[str, str]]:
        """``(job_hash, job_dir)`` of a grid's jobs with at least one attempt that are not COMPLETED or
        lack final metrics (one query): the candidates for ingest."""
        with self.session(write=False) as s:
            has_final = exists().where(Metric.job_id == Job.id, Metric.epoch == FINAL_EPOCH)
            q = (select(Job.job_hash, Job.job_dir).join(GridJob, GridJob.job_id == Job.id)
                 .join(Grid, Grid.id == GridJob.grid_id)
                 .where(Grid.name == grid_name, Job.attempt_count > 0,
                        (Job.state != JobState.COMPLETED) | ~has_final))
            return [(h, d) for h, d in s.execute(q)]


# --- helpers ------------------------------------------------------------------------------------
def _dialect_insert(s: Session, model: Any) -> Any:
    """The dialect's ``INSERT`` (with ``ON CONFLICT``); the dialect's module imported when first used (the
    PostgreSQL one also loads its async drivers' modules: a tenth of a second a SQLite launch need not pay)."""
    if s.get_bind().dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    return insert(model.__table__)


def _upsert(s: Session, model: Any, rows: list[dict[str, Any]], keys: list[str], update_cols: list[str]) -> None:
    """``INSERT ... ON CONFLICT (keys) DO UPDATE SET update_cols`` for many rows (same SQL on both backends).

    Rows go as parameter sets of one cached statement (SQLAlchemy batches them into multi-row INSERTs).
    """
    if not rows:
        return
    stmt = _dialect_insert(s, model)
    stmt = stmt.on_conflict_do_update(index_elements=keys, set_={c: stmt.excluded[c] for c in update_cols})
    s.execute(stmt, rows)


def _insert_ignore(s: Session, model: Any, rows: list[dict[str, Any]], keys: list[str]) -> int:
    """``INSERT ... ON CONFLICT (keys) DO NOTHING`` for many rows; returns how many were new."""
    if not rows:
        return 0
    stmt = _dialect_insert(s, model).on_conflict_do_nothing(index_elements=keys)
    return len(s.execute(stmt.returning(model.__table__.c[keys[0]]), rows).all())


def _upsert_grid(s: Session, name: str, spec_json: str, spec_hash: str, source_path: str,
                 failure_budget: int) -> int:
    now = utcnow()
    _upsert(s, Grid, [{"name": name, "spec_json": spec_json, "spec_hash": spec_hash, "source_path": source_path,
                       "failure_budget": failure_budget, "created_at": now, "updated_at": now}],
            ["name"], ["spec_json", "spec_hash", "source_path", "failure_budget", "updated_at"])
    grid_id = s.scalar(select(Grid.id).where(Grid.name == name))
    assert grid_id is not None
    return grid_id


def _metric_rows(job_id: int, attempt_id: int | None, epoch: int, values: dict[str, float]) -> list[dict[str, Any]]:
    now = utcnow()
    return [{"job_id": job_id, "attempt_id": attempt_id, "epoch": int(epoch), "name": name,
             "value": _to_db(value), "created_at": now} for name, value in sorted(values.items())]


def _upsert_metrics(s: Session, rows: list[dict[str, Any]]) -> None:
    _upsert(s, Metric, rows, ["job_id", "epoch", "name"], ["value", "attempt_id"])


def _to_db(value: float) -> float | None:
    v = float(value)
    return None if math.isnan(v) else v


def _from_db(value: float | None) -> float:
    return math.nan if value is None else float(value)


def _parents_completed() -> Any:
    """SQL condition: the job (``Job``) has no parent that is not COMPLETED."""
    parent = Job.__table__.alias("parent")
    return ~exists().where(JobDep.child_id == Job.id, JobDep.parent_id == parent.c.id,
                           parent.c.state != JobState.COMPLETED)


def _complete_job(job: Job) -> None:
    job.state, job.last_error, job.updated_at = JobState.COMPLETED, None, utcnow()


def _close_attempt(
    job: Job, attempt: Attempt, state: str, *, exit_code: int | None, reason: str | None, log_tail: str | None,
) -> str:
    """Close ``attempt`` as ``state`` and move ``job`` (both locked by the caller); returns the job state."""
    if attempt.state != AttemptState.RUNNING:
        if state != AttemptState.COMPLETED or attempt.state == AttemptState.COMPLETED:
            return job.state
        log.warning("attempt %d was closed as %s but its worker completed: recording COMPLETED",
                    attempt.id, attempt.state)
        reason = f"completed after being marked {attempt.state}" + (f": {reason}" if reason else "")
    attempt.state, attempt.ended_at = state, utcnow()
    attempt.exit_code, attempt.exit_reason, attempt.log_tail = exit_code, reason, log_tail
    if job.state == JobState.COMPLETED:
        return job.state
    if state == AttemptState.COMPLETED:
        _complete_job(job)
        return job.state
    job.state = job_state_after(state)  # the lifecycle decides, the store records
    if job.state == JobState.FAILED:
        job.failure_count += 1
        job.last_error = _last_line(reason or log_tail or state)
    job.updated_at = utcnow()
    return job.state


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
        ingested_from_disk=j.ingested_from_disk,
    )


def _attempt_row(a: Attempt, job_hash: str) -> AttemptRow:
    return AttemptRow(
        id=a.id, job_hash=job_hash, number=a.number, state=a.state, backend=a.backend, backend_id=a.backend_id,
        host=a.host, pid=a.pid, started_at=a.started_at, ended_at=a.ended_at, exit_code=a.exit_code,
        exit_reason=a.exit_reason, log_path=a.log_path, usage=usage_of(a),
    )


__all__ = ["AttemptRow", "GridLock", "GridRow", "LockHolder", "JobRow", "MetricRow", "NewJob", "Store", "StoreError"]
