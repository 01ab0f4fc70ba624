"""A worker whose database goes away mid-run still delivers its result: its reporter
(workers/reporting.py ``JobReporter``, run in a forked process) retries with back-off, and when the
database stays away, the orchestrator ingests the result from the job directory.

PostgreSQL: a private server of this test is stopped (``pg_ctl stop -m immediate``) while the worker
trains, then started again. SQLite: another process holds the write lock (a stuck writer, or a lock left
behind on a network file system) longer than the worker's busy timeout; chmod cannot make the file
unwritable here because the tests run as root.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import sqlite3
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from db import FINAL_EPOCH, JobState, NewJob, Store, read_final_metrics
from db.ingest import ingest_finished
from db.testing import private_postgres
from workers.reporting import JobReporter

pytestmark = pytest.mark.slow
EPOCHS = 5
JOB = "job0"
FINAL = {"acc": 0.5, "loss": 0.2}


class _CountFailures(logging.Handler):
    def __init__(self, counter: Any) -> None:
        super().__init__(logging.WARNING)
        self.counter = counter

    def emit(self, record: logging.LogRecord) -> None:
        with self.counter.get_lock():
            self.counter.value += 1


def _worker(url: str, job_dir: str, epoch_done: Any, go_on: Any, failures: Any) -> None:
    """The real reporter of a worker (workers/reporting.py) through one attempt: claim, epoch metrics,
    final metrics; its database calls are retried ``DLTH_DB_RETRIES`` times and never fatal. Counts the
    failed database calls that db.retry logs in ``failures``."""
    logging.getLogger("db.retry").addHandler(_CountFailures(failures))
    reporter = JobReporter(Store(url, create=False), JOB, Path(job_dir))
    reporter.claim("local", None, "n1", os.getpid(), None)
    for epoch in range(EPOCHS):
        reporter.epoch(epoch, {"acc": 0.1 * (epoch + 1), "loss": 1.0 / (epoch + 1)})
        if epoch == 1:
            epoch_done.set()  # the test now takes the database away
            go_on.wait(30)
    reporter.final(FINAL)


@dataclass
class Outage:
    url: str
    take_away: Callable[[], None]
    bring_back: Callable[[], None]


def run_worker(outage: Outage, tmp_path: Path, back_while_retrying: bool) -> Path:
    """Record a job, run the worker, take the DB away after its epoch 1; bring it back as soon as the
    worker has seen a failed call (while it still retries) or only once it has exited. Returns the job
    directory; checks that the worker did see the outage and exited normally either way."""
    job_dir = tmp_path / JOB
    job_dir.mkdir()
    with Store(outage.url) as store:
        gid = store.upsert_grid("g", "{}", "h", "", 2)
        store.add_jobs(gid, [NewJob(JOB, "{}", "supervised", "ck", 0, str(job_dir), "full", "sup")])
    ctx = mp.get_context("fork")  # no engine is open in this process at fork time
    epoch_done, go_on, failures = ctx.Event(), ctx.Event(), ctx.Value("i", 0)
    proc = ctx.Process(target=_worker, args=(outage.url, str(job_dir), epoch_done, go_on, failures))
    proc.start()
    assert epoch_done.wait(60), "the worker did not reach epoch 1"
    outage.take_away()
    go_on.set()
    if back_while_retrying:
        deadline = time.monotonic() + 60
        while failures.value == 0 and proc.is_alive() and time.monotonic() < deadline:
            time.sleep(0.02)
        outage.bring_back()
    proc.join(120)
    if not back_while_retrying:
        outage.bring_back()
    assert failures.value > 0, "the worker never noticed the outage"
    assert proc.exitcode == 0  # a database that goes away is never fatal to the worker
    return job_dir


def assert_everything_recorded(store: Store, *, ingested: bool) -> None:
    job = store.job(JOB)
    assert job.state == JobState.COMPLETED and job.ingested_from_disk is ingested
    m = store.metrics(JOB)
    assert m[FINAL_EPOCH] == FINAL
    assert sorted(e for e in m if e != FINAL_EPOCH) == list(range(EPOCHS))  # also the epochs of the outage
    assert [a.state for a in store.attempts(JOB)] == ["COMPLETED"]


@pytest.fixture
def postgres_outage() -> Iterator[Outage]:
    with private_postgres() as server:
        yield Outage(server.url, server.stop, server.start)


@pytest.fixture
def sqlite_outage(tmp_path: Path) -> Iterator[Outage]:
    path = tmp_path / "dlth.db"
    holder: list[sqlite3.Connection] = []

    def take_away() -> None:  # another process's write transaction that does not end
        con = sqlite3.connect(path, isolation_level=None)
        con.execute("BEGIN IMMEDIATE")
        holder.append(con)

    def bring_back() -> None:
        holder.pop().close()

    yield Outage(f"sqlite:///{path}?timeout=0.3", take_away, bring_back)
    for con in holder:
        con.close()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def outage(request: pytest.FixtureRequest) -> Outage:
    return request.getfixturevalue(f"{request.param}_outage")


def test_a_result_the_db_never_heard_of_is_ingested_from_disk(outage: Outage, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DLTH_DB_RETRIES", "2")  # the worker gives up while the database is away
    job_dir = run_worker(outage, tmp_path, back_while_retrying=False)
    assert read_final_metrics(job_dir).metrics == FINAL
    with Store(outage.url) as store:
        assert store.job(JOB).state == JobState.RUNNING  # the DB never heard the end
        assert ingest_finished(store, "g") == [JOB]  # what `dlth-orch status` does
        assert_everything_recorded(store, ingested=True)
        assert ingest_finished(store, "g") == []


def test_a_worker_outlives_a_short_outage_by_retrying(outage: Outage, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DLTH_DB_RETRIES", "8")
    run_worker(outage, tmp_path, back_while_retrying=True)
    with Store(outage.url) as store:
        assert_everything_recorded(store, ingested=False)
