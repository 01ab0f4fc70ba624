"""Moving a grid's dependent jobs along the lifecycle: WAITING children whose parents completed become
runnable, children of a parent that will never complete become PARENT_FAILED (transitively), and
PARENT_FAILED children of a retried parent wait again. The decisions are :mod:`specs.lifecycle`'s; the
store records them."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from db import JobRow, Store
from specs.lifecycle import JobState, budget_exhausted, state_from_parents

log = logging.getLogger(__name__)


@dataclass
class GraphMoves:
    """What one :func:`advance` changed (job hashes)."""

    released: list[str] = field(default_factory=list)  # WAITING -> PENDING (or QUEUED when a backend holds it)
    parent_failed: list[str] = field(default_factory=list)  # WAITING -> PARENT_FAILED
    rewaiting: list[str] = field(default_factory=list)  # PARENT_FAILED -> WAITING (a parent was retried)

    def changed(self) -> bool:
        return bool(self.released or self.parent_failed or self.rewaiting)


def advance(store: Store, grid_name: str, failure_budget: int) -> GraphMoves:
    """Apply the lifecycle to every dependent job of the grid until nothing moves (a few queries)."""
    moves = GraphMoves()
    deps = store.grid_deps(grid_name)
    if not deps:
        return moves
    jobs = {j.job_hash: j for j in store.jobs(grid_name)}
    for h in {p for ps in deps.values() for p in ps} - set(jobs):  # a parent recorded by another grid
        row = store.job(h)
        if row is not None:
            jobs[h] = row
    state = {h: (j.state, j.failure_count) for h, j in jobs.items()}

    def dead(h: str) -> bool:
        s, n = state.get(h, (JobState.COMPLETED, 0))
        return budget_exhausted(s, n, failure_budget)

    # parents retried: their PARENT_FAILED children wait again (then maybe fail again below)
    changed = True
    while changed:
        changed = False
        for child, parents in deps.items():
            if state[child][0] == JobState.PARENT_FAILED and not any(dead(p) for p in parents):
                state[child] = (JobState.WAITING, state[child][1])
                moves.rewaiting.append(child)
                changed = True
        for child, parents in deps.items():
            if state[child][0] != JobState.WAITING:
                continue
            target = state_from_parents([state.get(p, (JobState.COMPLETED, 0)) for p in parents], failure_budget)
            if target == JobState.PARENT_FAILED:
                state[child] = (target, state[child][1])
                moves.parent_failed.append(child)
                changed = True
            elif target == JobState.PENDING:
                state[child] = (JobState.PENDING, state[child][1])
                moves.released.append(child)
    _persist(store, jobs, moves)
    return moves


def _persist(store: Store, jobs: dict[str, JobRow], moves: GraphMoves) -> None:
    rewaiting = set(moves.rewaiting)
    failed = [h for h in moves.parent_failed if h not in rewaiting]
    back = [h for h in moves.rewaiting if h not in moves.parent_failed]
    held = [h for h in moves.released if jobs[h].backend_id]  # a backend holds it (SLURM --dependency)
    free = [h for h in moves.released if not jobs[h].backend_id]
    store.set_state(back, JobState.WAITING, [JobState.PARENT_FAILED])
    store.set_state(failed, JobState.PARENT_FAILED, [JobState.WAITING, JobState.PARENT_FAILED])
    store.set_state(held, JobState.QUEUED, [JobState.WAITING])
    store.set_state(free, JobState.PENDING, [JobState.WAITING])
    for h in failed:
        log.warning("job %s: a parent will not complete: PARENT_FAILED", h)


def waiting_for(store: Store, grid_name: str) -> dict[str, list[str]]:
    """``{waiting job hash: [hashes of the parents not COMPLETED yet]}`` of the grid's WAITING jobs."""
    deps = store.grid_deps(grid_name)
    states = {j.job_hash: j.state for j in store.jobs(grid_name)}
    return {c: [p for p in ps if states.get(p) != JobState.COMPLETED]
            for c, ps in deps.items() if states.get(c) == JobState.WAITING}
