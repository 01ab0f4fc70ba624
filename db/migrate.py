"""Schema revisions with alembic, configured in code (the scripts live in ``db/migrations``).

- :func:`upgrade` brings a database to a revision (default: head) in one transaction, under a lock
  (``BEGIN IMMEDIATE`` on SQLite, an advisory lock on PostgreSQL) so that two orchestrators starting at
  once cannot both migrate. A database made by ``create_all`` before migrations existed (tables, no
  ``alembic_version``) is stamped as revision 0001 first, then upgraded.
- :func:`check_current` is what workers do instead: they never migrate, they refuse a database whose
  revision differs from :data:`HEAD` with a one-line :class:`~db.engine.StoreError`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError

from db.engine import WRITE_OPTION, StoreError, connection_error, is_sqlite, redact, sqlite_path

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
# the newest revision this code knows; tests check it against the scripts in db/migrations/versions
HEAD = "0007"
BASE_REVISION = "0001"  # the schema of dlth-orch before migrations (what create_all made)
VERSION_TABLE = "alembic_version"
_PG_LOCK_KEY = 0x646C7468  # "dlth": pg_advisory_xact_lock key serialising migrations


@dataclass(frozen=True)
class SchemaState:
    """Where a database stands: its revision (None: no version table) and whether it has our tables."""

    revision: str | None
    has_tables: bool

    @property
    def legacy(self) -> bool:
        """Tables made by ``create_all`` without a revision: schema 0001."""
        return self.revision is None and self.has_tables


def alembic_config(connection: Connection | None = None):  # type: ignore[no-untyped-def]
    """An alembic ``Config`` for ``db/migrations`` (optionally bound to an open connection)."""
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("path_separator", "os")
    cfg.set_main_option("version_locations", str(MIGRATIONS_DIR / "versions"))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def script_head() -> str:
    """The head revision according to the scripts on disk."""
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None
    return head


def _where(engine: Engine) -> str:
    return str(sqlite_path(engine)) if is_sqlite(engine) else redact(engine.url)


def schema_state(conn: Connection) -> SchemaState:
    """Read the revision and whether the dlth-orch tables exist (no writes)."""
    insp = inspect(conn)
    has_tables = insp.has_table("jobs")
    revision = None
    if insp.has_table(VERSION_TABLE):
        rows = conn.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).scalars().all()
        if len(rows) > 1:
            raise StoreError(f"database {_where(conn.engine)}: several schema revisions recorded ({rows})")
        revision = rows[0] if rows else None
    return SchemaState(revision, has_tables)


def current(engine: Engine) -> SchemaState:
    """The database's :class:`SchemaState` (raises a one-line StoreError if it cannot be read)."""
    try:
        with engine.connect() as conn:
            return schema_state(conn)
    except DBAPIError as exc:
        raise connection_error(engine, exc) from exc


def _known(revision: str) -> bool:
    from alembic.script import ScriptDirectory
    from alembic.util import CommandError

    try:
        return ScriptDirectory.from_config(alembic_config()).get_revision(revision) is not None
    except CommandError:
        return False


def _newer_message(engine: Engine, revision: str) -> str:
    return (f"database {_where(engine)}: schema revision {revision} is unknown to this dlth-orch (it knows up "
            f"to {HEAD}): the database was upgraded by a newer dlth-orch; upgrade dlth-orch here too")


@contextmanager
def _migration_transaction(engine: Engine) -> Iterator[Connection]:
    """A connection inside one write transaction holding the migration lock.

    On SQLite, foreign keys are off while migrating: alembic's batch mode rebuilds a table by copying and
    dropping it, and dropping a parent with foreign keys on would cascade-delete its children's rows.
    ``PRAGMA foreign_key_check`` then verifies the result before the commit.
    """
    try:
        with engine.connect() as conn:
            conn = conn.execution_options(**{WRITE_OPTION: True})
            sqlite = conn.dialect.name == "sqlite"
            if sqlite:  # must run outside a transaction to take effect
                conn.connection.driver_connection.execute("PRAGMA foreign_keys=OFF")
            try:
                with conn.begin():
                    if conn.dialect.name == "postgresql":
                        conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_LOCK_KEY})
                    yield conn
                    if sqlite:
                        broken = conn.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
                        if broken:
                            raise StoreError(f"database {_where(engine)}: migration broke foreign keys "
                                             f"({len(broken)} rows, e.g. {tuple(broken[0])}); rolled back")
            finally:
                if sqlite:
                    conn.connection.driver_connection.execute("PRAGMA foreign_keys=ON")
    except DBAPIError as exc:
        raise connection_error(engine, exc) from exc


def upgrade(engine: Engine, revision: str = "head") -> tuple[str | None, str]:
    """Migrate to ``revision`` in one locked transaction; return ``(revision before, revision after)``."""
    from alembic import command

    with _migration_transaction(engine) as conn:
        state = schema_state(conn)
        if state.revision is not None and not _known(state.revision):
            raise StoreError(_newer_message(engine, state.revision))
        cfg = alembic_config(conn)
        if state.legacy:
            log.info("database %s: tables without a revision: stamping %s", _where(engine), BASE_REVISION)
            command.stamp(cfg, BASE_REVISION)
        before = state.revision or (BASE_REVISION if state.legacy else None)
        command.upgrade(cfg, revision)
        after = schema_state(conn).revision
    assert after is not None
    if before != after:
        log.info("database %s: schema upgraded %s -> %s", _where(engine), before or "(empty)", after)
    return before, after


def downgrade(engine: Engine, revision: str) -> tuple[str | None, str | None]:
    """Migrate back to ``revision`` (for recovering from a bad upgrade); ``(before, after)``."""
    from alembic import command

    with _migration_transaction(engine) as conn:
        before = schema_state(conn).revision
        command.downgrade(alembic_config(conn), revision)
        after = schema_state(conn).revision
    log.info("database %s: schema downgraded %s -> %s", _where(engine), before, after or "(empty)")
    return before, after


def check_current(engine: Engine) -> None:
    """Raise a one-line :class:`StoreError` unless the database is at :data:`HEAD` (workers' check)."""
    state = current(engine)
    where = _where(engine)
    if state.revision == HEAD:
        return
    if state.revision is None and not state.has_tables:
        raise StoreError(f"database {where}: no dlth-orch tables (workers never create them); "
                         "run `dlth-orch db upgrade` or launch a grid first")
    revision = state.revision or BASE_REVISION
    if _known(revision):
        raise StoreError(f"database {where}: schema revision {revision} is behind this dlth-orch's {HEAD}; "
                         "run `dlth-orch db upgrade` (workers never migrate)")
    raise StoreError(_newer_message(engine, revision))
