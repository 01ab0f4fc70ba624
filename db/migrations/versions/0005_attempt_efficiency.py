"""Attempt efficiency: what each attempt used of what it was given.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-06

- attempts.cpu_time_s: CPU seconds (user + system) of rank 0's worker and its finished children.
- attempts.cpu_util: cpu_time_s / (wall seconds x cores allocated to the rank), 0..1 (can pass 1 briefly).
- attempts.max_rss_mb: peak resident memory of rank 0's worker (or SLURM's MaxRSS) in MiB.
- attempts.gpu_util: mean GPU utilisation (0..1) of the job's own device, sampled at epoch ends; NULL
  without a GPU.
- attempts.gpu_mem_peak_mb: peak GPU memory allocated by torch, MiB; NULL without a GPU.
- attempts.usage_source: "worker" (measured in the worker) or "sacct" (SLURM's accounting).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | None = None
depends_on: str | None = None

COLUMNS = ("cpu_time_s", "cpu_util", "max_rss_mb", "gpu_util", "gpu_mem_peak_mb")


def upgrade() -> None:
    for name in COLUMNS:
        op.add_column("attempts", sa.Column(name, sa.Float(), nullable=True))
    op.add_column("attempts", sa.Column("usage_source", sa.String(length=16), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("attempts") as batch:
        batch.drop_column("usage_source")
        for name in reversed(COLUMNS):
            batch.drop_column(name)
