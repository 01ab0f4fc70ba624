"""Launcher locks held in the database: at most one launcher per grid, whichever host it runs on.

PostgreSQL: a session-level advisory lock (``pg_try_advisory_lock(key)``, key = 64 bits of a hash of the
grid name) on a connection of its own, held for the launch. The server drops it with the connection, so
a launcher that crashes (or whose host dies) frees the grid once its connection is gone. The holder is
read from ``pg_locks`` + ``pg_stat_activity``: the connection's ``application_name`` names its host and pid.

SQLite: a row of ``dlth_meta`` (key ``lock:<digest of the grid name>``) holding the launcher's host, pid
and a token, taken in one ``BEGIN IMMEDIATE`` transaction; a thread refreshes its ``updated_at`` every
:data:`HEARTBEAT_S`. A row whose holder is gone is taken over: on the same host when its pid is dead, on
any host when its heartbeat is older than :data:`STALE_S`. A crashed launcher therefore never locks a
grid for longer than :data:`STALE_S`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import Connection, delete, select, text, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from db.engine import WRITE_OPTION, is_sqlite
from db.models import Meta, utcnow
from db.netfs import hostname

log = logging.getLogger(__name__)
HEARTBEAT_S = 10.0  # SQLite: how often a holder refreshes its lock row
STALE_S = 60.0  # SQLite: a lock row not refreshed for this long belongs to a launcher that is gone
APP_PREFIX = "dlth-orch launch"  # PostgreSQL: application_name of a lock-holding connection


@dataclass(frozen=True)
class LockHolder:
    """Who holds a grid's lock."""

    host: str
    pid: int
    since: str

    def is_process(self, pid: int) -> bool:
        """Whether the holder is process ``pid`` of this host."""
        return self.pid == pid and self.host == hostname()

    def describe(self) -> str:
        """E.g. ``pid 4242 on host node1 since 2026-12-06 03:04:05`` (UTC)."""
        return f"pid {self.pid} on host {self.host}" + (f" since {self.since}" if self.since else "")


@dataclass(frozen=True)
class GridLock:
    """The outcome of trying to take a grid's lock: ``held``, else ``holder`` (None when unknown)."""

    held: bool
    holder: LockHolder | None = None


