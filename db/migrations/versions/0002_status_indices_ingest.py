"""Indices for what status/report filter by; jobs.ingested_from_disk; the dlth_meta table.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22

- ix_jobs_config_key: report groups a grid's jobs by configuration.
- ix_grid_jobs_grid_subset: status/report list a grid's jobs ordered and filtered by subset.
- ix_attempts_job_state: "the open attempt of this job" (ingest, reconciliation).
- jobs.ingested_from_disk: the job was completed from its final_metrics.json, not by its worker.
- dlth_meta: key/value facts about the database (the orchestrator's host, for the SQLite check).
- metrics.value nullable: NaN is stored as NULL on both backends (SQLite turns NaN into NULL, which the
  NOT NULL column refused: a diverged run's NaN loss could not be recorded).
metrics(job_id, epoch) needs no index of its own: uq_metric (job_id, epoch, name) already is one.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.add_column("jobs", sa.Column("ingested_from_disk", sa.Boolean(), server_default=sa.false(),
                                    nullable=False))
    with op.batch_alter_table("metrics") as batch:
        batch.alter_column("value", existing_type=sa.Float(), nullable=True)
    op.create_index("ix_jobs_config_key", "jobs", ["config_key"], unique=False)
    op.create_index("ix_grid_jobs_grid_subset", "grid_jobs", ["grid_id", "subset_name"], unique=False)
    op.create_index("ix_attempts_job_state", "attempts", ["job_id", "state"], unique=False)
    op.create_table(
        "dlth_meta",
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("key"),
    )


def downgrade() -> None:
    op.drop_table("dlth_meta")
    op.drop_index("ix_attempts_job_state", table_name="attempts")
    op.drop_index("ix_grid_jobs_grid_subset", table_name="grid_jobs")
    op.drop_index("ix_jobs_config_key", table_name="jobs")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("ingested_from_disk")
    op.execute("DELETE FROM metrics WHERE value IS NULL")
    with op.batch_alter_table("metrics") as batch:
        batch.alter_column("value", existing_type=sa.Float(), nullable=False)
