"""Schema creation for a new or existing database."""

from __future__ import annotations

from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError

from db.engine import StoreError
from db.models import Base


def ensure_schema(engine: Engine) -> None:
    """Create missing tables (idempotent)."""
    try:
        Base.metadata.create_all(engine)
    except OperationalError as exc:
        raise StoreError(f"database {engine.url.render_as_string(hide_password=True)}: cannot open "
                         f"({str(exc.orig).strip().splitlines()[0]})") from exc
