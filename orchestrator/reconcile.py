"""Results on disk win: ingest job directories that finished while the database was away."""

from __future__ import annotations

import logging

from db import Store

log = logging.getLogger(__name__)


def ingest_finished_dirs(store: Store, grid_name: str) -> int:
    """Record the results of jobs whose directory holds final metrics the DB lacks; returns how many."""
    done = store.ingest_finished(grid_name)
    for h in done:
        log.info("ingested the result of %s from its job directory", h)
    return len(done)
