"""``launch``: grid file -> validated spec -> jobs recorded in the database -> handed to a backend."""

from __future__ import annotations

import fcntl
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from db import JobRow, JobState, NewJob, Store, workspace_dir
from orchestrator.expand import ExpandedJob, expand, resolve_subsets
from orchestrator.grid import GridSpec
from orchestrator.workspace import job_dir_for, write_job_file, write_manifest
from subsets import DatasetMeta

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RecordResult:
    grid_id: int
    new: int
    known: int
    jobs: list[ExpandedJob]


def ensure_dataset(grid: GridSpec) -> DatasetMeta:
    """Load the grid's dataset, building a builtin one first when it is missing and ``prepare`` names it."""
    root = Path(grid.dataset_root)
    if not (root / "meta.json").is_file() and grid.dataset_prepare == "digits":
        from workers.data.builtin import prepare_digits  # data preparation lives in the data layer

        log.info("preparing the digits dataset in %s", root)
        prepare_digits(root, image_size=int(grid.train.get("image_size", 32)))
    return DatasetMeta.load(root)


def record_grid(store: Store, grid: GridSpec, meta: DatasetMeta) -> RecordResult:
    """Expand ``grid`` and record its jobs (idempotent): job files and subset manifests on disk, rows in one
    transaction."""
    manifests = resolve_subsets(grid, meta)
    jobs = expand(grid, meta, manifests)
    root = workspace_dir()
    manifest_files = {name: write_manifest(m, root) for name, m in manifests.items()}
    rows = []
    for ej in jobs:
        h = ej.spec.job_hash
        job_dir = job_dir_for(h, root)
        write_job_file(ej.spec, job_dir, manifest_files[ej.subset_name])
        rows.append(NewJob(job_hash=h, spec_json=ej.spec.to_json(), method=ej.spec.method,
                           config_key=ej.spec.config_key, seed=ej.spec.seed, job_dir=str(job_dir),
                           subset_name=ej.subset_name, config_name=ej.config_name))
    grid_id = store.upsert_grid(grid.name, grid.to_json(), grid.spec_hash, str(grid.path), grid.failure_budget)
    new, known = store.add_jobs(grid_id, rows)
    return RecordResult(grid_id, new, known, jobs)


def runnable_jobs(store: Store, grid_name: str, failure_budget: int, *, include_queued: bool) -> list[JobRow]:
    """Jobs to hand to a backend: PENDING, FAILED within the failure budget, and (local) stale QUEUED."""
    states = [JobState.PENDING, JobState.FAILED] + ([JobState.QUEUED] if include_queued else [])
    out = []
    for j in store.jobs(grid_name, states):
        if j.state == JobState.FAILED and j.failure_count > failure_budget:
            continue
        out.append(j)
    return out


@contextmanager
def grid_lock(grid_name: str) -> Iterator[bool]:
    """An exclusive per-grid lock for local launchers; yields False if another launcher holds it."""
    lock_dir = workspace_dir() / "locks"
    lock_dir.mkdir(parents=True, exist_ok=True)
    with open(lock_dir / f"{grid_name}.lock", "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        fh.seek(0)
        fh.truncate()
        fh.write(str(os.getpid()))
        fh.flush()
        try:
            yield True
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
