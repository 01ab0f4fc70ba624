"""Engine creation: URL validation, SQLite pragmas and transactions, default locations, one-line errors.

SQLite runs in WAL mode with a busy timeout, and SQLAlchemy (not the ``sqlite3`` module) emits ``BEGIN``:
read transactions use ``BEGIN DEFERRED`` (a consistent snapshot that never blocks writers) and write
transactions ``BEGIN IMMEDIATE`` (the write lock is taken up front and waited for with the busy timeout,
so a transaction that reads and then writes never fails with ``database is locked``). A connection asks
for a write transaction with the execution option ``dlth_write=True`` (see :meth:`db.store.Store.session`).
"""

from __future__ import annotations

import re
import sqlite3
import time
import urllib.parse
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, event
from sqlalchemy.engine import URL, Connection, Engine, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError, OperationalError

from specs.settings import env_settings

SQLITE_DRIVERS = ("sqlite", "sqlite+pysqlite")
POSTGRES_DRIVERS = ("postgresql", "postgresql+psycopg")
SUPPORTED_DRIVERS = SQLITE_DRIVERS + POSTGRES_DRIVERS
DEFAULT_SQLITE_TIMEOUT_S = 60.0
WRITE_OPTION = "dlth_write"
_QUERY_PASSWORD = re.compile(r"([?&]password=)[^&#]*", re.IGNORECASE)
_QUERY_PASSWORD_VALUE = re.compile(r"[?&]password=([^&#]*)", re.IGNORECASE)
# connection failures that retrying cannot cure (psycopg gives no SQLSTATE for them)
_PERMANENT_CONNECT_ERRORS = ("does not exist", "authentication failed", "no pg_hba.conf entry")
_ANSWERED: set[str] = set()  # databases (redacted URLs) this process has connected to at least once


class StoreError(ValueError):
    """The database URL or the database itself is unusable; the message is one line."""


class StoreUnavailable(StoreError):
    """The database cannot be reached right now (server down, lock held too long): worth retrying."""


def workspace_dir() -> Path:
    """Where dlth-orch keeps its default database and job directories (``DLTH_HOME`` or ``./.dlth``)."""
    return env_settings().home


def default_url() -> str:
    """The database URL to use: ``DLTH_DB`` if set, else a SQLite file in the workspace."""
    return env_settings().db or f"sqlite:///{workspace_dir() / 'dlth.db'}"


def redact(url: str | URL) -> str:
    """``url`` with its password hidden, for messages, whatever its shape: without a scheme, with an
    unencoded ``@`` in the password (everything before the last ``@`` of the authority is user info),
    malformed, or with ``password=`` in its query."""
    text = url.render_as_string(hide_password=False) if isinstance(url, URL) else str(url)
    scheme, sep, rest = text.partition("://")
    if not sep:
        scheme, rest = "", text
    end = min((i for i in (rest.find("/"), rest.find("?"), rest.find("#")) if i >= 0), default=len(rest))
    authority, tail = rest[:end], rest[end:]
    if "@" in authority:
        userinfo, host = authority.rsplit("@", 1)
        user, colon, _password = userinfo.partition(":")
        authority = f"{user}:***@{host}" if colon else authority
    elif ":" in authority and not authority.startswith("[") and not authority.rpartition(":")[2].isdigit():
        authority = authority.partition(":")[0] + ":***"  # "user:password" without a host
    tail = _QUERY_PASSWORD.sub(r"\1***", tail)
    return f"{scheme}{'://' if sep else ''}{authority}{tail}"


