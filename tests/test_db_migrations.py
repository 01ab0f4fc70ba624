"""Schema migrations: a database made by an older dlth-orch is upgraded in place with its data; workers
never migrate and refuse a schema that is not theirs (every test runs on SQLite and PostgreSQL)."""

from __future__ import annotations

import multiprocessing as mp
from datetime import datetime

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, text

from db import FINAL_EPOCH, AttemptState, JobState, Store, StoreError
from db.engine import make_engine
from db.migrate import BASE_REVISION, HEAD, current, downgrade, script_head, upgrade
from db.models import Base
from db.testing import db_url  # noqa: F401  (fixture: a fresh database on each backend)

T0 = datetime(2026, 1, 2, 3, 4, 5)


def seed_0001(url: str) -> None:
    """Rows as the first dlth-orch (schema 0001) wrote them: a grid, two jobs, attempts, metrics."""
    engine = make_engine(url)
    with engine.begin() as conn:
        conn.execute(text(
            "INSERT INTO grids (id, name, spec_hash, spec_json, source_path, failure_budget, created_at, updated_at)"
            " VALUES (1, 'old', 'sh', '{}', 'old.toml', 2, :t, :t)"), {"t": T0})
        for i, state in ((1, JobState.COMPLETED), (2, JobState.RUNNING)):
            conn.execute(text(
                "INSERT INTO jobs (id, job_hash, spec_json, method, config_key, seed, job_dir, state, attempt_count,"
                " failure_count, backend, backend_id, last_error, heartbeat_at, created_at, updated_at) VALUES"
                " (:i, :h, '{}', 'supervised', 'ck', :i, :d, :s, 1, 0, 'local', NULL, NULL, :t, :t, :t)"),
                {"i": i, "h": f"job{i}", "d": f"/jobs/job{i}", "s": state, "t": T0})
            conn.execute(text("INSERT INTO grid_jobs (grid_id, job_id, subset_name, config_name)"
                              " VALUES (1, :i, 'full', 'sup')"), {"i": i})
            conn.execute(text(
                "INSERT INTO attempts (id, job_id, number, state, backend, host, pid, started_at, ended_at)"
                " VALUES (:i, :i, 1, :s, 'local', 'n1', 10, :t, NULL)"),
                {"i": i, "s": AttemptState.COMPLETED if i == 1 else AttemptState.RUNNING, "t": T0})
        for epoch, name, value in ((0, "acc", 0.25), (FINAL_EPOCH, "acc", 0.75)):
            conn.execute(text("INSERT INTO metrics (job_id, attempt_id, epoch, name, value, created_at)"
                              " VALUES (1, 1, :e, :n, :v, :t)"), {"e": epoch, "n": name, "v": value, "t": T0})
    engine.dispose()


def make_0001(url: str, *, legacy: bool = False) -> None:
    """A database at revision 0001 with data; ``legacy``: without alembic_version (made by create_all)."""
    engine = make_engine(url)
    assert upgrade(engine, BASE_REVISION) == (None, BASE_REVISION)
    if legacy:
        with engine.begin() as conn:
            conn.execute(text("DROP TABLE alembic_version"))
    engine.dispose()
    seed_0001(url)


def assert_0001_data_intact(store: Store) -> None:
    assert store.state_counts("old") == {JobState.COMPLETED: 1, JobState.RUNNING: 1}
    jobs = store.jobs("old")
    assert [(j.job_hash, j.subset_name, j.config_name, j.ingested_from_disk) for j in jobs] == [
        ("job1", "full", "sup", False), ("job2", "full", "sup", False)]
    assert store.metrics("job1") == {0: {"acc": 0.25}, FINAL_EPOCH: {"acc": 0.75}}
    assert store.final_metrics("old") == {"job1": {"acc": 0.75}}
    assert [(a.job_hash, a.state, a.started_at) for a in store.open_attempts("old")] == [("job2", "RUNNING", T0)]


def test_head_constant_matches_the_revision_scripts() -> None:
    assert script_head() == HEAD


def test_a_fresh_database_is_created_at_head_and_matches_the_models(db_url: str) -> None:  # noqa: F811
    with Store(db_url) as store:
        assert store.schema_revision() == HEAD
        with store.engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata)
        assert diff == []


