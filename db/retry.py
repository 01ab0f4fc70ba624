"""Retry database calls with exponential back-off (workers must outlive a DB hiccup).

Only transient failures are retried: the server is down or unreachable, a connection was cut, a lock was
held past the busy timeout, PostgreSQL chose this transaction as a deadlock/serialization victim, or the
store could not be opened for such a reason (:class:`~db.engine.StoreUnavailable`). Everything else
(integrity errors, bad SQL, a schema mismatch) is raised at once. Store methods are idempotent, so a
call whose commit did reach the database before the connection broke can safely run again.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from typing import TypeVar

from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

from db.engine import StoreUnavailable, first_line
from specs.settings import env_settings

log = logging.getLogger(__name__)
T = TypeVar("T")
DEFAULT_ATTEMPTS = 8


def is_transient(exc: BaseException) -> bool:
    """Whether ``exc`` is a database failure worth retrying."""
    if isinstance(exc, StoreUnavailable | OperationalError | InterfaceError):
        return True
    return isinstance(exc, DBAPIError) and bool(exc.connection_invalidated)


def with_retries(
    fn: Callable[[], T], *, what: str = "database call", attempts: int | None = None,
    base_delay: float = 0.5, max_delay: float = 30.0, jitter: float = 0.25,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Call ``fn``; on a transient error wait (0.5 s, 1 s, 2 s ... up to ``max_delay``) and retry.

    ``attempts`` (calls in all) defaults to ``DLTH_DB_RETRIES`` or 8 (about a minute of outage with the
    default delays). Each wait is shortened by up to ``jitter`` (a fraction) at random, so that hundreds
    of workers do not reconnect in lockstep. Each failure is logged; the last error is re-raised.
    """
    attempts = attempts or env_settings().db_retries
    if attempts < 1:
        raise ValueError(f"attempts: expected at least 1, got {attempts}")
    for i in range(attempts):
        try:
            return fn()
        except Exception as exc:
            if not is_transient(exc):
                raise
            if i == attempts - 1:
                log.error("%s failed %d times, giving up: %s", what, attempts, first_line(exc))
                raise
            delay = min(max_delay, base_delay * 2**i) * (1 - jitter * random.random())
            log.warning("%s failed (%s); retry %d/%d in %.1fs", what, first_line(exc), i + 1, attempts - 1,
                        delay)
            sleep(delay)
    raise AssertionError("unreachable")
