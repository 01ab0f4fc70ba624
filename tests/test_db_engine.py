"""Opening a database: one-line errors for bad URLs and files, SQLite settings, the network-FS check; the
password never shown whatever the URL's shape; the grid's one 0600 worker settings file and its removal."""

from __future__ import annotations

import logging
import socket
from pathlib import Path

import pytest
from sqlalchemy import text

from db import Store, StoreError, StoreUnavailable, netfs
from db.engine import make_engine
from db.testing import postgres_server_url, require_postgres


def one_line_error(url: str, cls: type[Exception] = StoreError, **kw: object) -> str:
    with pytest.raises(cls) as info:
        Store(url, **kw)
    msg = str(info.value)
    assert "\n" not in msg and msg
    return msg


@pytest.mark.parametrize("url, expected", [
    ("not a url", "expected sqlite:///PATH or postgresql+psycopg://"),
    ("mysql://u:p@h/db", "got 'mysql'"),
    ("sqlite://", "expected a SQLite file path"),
    ("sqlite:///:memory:", "expected a SQLite file path"),
    ("postgresql+psycopg://u:secret@127.0.0.1:5432", "expected a database name"),
    ("postgresql+psycopg2://u:p@h/db", "got 'postgresql+psycopg2'"),
])
def test_unknown_or_malformed_urls_get_a_one_line_error(url: str, expected: str) -> None:
    msg = one_line_error(url)
    assert expected in msg
    assert "secret" not in msg


def test_sqlite_files_that_are_not_databases_are_refused(tmp_path: Path) -> None:
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is a CSV file, not a database\n" * 10)
    assert f"database {junk}: not a SQLite database" in one_line_error(f"sqlite:///{junk}")
    assert "is a directory" in one_line_error(f"sqlite:///{tmp_path}")
    corrupt = tmp_path / "corrupt.db"
    Store(f"sqlite:///{corrupt}").close()
    data = bytearray(corrupt.read_bytes())
    data[100:4096] = b"\xff" * (4096 - 100)  # a valid header over a ruined first page
    corrupt.write_bytes(bytes(data))
    assert f"database {corrupt}" in one_line_error(f"sqlite:///{corrupt}")
    assert "timeout: expected a number" in one_line_error(f"sqlite:///{tmp_path}/a.db?timeout=soon")
    assert "unknown option(s) mode" in one_line_error(f"sqlite:///{tmp_path}/a.db?mode=ro")


