"""Ingest: complete jobs from the ``final_metrics.json`` their workers left on disk (:mod:`db.result_file`),
for jobs the database does not know as finished, so a finished job never reruns because a write failed.
Built on the store: reading job directories lives here; the store only records what was found.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from db.result_file import FINAL_METRICS_FILE, ResultFileError, read_final_metrics
from db.store import Store

log = logging.getLogger(__name__)


def ingest_job_dir(store: Store, job_hash: str, job_dir: str | os.PathLike[str]) -> bool:
    """Complete a job from ``<job_dir>/final_metrics.json`` if the database does not know it finished.

    Applies to a job that is not COMPLETED, or COMPLETED without final metrics (see
    :meth:`db.store.Store.complete_from_result`). Returns True if it changed anything (idempotent: False the
    second time). A missing file returns False; an unusable one is logged and returns False.
    """
    try:
        result = read_final_metrics(job_dir)
    except ResultFileError as exc:
        log.warning("not ingested: %s", exc)
        return False
    if result is None:
        return False
    path = Path(job_dir) / FINAL_METRICS_FILE
    if result.job_hash != job_hash:
        log.warning("not ingested: %s: job_hash: expected %s, got %s", path, job_hash, result.job_hash)
        return False
    return store.complete_from_result(job_hash, result, f"result ingested from {path}")


def ingest_finished(store: Store, grid_name: str) -> list[str]:
    """Ingest the job directories of a grid's jobs that ran but are not known as finished.

    Looks only at jobs with at least one attempt that are not COMPLETED or lack final metrics (one
    query, then one file check each). Returns the hashes of the jobs it completed.
    """
    return [h for h, d in store.unfinished_ran(grid_name) if Path(d).is_dir() and ingest_job_dir(store, h, d)]
