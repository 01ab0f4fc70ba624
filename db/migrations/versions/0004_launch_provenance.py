"""Launch provenance: the ``launches`` table; the code version of every job and attempt.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-06

- launches: one row per ``dlth-orch launch`` of a grid: the content hash of the code snapshot its workers
  run (``<workspace>/code/<code_hash>/``), git commit, dirty flag, the changed files and the diff itself,
  Python and package versions (JSON), host and command line. ix_launches_grid serves "a grid's launches";
  ix_launches_code "which launch made this snapshot" (show, the report).
- jobs.code_hash: the snapshot the job's next worker runs (set at launch; ``launch --code current``
  re-points jobs that have not started). NULL: recorded before 0004, the worker runs the live code.
- attempts.code_hash / attempts.node: the snapshot an attempt really ran (the worker reads it from the
  snapshot it imported) and the node it ran on (SLURM's node name, else the host name).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "launches",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("grid_id", sa.Integer(), nullable=False),
        sa.Column("code_hash", sa.String(length=32), nullable=False),
        sa.Column("code_mode", sa.String(length=16), nullable=False),
        sa.Column("git_commit", sa.String(length=64), nullable=True),
        sa.Column("git_dirty", sa.Boolean(), nullable=True),
        sa.Column("git_changed", sa.Text(), nullable=True),
        sa.Column("git_diff", sa.Text(), nullable=True),
        sa.Column("python", sa.String(length=64), nullable=False),
        sa.Column("packages_json", sa.Text(), nullable=False),
        sa.Column("host", sa.String(length=255), nullable=False),
        sa.Column("command_line", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(["grid_id"], ["grids.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_launches_grid", "launches", ["grid_id"], unique=False)
    op.create_index("ix_launches_code", "launches", ["code_hash"], unique=False)
    op.add_column("jobs", sa.Column("code_hash", sa.String(length=32), nullable=True))
    op.add_column("attempts", sa.Column("code_hash", sa.String(length=32), nullable=True))
    op.add_column("attempts", sa.Column("node", sa.String(length=255), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("attempts") as batch:
        batch.drop_column("node")
        batch.drop_column("code_hash")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("code_hash")
    op.drop_index("ix_launches_code", table_name="launches")
    op.drop_index("ix_launches_grid", table_name="launches")
    op.drop_table("launches")