def scrub(text: str, url: str | URL) -> str:
    """``text`` (a driver's message) with every appearance of ``url``'s password hidden."""
    secrets = {s for s in _passwords(url) if len(s) >= 3}
    for secret in sorted(secrets, key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


def _passwords(url: str | URL) -> set[str]:
    """The password of ``url`` as written and decoded, and its pieces around unencoded ``@`` signs."""
    text = url.render_as_string(hide_password=False) if isinstance(url, URL) else str(url)
    rest = text.partition("://")[2] or text
    authority = rest.split("/", 1)[0].split("?", 1)[0]
    found = set(_QUERY_PASSWORD_VALUE.findall(text))
    if "@" in authority:
        password = authority.rsplit("@", 1)[0].partition(":")[2]
        found.update({password, urllib.parse.unquote(password), *password.split("@")})
    return {s for s in found if s}


def first_line(exc: BaseException) -> str:
    """The first non-empty line of an exception's message (the DBAPI's own message when wrapped)."""
    orig = getattr(exc, "orig", None)
    text = str(orig if orig is not None else exc).strip()
    return next((ln.strip() for ln in text.splitlines() if ln.strip()), type(exc).__name__)


def has_answered(url: str | URL | None = None) -> bool:
    """Whether this process ever connected to the database at ``url`` (any database when ``None``): only
    such a database is worth waiting for when it goes away; one that never answered is a wrong URL."""
    return bool(_ANSWERED) if url is None else redact(url) in _ANSWERED


def _remember_answers(engine: Engine) -> None:
    """Note every successful connection of ``engine`` (see :func:`has_answered`)."""
    key = redact(engine.url)
    event.listen(engine, "connect", lambda *_: _ANSWERED.add(key))


def parse_url(url: str) -> URL:
    """Validate ``url`` and normalise its driver (``postgresql`` -> ``postgresql+psycopg``); every error
    is one line that shows the URL without its password."""
    expected = "expected sqlite:///PATH or postgresql+psycopg://USER:PASSWORD@HOST:PORT/DBNAME"
    scheme, sep, rest = url.partition("://")
    if not sep or not scheme:
        raise StoreError(f"database URL {redact(url)!r}: {expected}")
    if rest.split("/", 1)[0].count("@") > 1:
        raise StoreError(f"database URL {redact(url)!r}: the user or password holds an unencoded '@' "
                         "(write it as %40)")
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError) as exc:  # ValueError: a port that is not a number
        detail = "the port must be a number" if "int()" in str(exc) else "malformed"
        raise StoreError(f"database URL {redact(url)!r}: {detail}; {expected}") from None
    if parsed.drivername not in SUPPORTED_DRIVERS:
        raise StoreError(f"database URL {redact(parsed)!r}: expected a driver among "
                         f"{', '.join(SUPPORTED_DRIVERS)}, got {parsed.drivername!r}")
    if parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")
    if parsed.drivername in SQLITE_DRIVERS and (not parsed.database or parsed.database == ":memory:"
                                                or parsed.database.startswith("file:")):
        raise StoreError(f"database URL {redact(url)!r}: expected a SQLite file path (sqlite:///PATH)")
    if parsed.drivername.startswith("postgresql") and not parsed.database:
        raise StoreError(f"database URL {redact(parsed)!r}: expected a database name "
                         "(postgresql+psycopg://USER:PASSWORD@HOST:PORT/DBNAME)")
    return parsed


def is_sqlite(engine_or_url: Engine | URL) -> bool:
    url = engine_or_url.url if isinstance(engine_or_url, Engine) else engine_or_url
    return url.get_backend_name() == "sqlite"


def sqlite_path(engine_or_url: Engine | URL) -> Path:
    """The file of a SQLite engine or URL."""
    url = engine_or_url.url if isinstance(engine_or_url, Engine) else engine_or_url
    assert url.database
    return Path(url.database).expanduser().resolve()


def require_database(url: str) -> None:
    """Raise :class:`StoreError` if ``url`` names a SQLite file that does not exist yet (commands that
    only read a grid must not create an empty database where the user happens to stand)."""
    parsed = parse_url(url)
    if is_sqlite(parsed) and not sqlite_path(parsed).exists():
        raise StoreError(f"database {sqlite_path(parsed)}: no such file (launch a grid first, or name the "
                         "database with --db URL or DLTH_DB)")


def make_engine(url: str, *, must_exist: bool = False) -> Engine:
    """Create an engine for ``url`` (SQLite file or PostgreSQL), or raise :class:`StoreError`.

    ``must_exist``: a SQLite file must already exist (workers never create the database).
    A SQLite URL may set the busy timeout in seconds with ``?timeout=S`` (default 60, or
    ``DLTH_SQLITE_TIMEOUT``).
    """
    parsed = parse_url(url)
    if is_sqlite(parsed):
        return _sqlite_engine(parsed, must_exist=must_exist)
    try:
        engine = create_engine(
            parsed, pool_pre_ping=True, pool_size=2, max_overflow=8, pool_recycle=1800,
            connect_args={"connect_timeout": 10, "application_name": "dlth-orch"},
        )
        _remember_answers(engine)
        return engine
    except (NoSuchModuleError, ImportError) as exc:
        raise StoreError(f"database URL {redact(parsed)!r}: driver not installed "
                         f"({scrub(first_line(exc), parsed)})") from exc