def test_a_0001_database_is_upgraded_in_place_with_its_data(db_url: str) -> None:  # noqa: F811
    make_0001(db_url)
    engine = make_engine(db_url)
    with pytest.raises(StoreError, match=r"revision 0001 is behind .*db upgrade"):
        Store(db_url, create=False)  # a worker never migrates...
    assert current(engine).revision == BASE_REVISION  # ...and changed nothing
    with Store(db_url) as store:  # the orchestrator upgrades
        assert store.schema_revision() == HEAD
        assert_0001_data_intact(store)
        indices = {ix["name"] for t in ("jobs", "attempts", "grid_jobs") for ix in inspect(engine).get_indexes(t)}
        assert {"ix_jobs_config_key", "ix_attempts_job_state", "ix_grid_jobs_grid_subset"} <= indices
        store.log_metrics("job2", 0, {"acc": float("nan")}, None)  # the new schema works on old rows
        assert store.complete("job2", 2, {"acc": 0.5}) == JobState.COMPLETED
    with Store(db_url, create=False) as worker:
        assert worker.job("job2").state == JobState.COMPLETED
    engine.dispose()


def test_a_database_made_before_migrations_is_stamped_then_upgraded(db_url: str) -> None:  # noqa: F811
    make_0001(db_url, legacy=True)
    engine = make_engine(db_url)
    state = current(engine)
    assert state.revision is None and state.legacy
    with pytest.raises(StoreError, match="behind"):
        Store(db_url, create=False)
    assert upgrade(engine) == (BASE_REVISION, HEAD)
    assert upgrade(engine) == (HEAD, HEAD)
    engine.dispose()
    with Store(db_url) as store:
        assert_0001_data_intact(store)


def test_a_database_from_a_newer_dlth_orch_is_refused(db_url: str) -> None:  # noqa: F811
    Store(db_url).close()
    engine = make_engine(db_url)
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '0099'"))
    engine.dispose()
    for create in (True, False):
        with pytest.raises(StoreError, match="revision 0099 is unknown .* newer dlth-orch"):
            Store(db_url, create=create)


def test_downgrade_to_0001_and_upgrade_again_keeps_the_data(db_url: str) -> None:  # noqa: F811
    make_0001(db_url)
    engine = make_engine(db_url)
    upgrade(engine)
    assert downgrade(engine, BASE_REVISION) == (HEAD, BASE_REVISION)
    assert upgrade(engine) == (BASE_REVISION, HEAD)
    engine.dispose()
    with Store(db_url) as store:
        assert_0001_data_intact(store)


def _open_at_once(url: str, barrier: mp.synchronize.Barrier) -> str | None:
    barrier.wait(timeout=120)  # a sibling that died breaks the barrier instead of hanging the test
    with Store(url) as store:
        return store.schema_revision()


def test_orchestrators_opening_an_empty_database_at_once_migrate_it_once(db_url: str) -> None:  # noqa: F811
    # spawn, not fork: a test process has threads (xdist's channel, torch), and a child forked while one of
    # them held a lock hung this test under xdist
    ctx = mp.get_context("spawn")
    with ctx.Manager() as manager, ctx.Pool(3) as pool:
        barrier = manager.Barrier(3)
        revisions = pool.starmap(_open_at_once, [(db_url, barrier)] * 3)
    assert revisions == [HEAD] * 3
    engine = make_engine(db_url)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM alembic_version")).scalar() == 1
    engine.dispose()


def test_a_0002_database_gains_the_job_graph_and_keeps_its_data(db_url: str) -> None:  # noqa: F811
    from db import NewJob

    make_0001(db_url)
    engine = make_engine(db_url)
    assert upgrade(engine, "0002") == (BASE_REVISION, "0002")
    assert "job_deps" not in inspect(engine).get_table_names()
    assert upgrade(engine) == ("0002", HEAD)
    assert "job_deps" in inspect(engine).get_table_names()
    if engine.dialect.name == "postgresql":  # the seed rows were inserted with explicit ids
        with engine.begin() as conn:
            conn.execute(text("SELECT setval('jobs_id_seq', (SELECT max(id) FROM jobs))"))
    with Store(db_url) as store:
        assert_0001_data_intact(store)
        # the old rows take part in the graph: a new child of job1 (COMPLETED) and of job2 (RUNNING)
        gid = store.upsert_grid("old", "{}", "sh", "old.toml", 2)
        store.add_jobs(gid, [NewJob("child", "{}", "supervised", "ck2", 0, "/jobs/child", "full", "ft",
                                    parents=("job1", "job2"))])
        assert store.job("child").state == JobState.WAITING
        assert store.grid_deps("old") == {"child": ["job1", "job2"]}
        assert store.claim("child", backend="local", backend_id=None, host="h", pid=1) is None
    # a downgrade keeps the jobs, in the nearest state 0002 knows
    assert downgrade(engine, "0002") == (HEAD, "0002")
    with engine.connect() as conn:
        assert conn.execute(text("SELECT state FROM jobs WHERE job_hash = 'child'")).scalar() == JobState.PENDING
    assert upgrade(engine) == ("0002", HEAD)
    engine.dispose()
