"""The job graph: ``job_deps`` (child, parent) edges; jobs may be WAITING or PARENT_FAILED.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-30

- job_deps: a child job starts only once all its parents are COMPLETED (primary key (child_id, parent_id)
  serves "the parents of a job"; ix_job_deps_parent serves "the children of a job").
- jobs.state gains the values WAITING and PARENT_FAILED (a String(16) column: no schema change). A
  downgrade turns them back into PENDING and CANCELLED, the nearest states 0002 knows.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "job_deps",
        sa.Column("child_id", sa.Integer(), nullable=False),
        sa.Column("parent_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["child_id"], ["jobs.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["parent_id"], ["jobs.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("child_id", "parent_id"),
    )
    op.create_index("ix_job_deps_parent", "job_deps", ["parent_id"], unique=False)


def downgrade() -> None:
    op.execute("UPDATE jobs SET state = 'PENDING' WHERE state = 'WAITING'")
    op.execute("UPDATE jobs SET state = 'CANCELLED' WHERE state = 'PARENT_FAILED'")
    op.drop_index("ix_job_deps_parent", table_name="job_deps")
    op.drop_table("job_deps")
