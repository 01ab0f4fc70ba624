"""SQLAlchemy 2 models: grids, jobs (shared across grids by content hash), attempts, metrics."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import (
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    false,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from specs.lifecycle import AttemptState, JobState

# epoch value used for a job's final metrics (after the last epoch's evaluation)
FINAL_EPOCH = -1


def utcnow() -> datetime:
    """Timezone-naive UTC now (stored the same way on SQLite and PostgreSQL)."""
    return datetime.now(UTC).replace(tzinfo=None)


class Base(DeclarativeBase):
    pass


class Grid(Base):
    __tablename__ = "grids"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    spec_hash: Mapped[str] = mapped_column(String(32))
    spec_json: Mapped[str] = mapped_column(Text)
    source_path: Mapped[str] = mapped_column(Text, default="")
    failure_budget: Mapped[int] = mapped_column(Integer, default=2)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    members: Mapped[list[GridJob]] = relationship(back_populates="grid", cascade="all, delete-orphan")


class Job(Base):
    __tablename__ = "jobs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_hash: Mapped[str] = mapped_column(String(32), unique=True)
    spec_json: Mapped[str] = mapped_column(Text)
    method: Mapped[str] = mapped_column(String(64))
    config_key: Mapped[str] = mapped_column(String(32))
    seed: Mapped[int] = mapped_column(Integer)
    job_dir: Mapped[str] = mapped_column(Text)
    state: Mapped[str] = mapped_column(String(16), default=JobState.PENDING)
    attempt_count: Mapped[int] = mapped_column(Integer, default=0)
    failure_count: Mapped[int] = mapped_column(Integer, default=0)
    backend: Mapped[str | None] = mapped_column(String(32), nullable=True)
    backend_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    heartbeat_at: Mapped[datetime | None] = mapped_column(nullable=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    # COMPLETED from the job directory's final_metrics.json because the worker could not tell the DB (0002)
    ingested_from_disk: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    # the code snapshot the job's next worker runs (0004); NULL: recorded before 0004, runs the live code
    code_hash: Mapped[str | None] = mapped_column(String(32), nullable=True)

    attempts: Mapped[list[Attempt]] = relationship(back_populates="job", cascade="all, delete-orphan")

    __table_args__ = (Index("ix_jobs_state", "state"), Index("ix_jobs_config_key", "config_key"))


class GridJob(Base):
    """Membership of a job in a grid, with the grid's own labels for it."""

    __tablename__ = "grid_jobs"

    grid_id: Mapped[int] = mapped_column(ForeignKey("grids.id", ondelete="CASCADE"), primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    subset_name: Mapped[str] = mapped_column(String(200))
    config_name: Mapped[str] = mapped_column(String(200))

    grid: Mapped[Grid] = relationship(back_populates="members")
    job: Mapped[Job] = relationship()

    __table_args__ = (
        Index("ix_grid_jobs_job", "job_id"),
        Index("ix_grid_jobs_grid_subset", "grid_id", "subset_name"),
    )


class JobDep(Base):
    """An edge of the job graph: ``child_id`` may start only once ``parent_id`` is COMPLETED (0003)."""

    __tablename__ = "job_deps"

    child_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    parent_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)

    __table_args__ = (Index("ix_job_deps_parent", "parent_id"),)


