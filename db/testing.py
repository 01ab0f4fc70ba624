"""Helpers for tests and benchmarks: scratch PostgreSQL databases and a store URL fixture for both backends.

The server is the one ``scripts/postgres.sh up`` starts; its URL comes from ``DLTH_TEST_PG_URL`` (else
the script's default). Each scratch database is created fresh and dropped afterwards. Under CI (:func:`in_ci`)
a missing server fails the test instead of skipping it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from db.engine import first_line

DEFAULT_PG_URL = "postgresql+psycopg://dlth:dlth@127.0.0.1:5432/dlth"


def in_ci() -> bool:
    """Whether the tests run under CI (``CI`` is ``1``, ``true`` or ``yes``, any case): there a missing
    service or tool fails the test instead of skipping it."""
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def postgres_server_url() -> str:
    """URL of the PostgreSQL database used to create scratch databases."""
    return os.environ.get("DLTH_TEST_PG_URL", DEFAULT_PG_URL)


def postgres_problem(url: str | None = None) -> str | None:
    """Why the PostgreSQL server cannot be used, or ``None`` when it can."""
    engine = create_engine(url or postgres_server_url(), connect_args={"connect_timeout": 3})
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        return None
    except DBAPIError as exc:
        return f"PostgreSQL at {make_url(url or postgres_server_url()).render_as_string()}: {first_line(exc)}"
    finally:
        engine.dispose()


@contextmanager
def scratch_postgres(prefix: str = "dlth_t") -> Iterator[str]:
    """Create an empty database on the server, yield its URL, drop it (closing its sessions) afterwards."""
    server = make_url(postgres_server_url())
    name = f"{prefix}_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    admin = create_engine(server, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        yield server.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def require_postgres() -> None:
    """Skip the calling test when no PostgreSQL server is reachable, or fail under CI."""
    import pytest

    problem = postgres_problem()
    if problem is None:
        return
    if in_ci():
        pytest.fail(f"{problem} (CI: PostgreSQL tests must run; start it with scripts/postgres.sh up)")
    pytest.skip(f"{problem} (start it with scripts/postgres.sh up)")


class PrivatePostgres:
    """A throw-away PostgreSQL server of this test alone (its own data directory and port), which a test
    may stop and start again without disturbing anyone else's server. Trust authentication on 127.0.0.1.
    """

    def __init__(self, bindir: Path, datadir: Path, port: int) -> None:
        self.bindir, self.datadir, self.port = bindir, datadir, port
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{port}/dlth"

    def _run(self, *args: str) -> None:
        cmd = [str(self.bindir / args[0]), *args[1:]]
        if os.geteuid() == 0:  # PostgreSQL refuses to run as root
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        subprocess.run(cmd, check=True, capture_output=True, timeout=60)

    def start(self) -> None:
        opts = f"-p {self.port} -k {self.datadir} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run("pg_ctl", "-D", str(self.datadir), "-o", opts, "-l", str(self.datadir / "server.log"),
                  "-w", "start")

    def stop(self) -> None:
        """Stop at once, as a crash or a network cut would look to clients."""
        self._run("pg_ctl", "-D", str(self.datadir), "-m", "immediate", "-w", "stop")


def postgres_bindir() -> Path | None:
    """The newest installed PostgreSQL server's bin directory (Debian layout), if any."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parent.parent.name))
    return found[-1].parent if found else None


@contextmanager
def private_postgres() -> Iterator[PrivatePostgres]:
    """Start a private PostgreSQL server with an empty database ``dlth``; remove it all afterwards."""
    import pytest

    bindir = postgres_bindir()
    if bindir is None:
        if in_ci():
            pytest.fail("no PostgreSQL server binaries (CI: run scripts/postgres.sh up first)")
        pytest.skip("no PostgreSQL server binaries (install with scripts/postgres.sh up)")
    datadir = Path(tempfile.mkdtemp(prefix="dlth-pg-"))  # not under pytest's 0700 tmp: postgres must reach it
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = PrivatePostgres(bindir, datadir, port)
    if os.geteuid() == 0:
        shutil.chown(datadir, "postgres", "postgres")
    try:
        server._run("initdb", "-D", str(datadir), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync")
        server.start()
        admin = create_engine(server.url.rsplit("/", 1)[0] + "/postgres", isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text("CREATE DATABASE dlth"))
        admin.dispose()
        yield server
    finally:
        with contextlib.suppress(subprocess.CalledProcessError):
            server.stop()
        shutil.rmtree(datadir, ignore_errors=True)


def _backend_params() -> list[Any]:
    import pytest

    return ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


@contextmanager
def database_url(backend: str, tmp_path: Path) -> Iterator[str]:
    """A URL of a fresh, empty database of ``backend`` (``"sqlite"`` or ``"postgres"``)."""
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'dlth.db'}"
        return
    require_postgres()
    with scratch_postgres() as url:
        yield url


def _make_db_url_fixture():  # type: ignore[no-untyped-def]
    import pytest

    @pytest.fixture(params=_backend_params())
    def db_url(request: Any, tmp_path: Path) -> Iterator[str]:
        """URL of a fresh empty database, once on SQLite and once on PostgreSQL (``-m postgres``)."""
        with database_url(request.param, tmp_path) as url:
            yield url

    return db_url


def __getattr__(name: str) -> Any:
    """``from db.testing import db_url  # noqa: F401`` gives a test module the fixture (pytest loads lazily)."""
    if name == "db_url":
        fixture = _make_db_url_fixture()
        globals()["db_url"] = fixture
        return fixture
    raise AttributeError(name)
