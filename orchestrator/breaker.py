"""The breaker for systematic failures, on the orchestrator's side (the rule itself: :mod:`specs.breaker`).

- Who trips it: whoever sees the failures first. The worker that records a counted failure applies the
  rule (``workers.reporting``), so a grid launched with ``--no-wait`` pauses without anyone looking; so do
  ``status``, the follower (``launch --wait``) and every submission (:func:`check`).
- Paused: the local backend starts nothing new; on SLURM nothing is resubmitted and the grid's pending
  tasks are held with ``scontrol hold`` (never cancelled) on the grid's own cluster (its profile's
  ``slurm_conf``, see :mod:`orchestrator.backends.slurm_target`). A worker that tripped it leaves the hold
  to the next :func:`check` (``hold_pending``); meanwhile every worker that starts refuses to train and
  hands its job back. ``status`` and ``launch --wait`` say so in one line (:func:`pause_line`).
- ``dlth-orch resume GRID`` (after a fix) releases the held tasks with ``scontrol release``; failures from
  before the resume no longer count.
"""

from __future__ import annotations

import logging

from db import JobState, Store
from specs.breaker import BreakerSettings, BreakerState, normalise, pause_line

log = logging.getLogger(__name__)
__all__ = ["BreakerSettings", "BreakerState", "check", "normalise", "pause_line", "paused", "resume"]


def check(store: Store, grid: str) -> BreakerState | None:
    """Trip the breaker if ``grid`` shows a systematic failure, and hold the grid's pending SLURM tasks when
    it trips (or a worker tripped it); returns the state if the grid is paused."""
    state, tripped = store.trip_breaker(grid, by="the orchestrator")
    if not state.paused:
        return None
    if tripped or state.hold_pending:
        state.held = sorted(set(state.held) | set(_slurm_queued_ids(store, grid)))
        state.hold_pending = False
        store.save_breaker_state(grid, state)  # saved before the hold: nothing is held unrecorded
        _scontrol(store, grid, "hold", state.held)  # a task that started meanwhile refuses; the rest is held
        log.warning("%s", pause_line(grid, state) + (f" ({len(state.held)} SLURM tasks held)" if state.held else ""))
    return state


def paused(store: Store, grid: str) -> BreakerState | None:
    """The grid's breaker state if it is paused, else None (no check, no action)."""
    state = store.breaker_state(grid)
    return state if state.paused else None


def _slurm_queued_ids(store: Store, grid: str) -> list[str]:
    return sorted({j.backend_id for j in store.jobs(grid, [JobState.QUEUED])
                   if j.backend == "slurm" and j.backend_id})


def _scontrol(store: Store, grid: str, action: str, ids: list[str]) -> None:
    """``scontrol hold|release`` of a grid's SLURM tasks on the cluster of each task's array (else the
    grid's), 500 per command; without SLURM here, a warning."""
    if not ids:
        return
    from orchestrator.backends.slurm_cmd import SlurmError, run_slurm
    from orchestrator.backends.slurm_profile import job_name
    from orchestrator.backends.slurm_target import by_cluster, grid_conf, targeting

    try:
        for conf, some in by_cluster(store, ids, grid_conf(store, job_name(store, grid))).items():
            with targeting(conf):
                for i in range(0, len(some), 500):
                    run_slurm(["scontrol", action, ",".join(some[i:i + 500])], check=False)
    except SlurmError as exc:
        log.warning("cannot %s the grid's SLURM tasks from here (%s): run this on the SLURM login node", action, exc)


def resume(store: Store, grid: str) -> int:
    """Unpause ``grid`` and ``scontrol release`` its held SLURM tasks (those the breaker held, and any
    other queued task of the grid); returns how many tasks were released."""
    state = store.breaker_state(grid)
    attempts = store.grid_attempts(grid)
    ids = sorted(set(state.held) | set(_slurm_queued_ids(store, grid)))
    state.paused, state.held, state.hold_pending = False, [], False
    state.resumed_after = max((a.id for a in attempts), default=0)
    _scontrol(store, grid, "release", ids)
    store.save_breaker_state(grid, state)
    return len(ids)
