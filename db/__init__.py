"""Persistence: SQLAlchemy models and the store API (the only module that speaks SQL)."""

from db.engine import StoreError, default_url, workspace_dir
from db.models import FINAL_EPOCH, AttemptState, JobState
from db.store import AttemptRow, GridRow, JobRow, NewJob, Store

__all__ = [
    "FINAL_EPOCH",
    "AttemptRow",
    "AttemptState",
    "GridRow",
    "JobRow",
    "JobState",
    "NewJob",
    "Store",
    "StoreError",
    "default_url",
    "workspace_dir",
]
