"""Results on disk win: ingest job directories that finished while the database was away."""

from __future__ import annotations

import logging

from db import Store
from db.ingest import ingest_finished

log = logging.getLogger(__name__)


def ingest_finished_dirs(store: Store, grid_name: str) -> int:
    """Record the results of jobs whose directory holds final metrics the DB lacks; returns how many."""
    done = ingest_finished(store, grid_name)
    for h in done:
        log.info("ingested the result of %s from its job directory", h)
    return len(done)
