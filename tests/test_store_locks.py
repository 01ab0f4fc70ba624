"""The grid lock lives in the database and the grid is recorded in one transaction (SQLite and PostgreSQL).

Two launchers of one grid, in two processes (on one host here; on two hosts they meet in the same
PostgreSQL server, which is what the advisory lock is for): exactly one gets the lock; the other is told
who holds it and records nothing. A launcher that dies frees the grid.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest

from db import NewJob, Store
from db.locks import STALE_S, _meta_key
from db.models import Meta, utcnow
from db.netfs import hostname
from db.testing import db_url  # noqa: F401  (fixture: a fresh database on each backend)

REPO = Path(__file__).resolve().parents[1]
# a launcher stand-in: take grid g's lock, say whether it got it, hold it until stdin closes
HOLDER = """
import sys
from db import Store
store = Store(sys.argv[1])
with store.grid_lock("g") as got:
    print("held" if got.held else "busy " + got.holder.describe(), flush=True)
    sys.stdin.read()
"""


def holder(url: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", HOLDER, url], cwd=REPO, text=True, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(REPO)})


def test_two_launchers_at_once_one_holds_the_grid_the_other_is_told_who(db_url: str) -> None:  # noqa: F811
    Store(db_url).close()  # the schema, before two processes race to create it
    procs = [holder(db_url) for _ in range(2)]
    try:
        said = [p.stdout.readline().strip() for p in procs]  # type: ignore[union-attr]
        assert sorted(line.split()[0] for line in said) == ["busy", "held"], said
        winner = procs[said.index("held")]
        assert said[1 - said.index("held")].startswith(f"busy pid {winner.pid} on host {hostname()} since ")
        with Store(db_url) as store:
            assert store.lock_holder("g").is_process(winner.pid)  # type: ignore[union-attr]
            with store.grid_lock("g") as got:
                assert not got.held and got.holder is not None and got.holder.pid == winner.pid
            with store.grid_lock("other") as got:  # one grid's lock is not another's
                assert got.held
    finally:
        for p in procs:
            p.communicate("")
    with Store(db_url) as store, store.grid_lock("g") as got:  # released by its holder on exit
        assert got.held and store.lock_holder("g").is_process(os.getpid())  # type: ignore[union-attr]
    with Store(db_url) as store:
        assert store.lock_holder("g") is None


def test_a_launcher_that_dies_frees_the_grid(db_url: str) -> None:  # noqa: F811
    Store(db_url).close()
    proc = holder(db_url)
    assert proc.stdout.readline().strip() == "held"  # type: ignore[union-attr]
    with Store(db_url) as store:
        with store.grid_lock("g") as got:
            assert not got.held and got.holder is not None and got.holder.pid == proc.pid
        proc.send_signal(signal.SIGKILL)  # no release: PostgreSQL drops the session, SQLite finds the pid dead
        proc.wait()
        proc.stdin.close()  # type: ignore[union-attr]
        proc.stdout.close()  # type: ignore[union-attr]
        deadline = time.monotonic() + 10  # PostgreSQL ends the dead client's session on its own time (ms)
        while True:
            with store.grid_lock("g") as got:
                if got.held or time.monotonic() > deadline:
                    break
            time.sleep(0.05)
        assert got.held


def test_sqlite_lock_of_another_host_waits_for_its_heartbeat_to_go_stale(tmp_path: Path) -> None:
    """Another host's pid cannot be checked: its lock row counts until its heartbeat is STALE_S old."""
    with Store(f"sqlite:///{tmp_path / 'db.sqlite'}") as store:
        doc = {"grid": "g", "host": "elsewhere", "pid": 4242, "token": "t", "since": "2026-01-01 00:00:00"}
        with store.session() as s:
            s.add(Meta(key=_meta_key("g"), value=json.dumps(doc), updated_at=utcnow()))
        with store.grid_lock("g") as got:
            assert not got.held and got.holder.describe() == "pid 4242 on host elsewhere since 2026-01-01 00:00:00"
        with store.session() as s:
            s.get(Meta, _meta_key("g")).updated_at = utcnow() - timedelta(seconds=STALE_S + 1)
        assert store.lock_holder("g") is None
        with store.grid_lock("g") as got:
            assert got.held and store.lock_holder("g").is_process(os.getpid())  # type: ignore[union-attr]


def test_the_grid_and_its_jobs_are_recorded_in_one_transaction(db_url: str, tmp_path: Path) -> None:  # noqa: F811
    jobs = [NewJob("a", "{}", "supervised", "k", 0, str(tmp_path / "a"), "full", "c"),
            NewJob("b", "{}", "supervised", "k", 1, str(tmp_path / "b"), "full", "c", parents=("missing",))]
    with Store(db_url) as store:
        with pytest.raises(KeyError, match="missing"):
            store.record_grid("g", "{}", "h", "g.toml", 2, jobs)
        assert store.get_grid("g") is None and store.job("a") is None, "nothing of a failed record stays"
        grid_id, new, known = store.record_grid("g", "{}", "h", "g.toml", 2, jobs[:1])
        assert (new, known) == (1, 0) and [j.job_hash for j in store.jobs("g")] == ["a"]
        assert store.record_grid("g", "{}", "h2", "g.toml", 3, jobs[:1]) == (grid_id, 0, 1)
        assert store.get_grid("g").failure_budget == 3  # type: ignore[union-attr]


GRID = """
name = "g"
seeds = [0]
[dataset]
root = "{root}"
[train]
backbone = "test_resnet"
image_size = 32
epochs = 1
[subsets.full]
strategy = "full"
[methods.supervised]
"""


@pytest.mark.parametrize("detach", [False, True], ids=["launch", "launch-detach"])
def test_launch_while_another_launcher_holds_the_grid_records_nothing(
        db_url: str, tmp_path: Path, digits: Path, capsys: pytest.CaptureFixture[str], detach: bool) -> None:  # noqa: F811
    """The lock is taken before anything is recorded: the second launcher exits 2 naming the first."""
    from orchestrator.cli import main

    grid = tmp_path / "grid.toml"
    grid.write_text(GRID.format(root=digits))
    with Store(db_url) as store, store.grid_lock("g") as got:  # the first launcher (this test)
        assert got.held
        with pytest.raises(SystemExit) as info:
            main(["launch", str(grid), "--db", db_url, "--no-progress", *(["--detach"] if detach else [])])
        assert info.value.code == 2
        err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
        assert err == [f"error: grid 'g': another launcher is running it (pid {os.getpid()} on host {hostname()} "
                       f"since {err[0].split(' since ')[1].split(')')[0]}); wait for it, or follow it with: "
                       "dlth-orch status"], err
        assert store.get_grid("g") is None and store.list_grids() == []


@pytest.mark.postgres
def test_a_postgres_session_lost_during_the_launch_releases_quietly(tmp_path: Path) -> None:
    """A server restart drops the lock's session (and the lock with it): leaving the block is no error, and
    the grid is free at once."""
    from sqlalchemy import text

    from db.testing import database_url

    with database_url("postgres", tmp_path) as url, Store(url) as store:
        with store.grid_lock("g") as got:
            assert got.held
            with store.engine.connect() as conn:  # what a restart does to the lock's session
                killed = conn.scalar(text(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND application_name LIKE 'dlth-orch launch%'"))
            assert killed == 1
        assert store.lock_holder("g") is None
        with store.grid_lock("g") as got:
            assert got.held