class Attempt(Base):
    __tablename__ = "attempts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    number: Mapped[int] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(16), default=AttemptState.RUNNING)
    backend: Mapped[str] = mapped_column(String(32), default="local")
    backend_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    host: Mapped[str | None] = mapped_column(String(255), nullable=True)
    pid: Mapped[int | None] = mapped_column(Integer, nullable=True)
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    ended_at: Mapped[datetime | None] = mapped_column(nullable=True)
    exit_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    exit_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    log_path: Mapped[str | None] = mapped_column(Text, nullable=True)
    log_tail: Mapped[str | None] = mapped_column(Text, nullable=True)
    code_hash: Mapped[str | None] = mapped_column(String(32), nullable=True)  # the snapshot it ran (0004)
    node: Mapped[str | None] = mapped_column(String(255), nullable=True)  # SLURM node name, else host (0004)
    # what the attempt used (0005): CPU seconds and utilisation per allocated core, peak memory, GPU use
    cpu_time_s: Mapped[float | None] = mapped_column(Float, nullable=True)
    cpu_util: Mapped[float | None] = mapped_column(Float, nullable=True)
    max_rss_mb: Mapped[float | None] = mapped_column(Float, nullable=True)
    gpu_util: Mapped[float | None] = mapped_column(Float, nullable=True)
    gpu_mem_peak_mb: Mapped[float | None] = mapped_column(Float, nullable=True)
    usage_source: Mapped[str | None] = mapped_column(String(16), nullable=True)  # "worker" or "sacct"

    job: Mapped[Job] = relationship(back_populates="attempts")

    __table_args__ = (
        UniqueConstraint("job_id", "number", name="uq_attempt_number"),
        Index("ix_attempts_state", "state"),
        Index("ix_attempts_job_state", "job_id", "state"),
    )


class Launch(Base):
    """One ``dlth-orch launch`` of a grid: the code snapshot its workers run and where it came from (0004)."""

    __tablename__ = "launches"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    grid_id: Mapped[int] = mapped_column(ForeignKey("grids.id", ondelete="CASCADE"))
    code_hash: Mapped[str] = mapped_column(String(32))
    code_mode: Mapped[str] = mapped_column(String(16))  # "launch" (frozen) or "current" (re-pointed)
    git_commit: Mapped[str | None] = mapped_column(String(64), nullable=True)
    git_dirty: Mapped[bool | None] = mapped_column(Boolean, nullable=True)
    git_changed: Mapped[str | None] = mapped_column(Text, nullable=True)  # one changed file a line
    git_diff: Mapped[str | None] = mapped_column(Text, nullable=True)
    python: Mapped[str] = mapped_column(String(64))
    packages_json: Mapped[str] = mapped_column(Text)
    host: Mapped[str] = mapped_column(String(255))
    command_line: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    __table_args__ = (Index("ix_launches_grid", "grid_id"), Index("ix_launches_code", "code_hash"))


class AdaptiveLook(Base):
    """One look of an adaptive study (0007): what it judged, added, dropped, and why it stopped."""

    __tablename__ = "adaptive_looks"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    grid_id: Mapped[int] = mapped_column(ForeignKey("grids.id", ondelete="CASCADE"))
    number: Mapped[int] = mapped_column(Integer)  # 1, 2, ... (one row per look: the look's identity)
    look_json: Mapped[str] = mapped_column(Text)  # orchestrator.adaptive.policy.Look as JSON
    stop: Mapped[str | None] = mapped_column(String(32), nullable=True)  # why the study stopped (None: goes on)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    __table_args__ = (UniqueConstraint("grid_id", "number", name="uq_adaptive_looks_grid_number"),)


class Metric(Base):
    __tablename__ = "metrics"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    attempt_id: Mapped[int | None] = mapped_column(ForeignKey("attempts.id", ondelete="SET NULL"), nullable=True)
    epoch: Mapped[int] = mapped_column(Integer)  # FINAL_EPOCH for final metrics
    name: Mapped[str] = mapped_column(String(64))
    value: Mapped[float | None] = mapped_column(Float, nullable=True)  # NULL = NaN (0002)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    # uq_metric's index also serves lookups by (job_id) and (job_id, epoch): no separate index needed
    __table_args__ = (UniqueConstraint("job_id", "epoch", "name", name="uq_metric"),)


class Meta(Base):
    """Facts about the database itself, e.g. ``orchestrator_host`` (for the SQLite network-FS check) (0002)."""

    __tablename__ = "dlth_meta"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
