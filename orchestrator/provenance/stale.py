"""Results of an older code version: which completed jobs are stale, and resetting them to retrain.

A completed job's code is the snapshot its completing attempt ran; the grid's newest code is its latest
launch's snapshot. ``retry --stale`` moves a stale job's outputs to ``<job>/stale/<code>/`` (kept, not
deleted), clears its results and code pointer and makes it PENDING: the next ``launch --code current``
trains it again from scratch on the current code.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from db import AttemptState, JobRow, JobState, LaunchRow, Store
from specs.contract import (
    CHECKPOINT_FILE,
    EPOCH_METRICS_FILE,
    FINAL_METRICS_FILE,
    FINAL_WEIGHTS_FILE,
    MASK_FILE,
    PROBE_CHECKPOINT_FILE,
    REWIND_FILE,
    SPARSITY_FILE,
    STALE_DIR,
)

log = logging.getLogger(__name__)
LIVE = "live"  # the code of workers that ran the repository itself (before frozen code)
OUTPUTS = (CHECKPOINT_FILE, EPOCH_METRICS_FILE, FINAL_METRICS_FILE, FINAL_WEIGHTS_FILE, PROBE_CHECKPOINT_FILE,
           MASK_FILE, REWIND_FILE, SPARSITY_FILE)


def job_codes(store: Store, grid: str) -> dict[str, str]:
    """``{job_hash: code}`` of the grid's COMPLETED jobs: the snapshot their completing attempt ran."""
    done = [j.job_hash for j in store.jobs(grid, [JobState.COMPLETED])]
    completing = {a.job_hash: a.id for a in store.grid_attempts(grid) if a.state == AttemptState.COMPLETED}
    codes = store.attempt_codes(done)
    out = {}
    for h in done:
        by_id = {c.attempt_id: c.code_hash for c in codes.get(h, [])}
        out[h] = by_id.get(completing.get(h, -1)) or LIVE
    return out


def code_launches(store: Store, code_hashes: set[str]) -> dict[str, LaunchRow]:
    """``{code_hash: launch}`` describing each snapshot: its first launch from a clean tree (a commit alone
    reproduces it), else its first launch (commit + the recorded diff)."""
    out: dict[str, LaunchRow] = {}
    for launch in store.launches(code_hashes=sorted(code_hashes)) if code_hashes else []:
        have = out.get(launch.code_hash)
        if have is None or (have.git_dirty is not False and launch.git_dirty is False):
            out[launch.code_hash] = launch
    return out


def newest_code(store: Store, grid: str) -> str | None:
    """The snapshot of the grid's latest launch (None: launched before frozen code)."""
    launches = store.launches(grid)
    return launches[-1].code_hash if launches else None


def stale_jobs(store: Store, grid: str) -> list[JobRow]:
    """The grid's COMPLETED jobs whose results come from another code version than its newest."""
    newest = newest_code(store, grid)
    if newest is None:
        return []
    codes = job_codes(store, grid)
    return [j for j in store.jobs(grid, [JobState.COMPLETED]) if codes.get(j.job_hash, newest) != newest]


def archive_outputs(job_dir: Path, code: str) -> Path:
    """Move a job's outputs into ``<job_dir>/stale/<code>/`` (the spec and manifest stay); returns it."""
    dest = job_dir / STALE_DIR / code
    dest.mkdir(parents=True, exist_ok=True)
    for name in OUTPUTS:
        if (job_dir / name).exists():
            shutil.move(str(job_dir / name), str(dest / name))
    return dest


def reset_stale(store: Store, grid: str, only: set[str] | None = None) -> list[JobRow]:
    """Archive the stale jobs' outputs (of ``only``, when given), then reopen them (PENDING, no results, no
    code pointer)."""
    jobs = [j for j in stale_jobs(store, grid) if only is None or j.job_hash in only]
    codes = job_codes(store, grid)
    for j in jobs:
        archive_outputs(Path(j.job_dir), codes[j.job_hash])
    store.reopen_completed([j.job_hash for j in jobs])
    log.info("%d stale jobs of %s reset to retrain", len(jobs), grid)
    return jobs
