"""``DLTH_DB_WAIT_S`` on SQLite: ``status`` and the launcher's follower ride out a database that went away
(orchestrator.db_wait.ride_out); here another connection holds SQLite's write lock past the busy timeout,
and the wait's sleep hook hands the lock back, so nothing depends on wall-clock timing. The local launcher
rides it out too: its worker pauses at the product's test hook (workers/test_hooks.py) while the lock is taken,
so the launcher's next write meets it."""

from __future__ import annotations

import logging
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy.exc import OperationalError

from db import AttemptState, JobState, Store
from orchestrator.db_wait import ride_out
from orchestrator.grid import expand, load_grid
from subsets import DatasetMeta
from workers import test_hooks

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


GRID = """
name = "dbwait"
seeds = [0]
failure_budget = 1
[dataset]
root = "{root}"
[train]
backbone = "test_resnet"
epochs = 1
batch_size = 256
image_size = 32
[resources]
cpus_per_task = 1
loader_workers = 1
[subsets.full]
strategy = "full"
[methods.supervised]
"""


def _until(what: str, cond: Callable[[], bool], proc: subprocess.Popen, out: Path, limit_s: float = 300) -> None:
    deadline = time.monotonic() + limit_s
    while not cond():
        assert proc.poll() is None, f"the launcher ended before {what}:\n{out.read_text()}"
        assert time.monotonic() < deadline, f"no {what} in {limit_s}s:\n{out.read_text()}"
        time.sleep(0.1)


@pytest.mark.slow
def test_the_local_launcher_rides_out_a_held_write_lock(tmp_path: Path, digits: Path) -> None:
    """A job's first attempt fails (test hook) and its worker pauses once it recorded that (test hook); the
    test takes SQLite's write lock, lets the worker exit, and the launcher's retry of the job meets the lock:
    it says it waits (DLTH_DB_WAIT_S) instead of dying, goes on once the lock is handed back, and completes."""
    grid = tmp_path / "grid.toml"
    grid.write_text(GRID.format(root=digits))
    [job] = expand(load_grid(grid), DatasetMeta.load(digits))
    armed = tmp_path / "armed"
    armed.mkdir()
    (armed / f"{job.spec.job_hash}.fail").touch()  # the first attempt fails ...
    (armed / f"{job.spec.job_hash}.{test_hooks.ENDED}").touch()  # ... and its worker waits before it exits
    paused = armed / f"{job.spec.job_hash}.{test_hooks.ENDED}.paused"
    path = tmp_path / "db.sqlite"
    env = {**os.environ, "DLTH_HOME": str(tmp_path / "home"), "DLTH_DB_WAIT_S": "120",
           test_hooks.ENV: str(armed), test_hooks.PAUSE_ENV: str(armed)}
    out = tmp_path / "launch.log"
    with out.open("w") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "orchestrator.cli", "launch", str(grid), "--no-progress",
                                 "--db", f"sqlite:///{path}?timeout=1"], stdout=fh, stderr=subprocess.STDOUT,
                                env=env, text=True)
    holder = sqlite3.connect(path, isolation_level=None, timeout=60)
    try:
        _until("paused worker", paused.exists, proc, out)
        holder.execute("BEGIN IMMEDIATE")  # the write lock, held past the launcher's 1 s busy timeout
        paused.unlink()  # the worker exits 1; the launcher's next write (requeue the job) meets the lock
        _until("wait message", lambda: "waiting up to 120s" in out.read_text(), proc, out, limit_s=120)
        holder.rollback()
        assert proc.wait(timeout=600) == 0, out.read_text()
    finally:
        holder.close()
        if proc.poll() is None:
            proc.kill()
    said = out.read_text()
    assert "running dbwait: the database is unreachable" in said and "database is locked" in said, said
    assert "running dbwait: the database is back; going on" in said, said
    store = Store(f"sqlite:///{path}", create=False)
    assert store.job(job.spec.job_hash).state == JobState.COMPLETED
    assert [a.state for a in store.attempts(job.spec.job_hash)] == [AttemptState.FAILED, AttemptState.COMPLETED]
