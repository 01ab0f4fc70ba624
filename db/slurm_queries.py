"""A store call the SLURM backend needs and :mod:`db.store` lacks (kept apart; candidate for the store API).

A worker stopped by a signal records its attempt PREEMPTED: it cannot tell a preemption from its time
limit or from ``scancel``. SLURM's accounting can, later; :func:`correct_stop_reason` records its verdict.
"""

from __future__ import annotations

from sqlalchemy import select

from db.models import Attempt, AttemptState, Job, JobState, utcnow
from db.store import Store

# stop reasons that are not failures: moving between them never touches the failure count
STOP_STATES = (AttemptState.PREEMPTED, AttemptState.TIMEOUT, AttemptState.CANCELLED)


def correct_stop_reason(store: Store, attempt_id: int, state: str, reason: str) -> bool:
    """Change a closed attempt's stop reason (PREEMPTED/TIMEOUT/CANCELLED) to ``state``; True if it changed.

    A job that was QUEUED because of a PREEMPTED/TIMEOUT attempt becomes CANCELLED when the attempt turns
    out CANCELLED. Failures and completions are never touched (they move failure counts and results).
    """
    if state not in STOP_STATES:
        raise ValueError(f"state: expected one of {', '.join(STOP_STATES)}, got {state!r}")
    with store.session() as s:
        job_id = s.scalar(select(Attempt.job_id).where(Attempt.id == attempt_id))
        if job_id is None:
            raise KeyError(f"attempt {attempt_id} not found")
        job = s.get(Job, job_id, with_for_update={"key_share": True})  # job first, then attempt (lock order)
        attempt = s.get(Attempt, attempt_id, with_for_update={"key_share": True})
        assert job is not None and attempt is not None
        if attempt.state not in STOP_STATES or attempt.state == state:
            return False
        attempt.state = state
        attempt.exit_reason = f"{reason} (the worker recorded {attempt.exit_reason or 'a stop'})"
        if state == AttemptState.CANCELLED and job.state == JobState.QUEUED:
            job.state, job.updated_at = JobState.CANCELLED, utcnow()
        return True
