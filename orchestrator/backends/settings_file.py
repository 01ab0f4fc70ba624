"""A grid's one worker settings file (mode 0600: it holds the database URL, maybe a password): written
before a backend starts the grid's workers, removed as soon as none of the grid's jobs can start a worker
any more (the grid's last job ended, or ``cancel``). Backends call :func:`write_grid_settings` when they
hand jobs over and :func:`release_grid_settings` when they learn that jobs ended."""

from __future__ import annotations

import logging
from pathlib import Path

from db import Store
from orchestrator.backends.slurm_profile import slurm_db_id
from specs.settings import WorkerSettings, env_settings, grid_settings_file, release_if_done

log = logging.getLogger(__name__)


def settings_path(store: Store, grid_name: str) -> Path:
    """Where the worker settings of ``grid_name`` (of this database) live."""
    return grid_settings_file(f"{slurm_db_id(store)}/{grid_name}")


def write_grid_settings(store: Store, grid_name: str, db_url: str, backend: str) -> Path:
    """Write the grid's settings file (0600, atomically) and return it."""
    settings = WorkerSettings(db_url=db_url, backend=backend, heartbeat_s=env_settings().heartbeat_s, grid=grid_name)
    return settings.write(settings_path(store, grid_name))


def release_grid_settings(store: Store, grid_name: str) -> bool:
    """Remove the grid's settings file if none of its jobs may start a worker any more; ``True`` if removed."""
    removed = release_if_done(settings_path(store, grid_name), store, grid_name)
    if removed:
        log.info("grid %s: no job left to start: its worker settings file is removed", grid_name)
    return removed


def release_finished_grids(store: Store) -> None:
    """:func:`release_grid_settings` for every grid of the database (after ``cancel``, which names jobs)."""
    for grid in store.list_grids():
        release_grid_settings(store, grid.name)
