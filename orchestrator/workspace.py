"""The workspace on disk: one directory per job (spec, checkpoint, metrics, logs), keyed by job hash."""

from __future__ import annotations

import os
from pathlib import Path

from db import workspace_dir
from specs.job import JobSpec
from subsets.atomic import write_text_atomic

JOB_FILE = "job.json"


def job_dir_for(job_hash: str, root: Path | None = None) -> Path:
    """``<workspace>/jobs/<hash[:2]>/<hash>``: stable, shared by every grid that contains the job."""
    root = root or workspace_dir()
    return root / "jobs" / job_hash[:2] / job_hash


def write_job_file(spec: JobSpec, job_dir: Path) -> Path:
    """Write ``job.json`` (atomically) unless it already holds this job; return its path."""
    job_dir.mkdir(parents=True, exist_ok=True)
    (job_dir / "logs").mkdir(exist_ok=True)
    path = job_dir / JOB_FILE
    text = spec.to_json()
    if path.is_file() and path.read_text() == text:
        return path
    return write_text_atomic(path, text)


def log_tail(path: str | Path | None, lines: int = 20) -> str:
    """The last ``lines`` lines of a log file ('' if there is none)."""
    if not path or not Path(path).is_file():
        return ""
    with open(path, "rb") as fh:
        fh.seek(0, os.SEEK_END)
        size = fh.tell()
        fh.seek(max(0, size - 16384))
        data = fh.read().decode(errors="replace")
    return "\n".join(data.splitlines()[-lines:])
