"""Kept for existing imports: the SLURM backend's stop-reason correction is now part of the store API.

Use :meth:`db.store.Store.correct_stop_reason` directly; this module goes away once nothing imports it.
"""

from __future__ import annotations

from db.models import AttemptState
from db.store import Store

# stop reasons that are not failures: moving between them never touches the failure count
STOP_STATES = AttemptState.STOPS


def correct_stop_reason(store: Store, attempt_id: int, state: str, reason: str) -> bool:
    """See :meth:`db.store.Store.correct_stop_reason`."""
    return store.correct_stop_reason(attempt_id, state, reason)
