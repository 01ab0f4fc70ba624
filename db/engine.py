"""Engine creation: URL validation, SQLite pragmas (WAL, busy timeout), default locations."""

from __future__ import annotations

import os
from pathlib import Path

from sqlalchemy import event
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError

SUPPORTED_DRIVERS = ("sqlite", "postgresql", "postgresql+psycopg")


class StoreError(ValueError):
    """The database URL or the database itself is unusable; the message is one line."""


def workspace_dir() -> Path:
    """Where dlth-orch keeps its default database and job directories (``DLTH_HOME`` or ``./.dlth``)."""
    return Path(os.environ.get("DLTH_HOME", ".dlth")).resolve()


def default_url() -> str:
    """The database URL to use: ``DLTH_DB`` if set, else a SQLite file in the workspace."""
    return os.environ.get("DLTH_DB") or f"sqlite:///{workspace_dir() / 'dlth.db'}"


def make_engine(url: str) -> Engine:
    """Create an engine for ``url`` (SQLite file or PostgreSQL), or raise :class:`StoreError`."""
    from sqlalchemy import create_engine

    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise StoreError(f"database URL {url!r}: expected sqlite:///PATH or postgresql+psycopg://...") from exc
    if parsed.drivername not in SUPPORTED_DRIVERS:
        raise StoreError(
            f"database URL {url!r}: expected a driver among {', '.join(SUPPORTED_DRIVERS)}, got {parsed.drivername!r}"
        )
    if parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")
    if parsed.drivername == "sqlite":
        if not parsed.database or parsed.database == ":memory:":
            raise StoreError(f"database URL {url!r}: expected a SQLite file path (sqlite:///PATH)")
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(parsed, connect_args={"timeout": 60})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    try:
        return create_engine(parsed, pool_pre_ping=True, pool_size=2, max_overflow=4)
    except NoSuchModuleError as exc:
        raise StoreError(f"database URL {url!r}: driver not installed ({exc})") from exc


def _sqlite_pragmas(dbapi_conn, _record) -> None:  # type: ignore[no-untyped-def]
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA busy_timeout=60000")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()
