"""with_retries: transient database failures are retried with growing delays; others are raised at once."""

from __future__ import annotations

import logging
import socket
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import IntegrityError, OperationalError

from db import Store, StoreError, StoreUnavailable
from db.retry import is_transient, with_retries


def refused_connection() -> None:
    """A real OperationalError: connect to a port nobody listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    engine = create_engine(f"postgresql+psycopg://u:p@127.0.0.1:{port}/db")
    try:
        engine.connect()
    finally:
        engine.dispose()


def duplicate_row(tmp_path: Path) -> None:
    """A real IntegrityError."""
    engine = create_engine(f"sqlite:///{tmp_path / 'x.db'}")
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE IF NOT EXISTS t (k INTEGER PRIMARY KEY)"))
        conn.execute(text("INSERT INTO t VALUES (1)"))
        conn.execute(text("INSERT INTO t VALUES (1)"))


def test_transient_failures_are_retried_with_growing_delays(caplog: pytest.LogCaptureFixture) -> None:
    calls, sleeps = [], []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 4:
            refused_connection()
        return "done"

    with caplog.at_level(logging.WARNING, logger="db.retry"):
        assert with_retries(flaky, what="heartbeat", attempts=5, base_delay=1.0, max_delay=3.0, jitter=0.25,
                            sleep=sleeps.append) == "done"
    assert len(calls) == 4
    assert len(sleeps) == 3
    for got, nominal in zip(sleeps, [1.0, 2.0, 3.0], strict=True):  # capped at max_delay, jitter <= 25 %
        assert 0.75 * nominal <= got <= nominal
    failures = [r.getMessage() for r in caplog.records]
    assert len(failures) == 3 and all("heartbeat failed (" in m and "Connection refused" in m for m in failures)


def test_it_gives_up_after_the_last_attempt_and_reraises(caplog: pytest.LogCaptureFixture) -> None:
    sleeps: list[float] = []
    with caplog.at_level(logging.WARNING, logger="db.retry"), pytest.raises(OperationalError):
        with_retries(refused_connection, what="final metrics", attempts=3, sleep=sleeps.append)
    assert len(sleeps) == 2
    assert "final metrics failed 3 times, giving up" in caplog.records[-1].getMessage()


def test_permanent_errors_are_raised_at_once(tmp_path: Path) -> None:
    sleeps: list[float] = []
    with pytest.raises(IntegrityError):
        with_retries(lambda: duplicate_row(tmp_path), attempts=5, sleep=sleeps.append)
    with pytest.raises(StoreError):
        with_retries(lambda: Store("mysql://x/y"), attempts=5, sleep=sleeps.append)
    assert sleeps == []
    with pytest.raises(ValueError, match="attempts"):
        with_retries(lambda: None, attempts=-1)


def test_a_store_that_cannot_be_reached_yet_is_worth_retrying() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(StoreUnavailable) as info:
        Store(f"postgresql+psycopg://u:p@127.0.0.1:{port}/db", create=False)
    assert is_transient(info.value)
    assert not is_transient(StoreError("bad url"))
    assert not is_transient(KeyError("job"))
