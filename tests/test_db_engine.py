"""Opening a database: one-line errors for bad URLs and files, SQLite settings, the network-FS check."""

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
