"""Retry database calls with exponential back-off (workers must outlive a DB hiccup)."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from typing import TypeVar

from sqlalchemy.exc import DBAPIError, OperationalError

log = logging.getLogger(__name__)
T = TypeVar("T")


def with_retries(
    fn: Callable[[], T], *, what: str = "database call", attempts: int | None = None,
    base_delay: float = 0.5, max_delay: float = 30.0,
) -> T:
    """Call ``fn``; on a connection/lock error wait (0.5 s, 1 s, 2 s ... up to ``max_delay``) and retry.

    ``attempts`` defaults to ``DLTH_DB_RETRIES`` (8). The last error is re-raised.
    """
    attempts = attempts or int(os.environ.get("DLTH_DB_RETRIES", "8"))
    for i in range(attempts):
        try:
            return fn()
        except (OperationalError, DBAPIError) as exc:
            if i == attempts - 1:
                raise
            delay = min(max_delay, base_delay * 2**i)
            log.warning("%s failed (%s); retry %d/%d in %.1fs", what, str(exc).splitlines()[0], i + 1,
                        attempts - 1, delay)
            time.sleep(delay)
    raise AssertionError("unreachable")
