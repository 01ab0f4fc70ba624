"""The store API behaves the same on SQLite and PostgreSQL (every test runs on both backends)."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import pytest

from db import (
    FINAL_EPOCH,
    AttemptState,
    JobState,
    NewJob,
    Store,
    StoreError,
    read_final_metrics,
    write_final_metrics,
)
from db.ingest import ingest_finished, ingest_job_dir
from db.testing import db_url  # noqa: F401  (fixture: a fresh database on each backend)


def new_jobs(tmp_path: Path, n: int, subset: str = "full", config: str = "sup") -> list[NewJob]:
    return [NewJob(job_hash=f"{subset}-{config}-{i}", spec_json=json.dumps({"seed": i, "train": {"lr": 0.1}}),
                   method="supervised", config_key=f"ck-{config}", seed=i, job_dir=str(tmp_path / f"{subset}-{i}"),
                   subset_name=subset, config_name=config) for i in range(n)]


@pytest.fixture
def store(db_url: str) -> Store:  # noqa: F811
    s = Store(db_url)
    yield s
    s.close()


def claim(store: Store, job_hash: str, host: str = "node1", pid: int = 1) -> int | None:
    return store.claim(job_hash, backend="local", backend_id=None, host=host, pid=pid)


def test_add_jobs_is_idempotent_and_links_known_jobs_to_new_grids(store: Store, tmp_path: Path) -> None:
    g1 = store.upsert_grid("g1", "{}", "h1", "g1.toml", 2)
    assert store.add_jobs(g1, new_jobs(tmp_path, 3)) == (3, 0)
    assert store.add_jobs(g1, new_jobs(tmp_path, 4)) == (1, 3)
    g2 = store.upsert_grid("g2", "{}", "h2", "g2.toml", 2)
    assert store.add_jobs(g2, new_jobs(tmp_path, 2)) == (0, 2)
    assert store.upsert_grid("g1", '{"x": 1}', "h1b", "g1.toml", 5) == g1
    grid = store.get_grid("g1")
    assert grid is not None and (grid.spec_hash, grid.failure_budget) == ("h1b", 5)
    assert [g.name for g in store.list_grids()] == ["g1", "g2"]
    assert [j.seed for j in store.jobs("g1")] == [0, 1, 2, 3]
    assert store.state_counts("g1") == {JobState.PENDING: 4}
    assert store.state_counts("g2") == {JobState.PENDING: 2}
    assert store.jobs("g1", states=[JobState.RUNNING]) == []


def test_state_transitions(store: Store, tmp_path: Path) -> None:
    gid = store.upsert_grid("g", "{}", "h", "", 2)
    store.add_jobs(gid, new_jobs(tmp_path, 4))
    hashes = [j.job_hash for j in store.jobs("g")]
    store.mark_queued(hashes, "slurm", [f"100_{i}" for i in range(4)])
    assert store.state_counts("g") == {JobState.QUEUED: 4}

    a = claim(store, hashes[0])
    assert a is not None
    assert store.finish_attempt(a, AttemptState.PREEMPTED, exit_code=143) == JobState.QUEUED
    assert store.job(hashes[0]).failure_count == 0
    a2 = claim(store, hashes[0])
    assert store.finish_attempt(a2, AttemptState.FAILED, reason="Traceback\nRuntimeError: boom") == JobState.FAILED
    job = store.job(hashes[0])
    assert (job.failure_count, job.last_error, job.attempt_count) == (1, "RuntimeError: boom", 2)
    assert claim(store, hashes[0]) is None  # FAILED is not claimable until reset
    assert store.reset_jobs([hashes[0]], [JobState.FAILED]) == 1
    a3 = claim(store, hashes[0])
    assert store.finish_attempt(a3, AttemptState.COMPLETED, exit_code=0) == JobState.COMPLETED
    assert store.finish_attempt(a3, AttemptState.FAILED) == JobState.COMPLETED  # closed: no change
    assert [x.state for x in store.attempts(hashes[0])] == ["PREEMPTED", "FAILED", "COMPLETED"]

    a4 = claim(store, hashes[1])
    assert store.finish_attempt(a4, AttemptState.CANCELLED) == JobState.CANCELLED
    assert store.set_state(hashes, JobState.CANCELLED, [JobState.QUEUED]) == 2
    assert store.state_counts("g") == {JobState.COMPLETED: 1, JobState.CANCELLED: 3}
    with pytest.raises(KeyError):
        store.finish_attempt(999_999, AttemptState.COMPLETED)


def test_completion_from_the_worker_wins_over_an_earlier_lost_verdict(store: Store, tmp_path: Path) -> None:
    gid = store.upsert_grid("g", "{}", "h", "", 2)
    store.add_jobs(gid, new_jobs(tmp_path, 1))
    h = "full-sup-0"
    a = claim(store, h)
    assert store.finish_attempt(a, AttemptState.LOST, reason="vanished") == JobState.FAILED
    assert store.complete(h, a, {"acc": 0.9}) == JobState.COMPLETED
    att = store.attempts(h)[0]
    assert att.state == AttemptState.COMPLETED and "after being marked LOST" in att.exit_reason
    assert store.final_metrics("g") == {h: {"acc": 0.9}}


def test_claim_is_safe_to_retry_by_the_same_process_only(store: Store, tmp_path: Path) -> None:
    gid = store.upsert_grid("g", "{}", "h", "", 2)
    store.add_jobs(gid, new_jobs(tmp_path, 1))
    a = claim(store, "full-sup-0", host="n1", pid=7)
    assert a is not None
    assert claim(store, "full-sup-0", host="n1", pid=7) == a  # retried claim: same attempt
    assert claim(store, "full-sup-0", host="n2", pid=7) is None
    assert claim(store, "full-sup-0", host="n1", pid=8) is None
    assert len(store.attempts("full-sup-0")) == 1
    assert [x.id for x in store.open_attempts("g")] == [a]
    assert store.open_attempts("g", backend="slurm") == []


def test_metrics_overwrite_nan_and_final(store: Store, tmp_path: Path) -> None:
    gid = store.upsert_grid("g", "{}", "h", "", 2)
    store.add_jobs(gid, new_jobs(tmp_path, 2))
    a = claim(store, "full-sup-0")
    store.log_metrics("full-sup-0", 0, {"loss": 2.0, "acc": 0.1}, a)
    store.log_metrics("full-sup-0", 0, {"loss": float("nan")}, a)  # re-run epoch overwrites; NaN kept
    store.log_metrics("full-sup-0", 1, {"loss": 1.0, "acc": 0.5}, a)
    store.log_metrics("full-sup-0", FINAL_EPOCH, {"knn_top1": 0.42, "inf": float("inf")}, a)
    m = store.metrics("full-sup-0")
    assert math.isnan(m[0]["loss"]) and m[0]["acc"] == 0.1 and m[1] == {"loss": 1.0, "acc": 0.5}
    assert store.metrics("full-sup-0", final_only=True) == {FINAL_EPOCH: {"knn_top1": 0.42, "inf": float("inf")}}
    assert store.final_metrics("g") == {"full-sup-0": {"knn_top1": 0.42, "inf": float("inf")}}
    rows = store.grid_metrics("g")
    assert [(r.epoch, r.name) for r in rows] == [(-1, "inf"), (-1, "knn_top1"), (0, "acc"), (0, "loss"),
                                                (1, "acc"), (1, "loss")]
    assert {r.attempt_id for r in rows} == {a}
    with pytest.raises(KeyError):
        store.log_metrics("no-such-job", 0, {"x": 1.0}, None)


def test_complete_records_metrics_and_state_in_one_step(store: Store, tmp_path: Path) -> None:
    gid = store.upsert_grid("g", "{}", "h", "", 2)
    store.add_jobs(gid, new_jobs(tmp_path, 1))
    a = claim(store, "full-sup-0")
    assert store.complete("full-sup-0", a, {"acc": 0.8}, epoch_metrics={0: {"acc": 0.5}}) == JobState.COMPLETED
    assert store.complete("full-sup-0", a, {"acc": 0.8}) == JobState.COMPLETED  # idempotent
    assert store.metrics("full-sup-0") == {FINAL_EPOCH: {"acc": 0.8}, 0: {"acc": 0.5}}
    assert store.attempts("full-sup-0")[0].exit_code == 0


def test_ingest_completes_a_job_from_its_directory_once(store: Store, tmp_path: Path) -> None:
    gid = store.upsert_grid("g", "{}", "h", "", 2)
    store.add_jobs(gid, new_jobs(tmp_path, 3))
    jobs = {j.job_hash: j for j in store.jobs("g")}
    h = "full-sup-0"
    a = claim(store, h)
    store.log_metrics(h, 0, {"acc": 0.3}, a)  # the DB saw epoch 0, then went away
    Path(jobs[h].job_dir).mkdir()
    write_final_metrics(jobs[h].job_dir, h, {"acc": 0.9, "loss": 0.1}, {0: {"acc": 0.3}, 1: {"acc": 0.6}})
    assert read_final_metrics(jobs[h].job_dir).metrics == {"acc": 0.9, "loss": 0.1}

    assert ingest_job_dir(store, h, jobs[h].job_dir) is True
    job = store.job(h)
    assert job.state == JobState.COMPLETED and job.ingested_from_disk
    assert store.metrics(h) == {FINAL_EPOCH: {"acc": 0.9, "loss": 0.1}, 0: {"acc": 0.3}, 1: {"acc": 0.6}}
    att = store.attempts(h)
    assert [x.state for x in att] == [AttemptState.COMPLETED] and "final_metrics.json" in att[0].exit_reason
    assert store.open_attempts("g") == []
    assert ingest_job_dir(store, h, jobs[h].job_dir) is False  # idempotent
    assert ingest_finished(store, "g") == []
    assert ingest_job_dir(store, "full-sup-1", jobs["full-sup-1"].job_dir) is False  # no file


def test_ingest_refuses_foreign_or_broken_result_files(store: Store, tmp_path: Path,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    gid = store.upsert_grid("g", "{}", "h", "", 2)
    store.add_jobs(gid, new_jobs(tmp_path, 2))
    d0, d1 = tmp_path / "full-0", tmp_path / "full-1"
    d0.mkdir()
    d1.mkdir()
    write_final_metrics(d0, "full-sup-1", {"acc": 0.9})  # another job's result
    (d1 / "final_metrics.json").write_text('{"job_hash": "full-sup-1", "metrics": {"acc": "high"}}')
    with caplog.at_level(logging.WARNING):
        assert ingest_job_dir(store, "full-sup-0", d0) is False
        assert ingest_job_dir(store, "full-sup-1", d1) is False
    assert "job_hash: expected full-sup-0" in caplog.text
    assert "metrics.acc: expected a number" in caplog.text
    assert store.state_counts("g") == {JobState.PENDING: 2}


def test_ingest_finished_scans_only_jobs_that_ran(store: Store, tmp_path: Path) -> None:
    gid = store.upsert_grid("g", "{}", "h", "", 2)
    store.add_jobs(gid, new_jobs(tmp_path, 4))
    jobs = {j.job_hash: j for j in store.jobs("g")}
    for i in range(4):
        Path(jobs[f"full-sup-{i}"].job_dir).mkdir()
    # 0: ran and wrote its result, DB never heard; 1: never ran (a stray file is ignored);
    # 2: COMPLETED in the DB but its final metrics never arrived; 3: running, no result yet
    a0 = claim(store, "full-sup-0")
    assert a0 is not None
    write_final_metrics(jobs["full-sup-0"].job_dir, "full-sup-0", {"acc": 0.5})
    write_final_metrics(jobs["full-sup-1"].job_dir, "full-sup-1", {"acc": 0.6})
    a2 = claim(store, "full-sup-2")
    store.finish_attempt(a2, AttemptState.COMPLETED)
    write_final_metrics(jobs["full-sup-2"].job_dir, "full-sup-2", {"acc": 0.7})
    claim(store, "full-sup-3")
    assert sorted(ingest_finished(store, "g")) == ["full-sup-0", "full-sup-2"]
    assert store.final_metrics("g") == {"full-sup-0": {"acc": 0.5}, "full-sup-2": {"acc": 0.7}}
    assert store.state_counts("g") == {JobState.COMPLETED: 2, JobState.PENDING: 1, JobState.RUNNING: 1}
    assert ingest_finished(store, "g") == []


def test_grid_attempts_lists_every_attempt_of_the_grid(store: Store, tmp_path: Path) -> None:
    gid = store.upsert_grid("g", "{}", "h", "", 2)
    store.add_jobs(gid, new_jobs(tmp_path, 2))
    a = claim(store, "full-sup-0")
    store.finish_attempt(a, AttemptState.TIMEOUT)
    claim(store, "full-sup-0")
    claim(store, "full-sup-1")
    rows = store.grid_attempts("g")
    assert [(r.job_hash, r.number, r.state) for r in rows] == [
        ("full-sup-0", 1, "TIMEOUT"), ("full-sup-0", 2, "RUNNING"), ("full-sup-1", 1, "RUNNING")]


def test_a_worker_store_never_creates_a_database(db_url: str) -> None:  # noqa: F811
    with pytest.raises(StoreError, match="db upgrade"):
        Store(db_url, create=False)
    with Store(db_url) as orchestrator:
        assert orchestrator.schema_revision() is not None
    with Store(db_url, create=False) as worker:
        assert worker.list_grids() == []


def test_the_backend_can_correct_a_stop_reason_but_never_a_failure(store: Store, tmp_path: Path) -> None:
    gid = store.upsert_grid("g", "{}", "h", "", 2)
    store.add_jobs(gid, new_jobs(tmp_path, 2))
    a = claim(store, "full-sup-0")
    assert store.finish_attempt(a, AttemptState.PREEMPTED, reason="signal") == JobState.QUEUED
    assert store.correct_stop_reason(a, AttemptState.TIMEOUT, "sacct: TIMEOUT") is True
    assert store.attempts("full-sup-0")[0].exit_reason == "sacct: TIMEOUT (the worker recorded signal)"
    assert store.correct_stop_reason(a, AttemptState.TIMEOUT, "again") is False
    assert store.correct_stop_reason(a, AttemptState.CANCELLED, "sacct: CANCELLED") is True
    assert store.job("full-sup-0").state == JobState.CANCELLED and store.job("full-sup-0").failure_count == 0
    b = claim(store, "full-sup-1")
    store.finish_attempt(b, AttemptState.FAILED, reason="boom")
    assert store.correct_stop_reason(b, AttemptState.CANCELLED, "sacct") is False
    assert store.job("full-sup-1").state == JobState.FAILED
    with pytest.raises(ValueError, match="state: expected one of"):
        store.correct_stop_reason(b, AttemptState.COMPLETED, "x")
