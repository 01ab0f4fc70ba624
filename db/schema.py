"""Schema creation and checks for a new or existing database (through alembic, see :mod:`db.migrate`)."""

from __future__ import annotations

from sqlalchemy.engine import Engine

from db.migrate import HEAD, check_current, current, upgrade


def ensure_schema(engine: Engine) -> None:
    """Bring the database to the newest schema: create it, stamp a pre-migration one, or upgrade it.

    Cheap when the database is already at head (one query, alembic is not loaded).
    """
    if current(engine).revision != HEAD:
        upgrade(engine)


def require_schema(engine: Engine) -> None:
    """Refuse (one-line StoreError) a database that is not at this code's head revision (workers)."""
    check_current(engine)
