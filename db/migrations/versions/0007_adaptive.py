"""Adaptive studies: the ``adaptive_looks`` table.

Revision ID: 0007
Revises: 0005
Create Date: 2026-12-06

- adaptive_looks: one row per look of an adaptive study (``[adaptive]`` in the grid file): the look as
  JSON (per-subset judgements, the (subset, configuration) pairs given one more seed, the subsets dropped,
  the per-look confidence, device-hours so far) and the stopping reason. (grid_id, number) is unique: a
  look is recorded once, whoever runs it (``launch --wait`` or ``dlth-orch advance``).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0005"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "adaptive_looks",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("grid_id", sa.Integer(), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("look_json", sa.Text(), nullable=False),
        sa.Column("stop", sa.String(length=32), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(["grid_id"], ["grids.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("grid_id", "number", name="uq_adaptive_looks_grid_number"),
    )


def downgrade() -> None:
    op.drop_table("adaptive_looks")
