"""Store methods for launch provenance (a mixin of :class:`db.store.Store`, schema 0004).

A launch row says which code snapshot a launch froze and where it came from; ``jobs.code_hash`` points
each job at the snapshot its next worker runs; ``attempts.code_hash``/``node`` say what an attempt really
ran, and where. A job is re-pointed only while it has not started (no attempt) and never while RUNNING or
COMPLETED: one job's attempts run one code version, retries and requeues included.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import delete, or_, select, update

from db.mixin import StoreMixin
from db.models import Attempt, Grid, GridJob, Job, JobState, Launch, Metric, utcnow

_CHUNK = 500
#: states of a job that will not run again (its code pointer is history, never moved)
_SETTLED = (JobState.RUNNING, JobState.COMPLETED)


@dataclass(frozen=True)
class NewLaunch:
    """What a launch records about itself (see :mod:`orchestrator.provenance`)."""

    code_hash: str
    code_mode: str  # "launch" or "current"
    git_commit: str | None
    git_dirty: bool | None
    git_changed: tuple[str, ...]
    git_diff: str
    python: str
    packages: dict[str, str | None]
    host: str
    command_line: str


@dataclass(frozen=True)
class LaunchRow(NewLaunch):
    id: int = 0
    grid_name: str = ""
    created_at: datetime = field(default_factory=utcnow)


@dataclass(frozen=True)
class AttemptCode:
    """The code version and node of one attempt (``code_hash`` None: the live code, before 0004)."""

    attempt_id: int
    code_hash: str | None
    node: str | None


class LaunchStore(StoreMixin):
    """Launch provenance: mixed into :class:`db.store.Store` (which provides ``session``)."""

    def record_launch(self, grid_name: str, launch: NewLaunch) -> int:
        """Record one launch of ``grid_name`` (already upserted); returns its id."""
        with self.session() as s:
            grid_id = s.scalar(select(Grid.id).where(Grid.name == grid_name))
            if grid_id is None:
                raise KeyError(f"grid {grid_name} not found")
            row = Launch(grid_id=grid_id, code_hash=launch.code_hash, code_mode=launch.code_mode,
                         git_commit=launch.git_commit, git_dirty=launch.git_dirty,
                         git_changed="\n".join(launch.git_changed), git_diff=launch.git_diff,
                         python=launch.python, packages_json=json.dumps(launch.packages, sort_keys=True),
                         host=launch.host, command_line=launch.command_line, created_at=utcnow())
            s.add(row)
            s.flush()
            return row.id

    def launches(self, grid_name: str | None = None, code_hashes: Sequence[str] | None = None) -> list[LaunchRow]:
        """Launches of a grid (or of every grid), optionally only those of ``code_hashes``; oldest first."""
        with self.session(write=False) as s:
            q = select(Launch, Grid.name).join(Grid, Grid.id == Launch.grid_id).order_by(Launch.id)
            if grid_name is not None:
                q = q.where(Grid.name == grid_name)
            if code_hashes is not None:
                q = q.where(Launch.code_hash.in_(list(code_hashes)))
            return [_launch_row(r, name) for r, name in s.execute(q)]

    def point_code(self, grid_name: str, code_hash: str, *, repoint: bool) -> list[str]:
        """Point the grid's jobs without a code version at ``code_hash`` (never RUNNING or COMPLETED ones);
        ``repoint``: also the jobs that have not started (no attempt). Returns the hashes moved."""
        with self.session() as s:
            ids = select(GridJob.job_id).join(Grid, Grid.id == GridJob.grid_id).where(Grid.name == grid_name)
            unset = Job.code_hash.is_(None)
            movable = or_(unset, Job.attempt_count == 0) if repoint else unset
            moved = s.execute(
                update(Job).where(Job.id.in_(ids), Job.state.not_in(_SETTLED), movable,
                                  or_(unset, Job.code_hash != code_hash))
                .values(code_hash=code_hash, updated_at=utcnow()).returning(Job.job_hash))
            return sorted(h for (h,) in moved)

    def forget_code(self, job_hashes: Sequence[str]) -> None:
        """Clear the code pointer of ``job_hashes`` (jobs reset to retrain: the next launch points them)."""
        with self.session() as s:
            for chunk in _chunks(job_hashes):
                s.execute(update(Job).where(Job.job_hash.in_(chunk), Job.state.not_in(_SETTLED)).values(code_hash=None))

    def reopen_completed(self, job_hashes: Sequence[str]) -> int:
        """COMPLETED -> PENDING for a retrain the user asked for (``retry --stale``: results of old code):
        their metrics are deleted and their code pointer cleared. The only way out of COMPLETED."""
        moved = 0
        with self.session() as s:
            for chunk in _chunks(sorted(job_hashes)):
                ids = list(s.scalars(select(Job.id).where(Job.job_hash.in_(chunk), Job.state == JobState.COMPLETED)
                                     .with_for_update()))
                if not ids:
                    continue
                s.execute(delete(Metric).where(Metric.job_id.in_(ids)))
                res = s.execute(update(Job).where(Job.id.in_(ids)).values(
                    state=JobState.PENDING, code_hash=None, ingested_from_disk=False, updated_at=utcnow()))
                moved += int(res.rowcount or 0)
        return moved

    def code_of(self, job_hashes: Sequence[str]) -> dict[str, str | None]:
        """``{job_hash: code_hash}``: the snapshot each job's next worker runs (None: the live code)."""
        out: dict[str, str | None] = {}
        with self.session(write=False) as s:
            for chunk in _chunks(job_hashes):
                q = select(Job.job_hash, Job.code_hash).where(Job.job_hash.in_(chunk))
                out.update((h, c) for h, c in s.execute(q))
        return out

    def set_attempt_code(self, attempt_id: int, code_hash: str | None, node: str | None) -> None:
        """Record the code version an attempt runs and the node it runs on."""
        with self.session() as s:
            s.execute(update(Attempt).where(Attempt.id == attempt_id).values(code_hash=code_hash, node=node))

    def attempt_codes(self, job_hashes: Sequence[str]) -> dict[str, list[AttemptCode]]:
        """``{job_hash: [AttemptCode, ...]}`` by attempt number (jobs without attempts are absent)."""
        out: dict[str, list[AttemptCode]] = {}
        with self.session(write=False) as s:
            for chunk in _chunks(job_hashes):
                q = (select(Job.job_hash, Attempt.id, Attempt.code_hash, Attempt.node)
                     .join(Job, Job.id == Attempt.job_id)
                     .where(Job.job_hash.in_(chunk)).order_by(Job.job_hash, Attempt.number))
                for h, aid, code, node in s.execute(q):
                    out.setdefault(h, []).append(AttemptCode(aid, code, node))
        return out


def _launch_row(r: Launch, grid_name: str) -> LaunchRow:
    try:
        packages: dict[str, Any] = json.loads(r.packages_json)
    except ValueError:
        packages = {}
    return LaunchRow(code_hash=r.code_hash, code_mode=r.code_mode, git_commit=r.git_commit, git_dirty=r.git_dirty,
                     git_changed=tuple(filter(None, (r.git_changed or "").splitlines())), git_diff=r.git_diff or "",
                     python=r.python, packages=packages, host=r.host, command_line=r.command_line, id=r.id,
                     grid_name=grid_name, created_at=r.created_at)


def _chunks(items: Sequence[str]) -> Iterator[list[str]]:
    for i in range(0, len(items), _CHUNK):
        yield list(items[i:i + _CHUNK])