def test_a_worker_does_not_create_a_missing_sqlite_file(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "dlth.db"
    assert "no such file" in one_line_error(f"sqlite:///{path}", create=False)
    assert not path.exists() and not path.parent.exists()


@pytest.mark.postgres
def test_unreachable_or_unknown_postgres_gets_a_one_line_error() -> None:
    require_postgres()
    with socket.socket() as s:  # a port with no server behind it
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    msg = one_line_error(f"postgresql+psycopg://dlth:pw@127.0.0.1:{port}/dlth", StoreUnavailable)
    assert f"127.0.0.1:{port}" in msg and "pw" not in msg
    server = postgres_server_url().rsplit("/", 1)[0]
    msg = one_line_error(f"{server}/no_such_db_x")
    assert 'database "no_such_db_x" does not exist' in msg
    with pytest.raises(StoreError) as info:
        Store(f"{server}/no_such_db_x")
    assert not isinstance(info.value, StoreUnavailable)  # retrying cannot help


def test_sqlite_runs_in_wal_mode_with_a_busy_timeout(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'a.db'}?timeout=7.5")
    with engine.connect() as conn:
        assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert conn.execute(text("PRAGMA busy_timeout")).scalar() == 7500
        assert conn.execute(text("PRAGMA foreign_keys")).scalar() == 1
    engine.dispose()


MOUNTS = r"""/dev/vda / ext4 rw,relatime 0 0
server:/export/home {root}/home nfs4 rw,relatime,vers=4.2 0 0
10.0.0.1@tcp:/scratch {root}/scratch lustre rw 0 0
gpfs0 {root}/gpfs gpfs rw 0 0
/dev/vdb {root}/home/local\040disk ext4 rw 0 0
"""


@pytest.fixture
def mounts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fabricated mount table (a multi-node network file system cannot exist on this machine)."""
    table = tmp_path / "mounts"
    table.write_text(MOUNTS.format(root=tmp_path))
    for point in ("home", "scratch", "gpfs", "home/local disk", "homework"):
        (tmp_path / point).mkdir(parents=True)
    monkeypatch.setattr(netfs, "MOUNTS_FILE", str(table))
    return tmp_path


def test_network_file_systems_are_detected_from_the_mount_table(mounts: Path) -> None:
    assert netfs.network_fs_type(mounts / "home" / "u" / "dlth.db") == "nfs4"
    assert netfs.network_fs_type(mounts / "scratch" / "x.db") == "lustre"
    assert netfs.network_fs_type(mounts / "gpfs" / "a" / "b" / "c.db") == "gpfs"
    assert netfs.network_fs_type(mounts / "home" / "local disk" / "x.db") is None  # longest mount wins
    assert netfs.network_fs_type(mounts / "homework" / "x.db") is None  # a prefix, not a parent
    assert netfs.network_fs_type(mounts / "other.db") is None
    assert netfs.network_fs_type("/tmp/x.db", mounts_file="/proc/mounts") is None  # this machine: local


def test_the_policy_refuses_workers_on_other_hosts_and_warns_otherwise(
        mounts: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = mounts / "home" / "dlth.db"
    with pytest.raises(StoreError, match=r"worker on host 'node7' while the orchestrator runs on 'login1'"):
        netfs.check_sqlite_location(path, worker=True, orchestrator_host="login1", this_host="node7")
    with caplog.at_level(logging.WARNING):
        assert netfs.check_sqlite_location(path, worker=True, orchestrator_host="login1",
                                           this_host="login1") == "nfs4"
        assert netfs.check_sqlite_location(path, worker=False, orchestrator_host=None, this_host="login1") == "nfs4"
    assert "network file system (nfs4)" in caplog.text and "PostgreSQL" in caplog.text
    assert netfs.check_sqlite_location(mounts / "local.db", worker=True, orchestrator_host="x",
                                       this_host="y") is None


def test_a_store_on_nfs_records_the_orchestrator_host_and_refuses_remote_workers(
        mounts: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    url = f"sqlite:///{mounts / 'home' / 'dlth.db'}"
    monkeypatch.setattr(netfs, "hostname", lambda: "login1")
    with caplog.at_level(logging.WARNING), Store(url) as orchestrator:
        assert orchestrator.get_meta("orchestrator_hosts") == '["login1"]'
    assert "SQLite file on a network file system (nfs4)" in caplog.text
    with Store(url, create=False) as worker_on_login_node:
        assert worker_on_login_node.list_grids() == []
    monkeypatch.setattr(netfs, "hostname", lambda: "node7")
    msg = one_line_error(url, create=False)
    assert "SQLite file on a network file system (nfs4) used by a worker on host 'node7'" in msg
    with Store(url) as second_orchestrator:  # an orchestrator elsewhere is allowed (and warned)
        assert second_orchestrator.get_meta("orchestrator_hosts") == '["login1", "node7"]'


def test_opening_a_second_store_never_leaves_the_first_reading_a_stale_snapshot(tmp_path) -> None:  # noqa: ANN001
    """Regression: checking a SQLite file with a plain open()/close() dropped this process's POSIX locks,
    and an open Store went on reading an old snapshot after another process changed the rows."""
    import subprocess
    import sys

    from db import NewJob, Store

    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    first = Store(url)
    gid = first.upsert_grid("g", "{}", "h", "", 1)
    first.add_jobs(gid, [NewJob(f"h{i}", "{}", "supervised", "k", i, str(tmp_path), "full", "c") for i in range(2)])
    states = ["PENDING", "QUEUED", "CANCELLED", "PENDING"]
    for src, dst in zip(states, states[1:], strict=False):
        assert {j.state for j in first.jobs("g")} == {src}
        Store(url).close()  # a second store in the same process checks the file
        subprocess.run([sys.executable, "-c", f"from db import Store; Store({url!r}).set_state(['h0', 'h1'], "
                        f"{dst!r}, [{src!r}])"], check=True)
        assert {j.state for j in first.jobs("g")} == {dst}


# --- secrets: the password of a database URL is never shown, whatever the URL's shape ----------------------
SECRET = "S3kr1t-pw"
BAD_SHAPES = [  # (URL, what the one-line error says)
    (f"dlth:{SECRET}@db.example/dlth", "expected sqlite:///PATH or postgresql+psycopg://"),  # no scheme
    (f"dlth:{SECRET}", "expected sqlite:///PATH"),
    (f"://dlth:{SECRET}@db.example/dlth", "expected sqlite:///PATH"),
    (f"postgresql://dlth:p@{SECRET}@db.example/dlth", "unencoded '@' (write it as %40)"),
    (f"postgresql://dlth:{SECRET}@db.example:/dlth", "the port must be a number"),  # :port missing
    (f"postgresql://dlth:{SECRET}@db.example:fivefour/dlth", "the port must be a number"),
    (f"postgresql://dlth:{SECRET}@[::1/dlth", "expected sqlite:///PATH"),  # malformed
    (f"postgresql://dlth:{SECRET}", "expected sqlite:///PATH"),
    (f"postgres://dlth:{SECRET}@db.example/dlth", "got 'postgres'"),
    (f"postgresql://dlth:{SECRET}@db.example/", "expected a database name"),
]


@pytest.mark.parametrize("url, expected", BAD_SHAPES)
def test_a_malformed_url_is_one_line_without_its_password(url: str, expected: str) -> None:
    from db.engine import redact

    msg = one_line_error(url)
    assert expected in msg and SECRET not in msg, msg
    assert SECRET not in redact(url) and "***" in redact(url)


def test_redact_hides_passwords_in_every_shape_and_scrub_cleans_driver_messages() -> None:
    from db.engine import redact, scrub

    assert redact(f"postgresql+psycopg://dlth:{SECRET}@h:5432/db") == "postgresql+psycopg://dlth:***@h:5432/db"
    assert redact(f"dlth:{SECRET}@h/db") == "dlth:***@h/db"
    assert redact(f"postgresql://dlth:a@b@{SECRET}@h/db") == "postgresql://dlth:***@h/db"
    assert redact(f"postgresql://h/db?user=dlth&password={SECRET}&x=1") == "postgresql://h/db?user=dlth&password=***&x=1"
    assert redact("postgresql://dlth@h:5432/db") == "postgresql://dlth@h:5432/db"  # nothing to hide
    assert redact("h:5432") == "h:5432" and redact("sqlite:////tmp/a@b/x.db") == "sqlite:////tmp/a@b/x.db"
    encoded = "p%40ss%3Aword"  # the driver may echo the decoded password
    url = f"postgresql://dlth:{encoded}@h/db"
    assert scrub("FATAL: bad password p@ss:word for p%40ss%3Aword", url) == "FATAL: bad password *** for ***"
    unencoded = f"postgresql://dlth:p@x{SECRET}@h/db"
    assert scrub(f"could not resolve 'x{SECRET}@h'", unencoded) == "could not resolve '***@h'"


def test_db_commands_and_status_print_no_password_and_exit_2(
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    from orchestrator.cli import main

    monkeypatch.setenv("DLTH_DB_WAIT_S", "0")
    with socket.socket() as s:  # a port with no server behind it: a well-formed URL that cannot connect
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    urls = [u for u, _ in BAD_SHAPES] + [f"postgresql+psycopg://dlth:{SECRET}@127.0.0.1:{port}/dlth"]
    for url in urls:
        for args in (["db", "current"], ["db", "upgrade"], ["status"], ["export", "g", "--out", "x"]):
            with pytest.raises(SystemExit) as exit_info:
                main(["--db", url, *args])
            out = capsys.readouterr()
            assert exit_info.value.code == 2, (url, args, out)
            lines = [ln for ln in out.err.splitlines() if ln.strip() and "WARNING" not in ln]
            assert len(lines) == 1 and lines[0].startswith("error: database"), (url, args, out)
            assert SECRET not in out.out + out.err and "Traceback" not in out.err, (url, args, out)


# --- the grid's one worker settings file ----------------------------------------------------------------
def _grid_with_jobs(url: str, tmp_path: Path, n: int = 2) -> Store:
    import json

    from db import NewJob

    store = Store(url)
    gid = store.upsert_grid("g", "{}", "sh", "g.toml", 0)
    store.add_jobs(gid, [NewJob(f"j{i}", json.dumps({}), "supervised", "ck", i, str(tmp_path / f"j{i}"), "full",
                                "sup") for i in range(n)])
    return store


def test_one_private_settings_file_per_grid_removed_with_its_last_job(tmp_path: Path) -> None:
    import stat

    from db import AttemptState
    from orchestrator.backends.settings_file import release_grid_settings, write_grid_settings
    from specs.settings import WorkerSettings

    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    store = _grid_with_jobs(url, tmp_path)
    path = write_grid_settings(store, "g", url, "slurm")
    assert write_grid_settings(store, "g", url, "slurm") == path  # one file per grid, however often written
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and WorkerSettings.read(path).grid == "g"
    for job in ("j0", "j1"):
        assert not release_grid_settings(store, "g") and path.is_file()  # a job may still start a worker
        attempt = store.claim(job, backend="slurm", backend_id=None, host="n", pid=1)
        assert attempt is not None
        if job == "j0":
            store.finish_attempt(attempt, AttemptState.FAILED, reason="x")  # out of its budget of 0
        else:
            store.complete(job, attempt, {"acc": 1.0})
    assert release_grid_settings(store, "g") and not path.exists()  # the last job ended
    store.close()


def test_cancel_removes_the_grids_settings_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from orchestrator.backends.settings_file import write_grid_settings
    from orchestrator.cli import main

    url = f"postgresql+psycopg://dlth:{SECRET}@db.example/dlth"  # what the file would hold
    db = f"sqlite:///{tmp_path / 'db.sqlite'}"
    store = _grid_with_jobs(db, tmp_path)
    path = write_grid_settings(store, "g", url, "local")
    assert SECRET.encode() in path.read_bytes()
    main(["--db", db, "cancel", "g", "--yes"])
    assert "2 jobs cancelled" in capsys.readouterr().out
    assert not path.exists()
    store.close()