def _sqlite_engine(parsed: URL, *, must_exist: bool) -> Engine:
    path = sqlite_path(parsed)
    query = dict(parsed.query)
    try:
        timeout = float(query.pop("timeout", env_settings().sqlite_timeout_s))
    except ValueError as exc:
        raise StoreError(f"database URL {redact(parsed)}: timeout: expected a number of seconds") from exc
    if query:
        raise StoreError(f"database URL {redact(parsed)}: unknown option(s) {', '.join(sorted(query))} "
                         "(SQLite URLs take only ?timeout=SECONDS)")
    if path.exists():
        check_sqlite_file(path)
    elif must_exist:
        raise StoreError(f"database {path}: no such file (only the orchestrator creates it: "
                         "run `dlth-orch db upgrade` or launch a grid first)")
    else:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"database {path}: cannot create its directory ({exc.strerror})") from exc
    engine = create_engine(parsed.set(database=str(path), query={}), connect_args={"timeout": timeout})
    busy_ms = int(timeout * 1000)

    def on_connect(dbapi_conn, _record) -> None:  # type: ignore[no-untyped-def]
        dbapi_conn.isolation_level = None  # SQLAlchemy emits BEGIN itself (see on_begin)
        cur = dbapi_conn.cursor()
        cur.execute(f"PRAGMA busy_timeout={busy_ms}")
        _enter_wal(cur, timeout)
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()

    def on_begin(conn: Connection) -> None:
        mode = "IMMEDIATE" if conn.get_execution_options().get(WRITE_OPTION) else "DEFERRED"
        conn.exec_driver_sql(f"BEGIN {mode}")

    event.listen(engine, "connect", on_connect)
    event.listen(engine, "begin", on_begin)
    _remember_answers(engine)
    return engine


def _enter_wal(cur: Any, timeout: float) -> None:
    """``PRAGMA journal_mode=WAL``, retried within the busy timeout: switching a new file to WAL takes an
    exclusive lock for which SQLite does not call the busy handler, so orchestrators opening one fresh
    database at once would otherwise see "database is locked" at once."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            cur.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() >= deadline:
                raise
            time.sleep(0.05)


def check_sqlite_file(path: Path) -> None:
    """Raise :class:`StoreError` unless ``path`` is missing, empty or a readable SQLite database.

    The check goes through sqlite3 itself, never a plain ``open()``: closing any descriptor of the file
    would drop this process's POSIX locks on it, including those of open SQLite connections.
    """
    if path.is_dir():
        raise StoreError(f"database {path}: is a directory, expected a SQLite file")
    if not path.exists() or path.stat().st_size == 0:
        return
    try:
        con = sqlite3.connect(f"file:{urllib.parse.quote(str(path))}?mode=ro", uri=True, timeout=60)
        try:
            con.execute("PRAGMA schema_version")
        finally:
            con.close()
    except sqlite3.DatabaseError as exc:
        if "not a database" in str(exc) or "malformed" in str(exc):
            raise StoreError(f"database {path}: not a SQLite database ({exc})") from exc
        raise StoreError(f"database {path}: cannot read ({exc})") from exc


def connection_error(engine: Engine, exc: DBAPIError) -> StoreError:
    """Turn a DBAPI error raised while connecting into a one-line :class:`StoreError`.

    Operational errors (server down, refused, lock held past the busy timeout) become
    :class:`StoreUnavailable`, which :func:`db.retry.with_retries` retries; a wrong password or an
    unknown database or role stays a plain :class:`StoreError` (retrying cannot help).
    """
    line = scrub(first_line(exc), engine.url)
    permanent = any(m in line for m in _PERMANENT_CONNECT_ERRORS)
    cls = StoreUnavailable if isinstance(exc, OperationalError) and not permanent else StoreError
    where = sqlite_path(engine) if is_sqlite(engine) else redact(engine.url)
    return cls(f"database {where}: cannot open ({line})")
