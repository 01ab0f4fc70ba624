"""Riding out a database restart: the follower (``launch --wait``) and ``status`` wait for the database
with back-off instead of dying when it goes away for a while (``DLTH_DB_WAIT_S``, default 300 s).

Only transient failures are waited for (:func:`db.retry.is_transient`: server down or restarting, a cut
connection, a lock held too long); a wrong password or a missing database fails at once. The wait is
announced once, and its end once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

from db.engine import first_line, has_answered
from db.retry import is_transient
from specs.settings import env_settings

log = logging.getLogger(__name__)
T = TypeVar("T")
MAX_DELAY_S = 10.0


def ride_out(fn: Callable[[], T], *, what: str, wait_s: float | None = None,
             sleep: Callable[[float], None] = time.sleep) -> T:
    """Call ``fn`` until it gets through a transient database failure, for at most ``wait_s`` seconds
    (default: the ``DLTH_DB_WAIT_S`` setting); then the last error is raised. A database this process never
reached is not waited for: its first error is raised at once."""
    limit = env_settings().db_wait_s if wait_s is None else wait_s
    deadline: float | None = None
    delay = 0.5
    while True:
        try:
            result = fn()
        except Exception as exc:
            if not is_transient(exc) or not has_answered():
                raise
            now = time.monotonic()
            if deadline is None:
                deadline = now + limit
                log.warning("%s: the database is unreachable (%s); waiting up to %.0fs for it to come back",
                            what, first_line(exc), limit)
            if now >= deadline:
                raise
            sleep(min(delay, max(0.0, deadline - now)))
            delay = min(MAX_DELAY_S, delay * 2)
            continue
        if deadline is not None:
            log.warning("%s: the database is back; going on", what)
        return result
