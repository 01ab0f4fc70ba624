"""The job lifecycle in one place: job and attempt states, the transitions between them, the failure
budget and the retry policy. Torch- and database-free: the store *persists* transitions, this module
*decides* them.

Job states::

    WAITING ──(all parents COMPLETED)──> PENDING ──(handed to a backend)──> QUEUED ──(claimed)──> RUNNING
       │  └─(a parent FAILED past its budget, CANCELLED or PARENT_FAILED)──> PARENT_FAILED
       └──(held by a backend that enforces the dependency itself, e.g. SLURM afterok)──> RUNNING
    RUNNING ──> COMPLETED | FAILED (failure counted) | QUEUED (preempted / time limit) | CANCELLED
    FAILED ──(within the budget, or ``retry``)──> PENDING/QUEUED;  CANCELLED ──(``retry --cancelled``)──> PENDING
    PARENT_FAILED ──(its parent is retried)──> WAITING

The failure budget: a job may fail ``budget`` times and still be retried automatically; the
``budget + 1``-th failure is final (``dlth-orch retry`` resets it whatever its count).
"""

from __future__ import annotations

from enum import StrEnum


class JobState(StrEnum):
    """States of a job (the latest word on it). Members are strings: ``JobState.PENDING == "PENDING"``."""

    WAITING = "WAITING"  # recorded, waiting for its parent jobs to complete
    PENDING = "PENDING"  # recorded, never submitted (or reset)
    QUEUED = "QUEUED"  # handed to a backend, not started yet (also after a requeue)
    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
    PARENT_FAILED = "PARENT_FAILED"  # a parent ran out of its failure budget or was cancelled: never runs


class AttemptState(StrEnum):
    """States of one try of a job. PREEMPTED and TIMEOUT are not failures."""

    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    PREEMPTED = "PREEMPTED"
    TIMEOUT = "TIMEOUT"
    NODE_FAIL = "NODE_FAIL"
    OUT_OF_MEMORY = "OUT_OF_MEMORY"
    CANCELLED = "CANCELLED"
    LOST = "LOST"  # the process vanished without a word (killed, machine rebooted)


# groups (class attributes after the fact: an Enum body would make them members)
JobState.ALL = (JobState.PENDING, JobState.WAITING, JobState.QUEUED, JobState.RUNNING,  # type: ignore[attr-defined]
                JobState.COMPLETED, JobState.FAILED, JobState.CANCELLED, JobState.PARENT_FAILED)
JobState.ACTIVE = (JobState.QUEUED, JobState.RUNNING)  # type: ignore[attr-defined]
# not finished yet: a grid with none of these has finished
JobState.UNFINISHED = (JobState.PENDING, JobState.WAITING, JobState.QUEUED,  # type: ignore[attr-defined]
                       JobState.RUNNING)
JobState.TERMINAL = (JobState.COMPLETED, JobState.FAILED, JobState.CANCELLED,  # type: ignore[attr-defined]
                     JobState.PARENT_FAILED)
# states ``cancel`` may move to CANCELLED
JobState.CANCELLABLE = (JobState.WAITING, JobState.PENDING, JobState.QUEUED,  # type: ignore[attr-defined]
                        JobState.RUNNING, JobState.FAILED)
AttemptState.REQUEUE = (AttemptState.PREEMPTED, AttemptState.TIMEOUT)  # type: ignore[attr-defined]
# stopped from outside: not failures
AttemptState.STOPS = (AttemptState.PREEMPTED, AttemptState.TIMEOUT,  # type: ignore[attr-defined]
                      AttemptState.CANCELLED)
AttemptState.FAILURES = (AttemptState.FAILED, AttemptState.NODE_FAIL,  # type: ignore[attr-defined]
                         AttemptState.OUT_OF_MEMORY, AttemptState.LOST)

J = JobState
# the one transition table: state -> the states a job may move to from it
TRANSITIONS: dict[JobState, frozenset[JobState]] = {
    J.WAITING: frozenset({J.PENDING, J.QUEUED, J.RUNNING, J.PARENT_FAILED, J.CANCELLED, J.WAITING}),
    J.PENDING: frozenset({J.QUEUED, J.RUNNING, J.FAILED, J.CANCELLED, J.WAITING}),
    J.QUEUED: frozenset({J.RUNNING, J.QUEUED, J.FAILED, J.CANCELLED, J.PENDING, J.WAITING}),
    J.RUNNING: frozenset({J.COMPLETED, J.FAILED, J.QUEUED, J.CANCELLED, J.PENDING}),
    J.COMPLETED: frozenset(),
    J.FAILED: frozenset({J.PENDING, J.QUEUED, J.CANCELLED, J.WAITING}),
    J.CANCELLED: frozenset({J.PENDING, J.QUEUED, J.WAITING}),
    J.PARENT_FAILED: frozenset({J.WAITING, J.CANCELLED, J.PARENT_FAILED}),
}


class TransitionError(ValueError):
    """A state change the lifecycle does not allow."""


def check_transition(sources: list[str] | tuple[str, ...], target: str) -> None:
    """Raise :class:`TransitionError` unless every state in ``sources`` may move to ``target``."""
    bad = [s for s in sources if JobState(target) not in TRANSITIONS[JobState(s)]]
    if bad:
        raise TransitionError(f"job state: {', '.join(bad)} -> {target} is not a transition of the lifecycle")


def job_state_after(attempt_state: str) -> JobState:
    """The job state a closed attempt leads to (a COMPLETED job never changes again)."""
    if attempt_state == AttemptState.COMPLETED:
        return J.COMPLETED
    if attempt_state in AttemptState.REQUEUE:  # type: ignore[attr-defined]
        return J.QUEUED
    if attempt_state == AttemptState.CANCELLED:
        return J.CANCELLED
    return J.FAILED


def counts_as_failure(attempt_state: str) -> bool:
    """Whether an attempt ending in ``attempt_state`` uses up the job's failure budget."""
    return job_state_after(attempt_state) == J.FAILED


def may_retry(failure_count: int, budget: int) -> bool:
    """Retry policy: a FAILED job runs again automatically while it has failed at most ``budget`` times."""
    return failure_count <= budget


def budget_exhausted(state: str, failure_count: int, budget: int) -> bool:
    """A job that will not run again by itself: FAILED past its budget, CANCELLED or PARENT_FAILED."""
    if state == J.FAILED:
        return not may_retry(failure_count, budget)
    return state in (J.CANCELLED, J.PARENT_FAILED)


def initial_state(has_parents: bool) -> JobState:
    """The state a newly recorded job starts in."""
    return J.WAITING if has_parents else J.PENDING


def state_from_parents(parent_states: list[tuple[str, int]], budget: int) -> JobState | None:
    """What a WAITING job becomes given its parents' ``(state, failure_count)``: PENDING when all are
    COMPLETED, PARENT_FAILED when one will never complete, ``None`` (stay WAITING) otherwise."""
    if any(budget_exhausted(s, n, budget) for s, n in parent_states):
        return J.PARENT_FAILED
    if all(s == J.COMPLETED for s, _ in parent_states):
        return J.PENDING
    return None
