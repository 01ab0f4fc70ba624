"""``dlth-orch gc``: remove what finished jobs no longer need, never what a job yet to run will load.

Of a COMPLETED job, by policy (``keep``):

- ``final`` (default): its per-epoch checkpoints (``checkpoint.pt``, the previous copy, the ranks' RNG
  states, the linear probe's checkpoint); its final weights and lottery ticket (mask, rewind point) stay,
  so a chain extended later by more levels still finds them.
- ``best``: as ``final``, and the final weights of every seed but the best one (the grid's report metric)
  of each subset x configuration.
- ``none``: its checkpoints, final weights, mask and rewind point (metrics, manifests and logs stay).

Never removed: the final weights, mask and rewind point of any ancestor of a job that is not COMPLETED in
any grid of the database (waiting, pending, queued, running, or failed and retryable) — the job graph's
edges, and any job hash a job's spec names (``init``, ``lottery`` start and rewind job).
"""

from __future__ import annotations

import json
import logging
import re
import shutil
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from db import JobRow, JobState, Store
from orchestrator.storage.kinds import CHECKPOINTS, FINAL_WEIGHTS, MASKS, job_files
from specs.contract import FINAL_WEIGHTS_FILE, MASK_FILE, REWIND_FILE, RNG_DIR

log = logging.getLogger(__name__)
HASH_RE = re.compile(r'"([0-9a-f]{16})"')
LOADED_BY_CHILDREN = (FINAL_WEIGHTS_FILE, MASK_FILE, REWIND_FILE)


@dataclass
class GcPlan:
    """Files to remove, and how many a job still to run keeps alive."""

    remove: list[tuple[Path, str, int]] = field(default_factory=list)  # path, kind, bytes
    protected: list[Path] = field(default_factory=list)

    @property
    def bytes(self) -> int:
        return sum(n for _, _, n in self.remove)


def protected_files(store: Store) -> set[Path]:
    """The artifacts (final weights, mask, rewind point) of every ancestor of a job not yet COMPLETED."""
    jobs: dict[str, JobRow] = {}
    parents: dict[str, set[str]] = defaultdict(set)
    for g in store.list_grids():
        for j in store.jobs(g.name):
            jobs[j.job_hash] = j
        for child, ps in store.grid_deps(g.name).items():
            parents[child].update(ps)
    for h, j in jobs.items():  # the hashes a spec names (init.job, lottery start/rewind job, depends_on)
        parents[h].update(x for x in HASH_RE.findall(j.spec_json) if x in jobs and x != h)
    todo = [h for h, j in jobs.items() if j.state != JobState.COMPLETED]
    needed: set[str] = set()
    while todo:
        for p in parents.get(todo.pop(), ()):
            if p not in needed:
                needed.add(p)
                todo.append(p)
    return {Path(jobs[h].job_dir) / name for h in needed for name in LOADED_BY_CHILDREN}


def _best(store: Store, grid_name: str, done: list[JobRow]) -> set[str]:
    """The best seed of each subset x configuration by the grid's report metric (higher is better)."""
    grid = store.get_grid(grid_name)
    metric = (json.loads(grid.spec_json).get("report") or {}).get("metric", "knn_top1") if grid else "knn_top1"
    finals = store.final_metrics(grid_name)
    best: dict[tuple[str, str], tuple[float, str]] = {}
    for j in done:
        value = finals.get(j.job_hash, {}).get(metric)
        score = float("-inf") if value is None else float(value)
        key = (j.subset_name, j.config_name)
        if key not in best or score > best[key][0]:
            best[key] = (score, j.job_hash)
    return {h for _, h in best.values()}


def plan_gc(store: Store, grid_name: str, keep: str, only: set[str] | None = None) -> GcPlan:
    """What ``gc --keep KEEP`` would remove of ``grid_name``'s COMPLETED jobs (optionally only ``only``)."""
    if keep not in ("final", "best", "none"):
        raise ValueError(f"keep: expected final, best or none, got {keep!r}")
    done = [j for j in store.jobs(grid_name, [JobState.COMPLETED]) if only is None or j.job_hash in only]
    best = _best(store, grid_name, store.jobs(grid_name, [JobState.COMPLETED])) if keep == "best" else set()
    protected = protected_files(store) if done else set()
    plan = GcPlan()
    for j in done:
        root = Path(j.job_dir)
        for path, kind in job_files(root):
            name = path.relative_to(root).parts[0]
            goes = (kind == CHECKPOINTS
                    or (kind == FINAL_WEIGHTS and (keep == "none" or (keep == "best" and j.job_hash not in best)))
                    or (kind == MASKS and name in (MASK_FILE, REWIND_FILE) and keep == "none"))
            if not goes:
                continue
            if path in protected:
                plan.protected.append(path)
                continue
            try:
                plan.remove.append((path, kind, path.stat().st_size))
            except OSError:
                continue
    return plan


def apply(plan: GcPlan) -> int:
    """Remove the planned files (and emptied RNG folders); returns the bytes freed."""
    freed = 0
    for path, _, size in plan.remove:
        try:
            path.unlink()
            freed += size
        except FileNotFoundError:
            continue
        rng = path.parent
        if rng.name == RNG_DIR and not any(rng.iterdir()):
            shutil.rmtree(rng, ignore_errors=True)
    return freed


def collect_grid(store: Store, grid_name: str) -> int:
    """Apply the grid's ``[storage] keep`` policy to its COMPLETED jobs (called as jobs finish: by the local
    backend when a worker ends, by each SLURM refresh). Returns the bytes freed; nothing without the table."""
    from orchestrator.storage.settings import StorageSettings

    grid = store.get_grid(grid_name)
    keep = StorageSettings.of_grid(grid.spec_json).keep if grid else None
    if keep is None:
        return 0
    plan = plan_gc(store, grid_name, keep)
    freed = apply(plan)
    if plan.remove:
        log.info("grid %s [storage] keep=%s: removed %d files (%d bytes) of finished jobs", grid_name, keep,
                 len(plan.remove), freed)
    return freed
