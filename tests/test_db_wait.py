"""``DLTH_DB_WAIT_S`` on SQLite: ``status`` and the launcher's follower ride out a database that went away
(orchestrator.db_wait.ride_out); here another connection holds SQLite's write lock past the busy timeout,
and the wait's sleep hook hands the lock back, so nothing depends on wall-clock timing."""

from __future__ import annotations

import logging
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.exc import OperationalError

from db import Store
from orchestrator.db_wait import ride_out

Locked = tuple[str, sqlite3.Connection]  # the database URL and the connection that holds its write lock


@pytest.fixture
def locked(tmp_path: Path) -> Iterator[Locked]:
    """A recorded SQLite database whose write lock another connection holds (like a stuck writer)."""
    path = tmp_path / "dlth.db"
    with Store(f"sqlite:///{path}"):
        pass
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    yield f"sqlite:///{path}?timeout=0.1", holder
    holder.close()


def _record(url: str) -> int:
    with Store(url, create=False) as store:
        return store.upsert_grid("g", "{}", "h", "", 1)


def test_the_wait_lasts_until_the_database_is_back(locked: Locked, caplog: pytest.LogCaptureFixture,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    url, holder = locked
    monkeypatch.setenv("DLTH_DB_WAIT_S", "120")
    sleeps: list[float] = []

    def sleep(seconds: float) -> None:  # the lock goes away during the second wait
        sleeps.append(seconds)
        if len(sleeps) == 2:
            holder.rollback()

    with caplog.at_level(logging.WARNING, logger="orchestrator.db_wait"):
        assert ride_out(lambda: _record(url), what="status", sleep=sleep) > 0
    assert sleeps == [0.5, 1.0]  # back-off
    said = [r.getMessage() for r in caplog.records]
    assert len(said) == 2 and "waiting up to 120s" in said[0] and "the database is back" in said[1]


def test_dlth_db_wait_s_0_gives_up_at_once(locked: Locked, monkeypatch: pytest.MonkeyPatch) -> None:
    url, _ = locked
    monkeypatch.setenv("DLTH_DB_WAIT_S", "0")
    sleeps: list[float] = []
    with pytest.raises(OperationalError, match="database is locked"):
        ride_out(lambda: _record(url), what="status", sleep=sleeps.append)
    assert sleeps == []


def test_a_database_that_never_answered_fails_at_once(tmp_path: Path) -> None:
    """Nothing listens on port 1: with the default 300 s wait, ``status`` still fails in seconds, one line,
    exit 2 (a fresh process, which has never reached any database)."""
    import subprocess
    import sys
    import time

    env = {k: v for k, v in os.environ.items() if k not in ("DLTH_DB", "DLTH_DB_WAIT_S")}
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "orchestrator.cli", "status", "--db",
                           "postgresql+psycopg://u:p@127.0.0.1:1/db"], capture_output=True, text=True,
                          cwd=tmp_path, env={**env, "DLTH_HOME": str(tmp_path / ".dlth")}, timeout=120)
    took = time.monotonic() - started
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("error: database postgresql+psycopg://u:***@")
    assert "Connection refused" in proc.stderr and "waiting" not in proc.stderr
    assert took < 60, took  # was 300 s (DLTH_DB_WAIT_S) before; most of what is left is importing the CLI