def _pg_key(grid_name: str) -> int:
    """The advisory-lock key of a grid: a signed 64-bit number from a hash of its name."""
    digest = hashlib.sha256(f"dlth-orch grid {grid_name}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def _meta_key(grid_name: str) -> str:
    return "lock:" + hashlib.sha256(grid_name.encode()).hexdigest()[:40]


@contextmanager
def grid_lock(engine: Engine, grid_name: str) -> Iterator[GridLock]:
    """Try to take ``grid_name``'s launcher lock without waiting; yield a :class:`GridLock`; release on exit."""
    impl = _sqlite_lock if is_sqlite(engine) else _pg_lock
    with impl(engine, grid_name) as got:
        yield got


def lock_holder(engine: Engine, grid_name: str) -> LockHolder | None:
    """Who holds ``grid_name``'s launcher lock now (None: nobody, or a holder that is gone)."""
    if is_sqlite(engine):
        with Session(engine) as s, s.begin():
            row = s.scalar(select(Meta).where(Meta.key == _meta_key(grid_name)))
            return None if row is None or _stale(row) else _row_holder(row)
    with engine.connect() as conn:
        return _pg_holder(conn, _pg_key(grid_name))


# --- PostgreSQL ---------------------------------------------------------------------------------
@contextmanager
def _pg_lock(engine: Engine, grid_name: str) -> Iterator[GridLock]:
    key = _pg_key(grid_name)
    conn = engine.connect().execution_options(isolation_level="AUTOCOMMIT")  # idle between statements, never
    try:                                                                      # "idle in transaction" for hours
        app = f"{APP_PREFIX} {os.getpid()} {hostname()}"[:63]
        conn.execute(text("SELECT set_config('application_name', :app, false)"), {"app": app})
        if not conn.scalar(text("SELECT pg_try_advisory_lock(:key)"), {"key": key}):
            yield GridLock(False, _pg_holder(conn, key))
            return
        try:
            yield GridLock(True)
        finally:
            def release() -> None:
                conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": key})
                conn.execute(text("SELECT set_config('application_name', 'dlth-orch', false)"))

            if not _quietly(release, "unlock"):
                _quietly(conn.invalidate, "discard the connection")  # never back into the pool
    finally:
        _quietly(conn.close, "close")


def _pg_holder(conn: Connection, key: int) -> LockHolder | None:
    row = conn.execute(text(
        "SELECT a.application_name, a.backend_start FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
        "WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1 "
        "AND l.classid::bigint = :hi AND l.objid::bigint = :lo "
        "AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())"),
        {"hi": (key >> 32) & 0xFFFFFFFF, "lo": key & 0xFFFFFFFF}).first()
    if row is None:
        return None
    parts = str(row[0] or "").removeprefix(APP_PREFIX).split()
    pid = int(parts[0]) if parts and parts[0].isdigit() else 0
    since = row[1].strftime("%Y-%m-%d %H:%M:%S") if row[1] is not None else ""
    return LockHolder(parts[1] if len(parts) > 1 else "?", pid, since)


def _quietly(fn: Any, what: str) -> bool:
    """Run a release step; False if it failed. A connection that went away (a server restart during the
    launch) has released the lock already: the server dropped it with the session."""
    try:
        fn()
        return True
    except SQLAlchemyError as exc:
        log.debug("grid lock: %s failed (%s); the server releases the lock with the connection", what, exc)
        return False


# --- SQLite -------------------------------------------------------------------------------------
@contextmanager
def _sqlite_lock(engine: Engine, grid_name: str) -> Iterator[GridLock]:
    key = _meta_key(grid_name)
    value = json.dumps({"grid": grid_name, "host": hostname(), "pid": os.getpid(), "token": uuid.uuid4().hex,
                        "since": utcnow().strftime("%Y-%m-%d %H:%M:%S")}, sort_keys=True)
    with _write(engine) as s:
        row = s.scalar(select(Meta).where(Meta.key == key))
        if row is not None and row.value != value and not _stale(row):
            holder = _row_holder(row)
        else:
            holder = None
            if row is not None:
                log.warning("grid %r: taking over the lock of %s (gone)", grid_name, _row_holder(row).describe())
                s.delete(row)
                s.flush()
            s.add(Meta(key=key, value=value, updated_at=utcnow()))
    if holder is not None:
        yield GridLock(False, holder)
        return
    stop = threading.Event()
    beat = threading.Thread(target=_heartbeat, args=(engine, key, value, stop), name="dlth-grid-lock", daemon=True)
    beat.start()
    try:
        yield GridLock(True)
    finally:
        stop.set()
        beat.join()
        try:
            with _write(engine) as s:
                s.execute(delete(Meta).where(Meta.key == key, Meta.value == value))
        except SQLAlchemyError as exc:  # the row goes stale: the next launcher takes it over (see _stale)
            log.warning("grid %r: could not release its lock (%s)", grid_name, str(exc).splitlines()[0])


@contextmanager
def _write(engine: Engine) -> Iterator[Session]:
    with Session(engine, expire_on_commit=False) as s, s.begin():
        s.connection(execution_options={WRITE_OPTION: True})  # BEGIN IMMEDIATE: one writer decides
        yield s


def _heartbeat(engine: Engine, key: str, value: str, stop: threading.Event) -> None:
    """Refresh the lock row until ``stop``; a failed refresh is retried at the next beat."""
    while not stop.wait(HEARTBEAT_S):
        try:
            with _write(engine) as s:
                res = s.execute(update(Meta).where(Meta.key == key, Meta.value == value).values(updated_at=utcnow()))
            if not res.rowcount:
                log.warning("grid lock %s: another launcher took it over (this one stalled for over %.0f s)",
                            key, STALE_S)
        except SQLAlchemyError as exc:
            log.warning("grid lock %s: heartbeat failed (%s)", key, str(exc).splitlines()[0])


def _row_holder(row: Meta) -> LockHolder:
    try:
        doc = json.loads(row.value)
        return LockHolder(str(doc["host"]), int(doc["pid"]), str(doc.get("since", "")))
    except (ValueError, KeyError, TypeError):
        return LockHolder("?", 0, "")


def _stale(row: Meta) -> bool:
    """The holder is gone: its pid is dead (same host), or its heartbeat stopped more than STALE_S ago."""
    holder = _row_holder(row)
    if utcnow() - row.updated_at > timedelta(seconds=STALE_S):
        return True
    return holder.host == hostname() and not _pid_alive(holder.pid)


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
