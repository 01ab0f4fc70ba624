"""Results on disk win: ingest job directories that finished while the database was away."""

from __future__ import annotations

import logging
from pathlib import Path

from db import JobState, Store

log = logging.getLogger(__name__)
FINAL_METRICS_FILE = "final_metrics.json"  # written by workers.reporting before the DB hears of it


def ingest_finished_dirs(store: Store, grid_name: str) -> int:
    """Record the results of jobs whose directory holds final metrics the DB lacks; returns how many."""
    n = 0
    for j in store.jobs(grid_name):
        finished = (Path(j.job_dir) / FINAL_METRICS_FILE).is_file()
        if j.state != JobState.COMPLETED and finished and store.ingest_job_dir(j.job_hash, j.job_dir):
            log.info("ingested the result of %s from %s", j.job_hash, j.job_dir)
            n += 1
    return n
