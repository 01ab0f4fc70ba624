"""Persistence: SQLAlchemy models, migrations and the store API (the only module that speaks SQL)."""

from db.engine import StoreError, StoreUnavailable, default_url, require_database, workspace_dir
from db.launches import AttemptCode, LaunchRow, NewLaunch
from db.models import FINAL_EPOCH, AttemptState, JobState
from db.result_file import FINAL_METRICS_FILE, FinalResult, ResultFileError, read_final_metrics, write_final_metrics
from db.store import AttemptRow, GridRow, JobRow, MetricRow, NewJob, Store

__all__ = [
    "FINAL_EPOCH",
    "FINAL_METRICS_FILE",
    "AttemptCode",
    "AttemptRow",
    "AttemptState",
    "FinalResult",
    "GridRow",
    "JobRow",
    "JobState",
    "LaunchRow",
    "MetricRow",
    "NewJob",
    "NewLaunch",
    "ResultFileError",
    "Store",
    "StoreError",
    "StoreUnavailable",
    "default_url",
    "read_final_metrics",
    "require_database",
    "workspace_dir",
    "write_final_metrics",
]
