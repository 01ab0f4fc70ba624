"""Real concurrency on SQLite and PostgreSQL: many worker processes writing at once lose nothing and hit
no lock error; processes racing to claim one job never both win."""

from __future__ import annotations

import multiprocessing as mp
import os
import time
import traceback
from pathlib import Path
from typing import Any

import pytest

from db import FINAL_EPOCH, JobState, NewJob, Store
from db.testing import db_url  # noqa: F401  (fixture: a fresh database on each backend)

pytestmark = pytest.mark.slow

WRITERS = 16
WRITE_SECONDS = float(os.environ.get("DLTH_TEST_WRITE_SECONDS", "5"))
METRICS_PER_EPOCH = 5
RACERS = 4
RACES = 150


def setup_grid(url: str, n: int, tmp_path: Path) -> list[str]:
    with Store(url) as store:
        gid = store.upsert_grid("g", "{}", "h", "", 2)
        jobs = [NewJob(f"job{i:04d}", "{}", "supervised", "ck", i, str(tmp_path / f"job{i}"), "full", "sup")
                for i in range(n)]
        store.add_jobs(gid, jobs)
        return [j.job_hash for j in jobs]


def _writer(url: str, job_hash: str, barrier: Any, seconds: float, out: Any) -> None:
    """One worker process: claim its job, then heartbeat + log metrics as fast as it can (no retries)."""
    result: dict[str, Any] = {"job": job_hash, "rows": 0, "epochs": 0, "errors": []}
    try:
        store = Store(url, create=False)
        attempt = store.claim(job_hash, backend="local", backend_id=None, host="h", pid=os.getpid())
        barrier.wait()
        deadline = time.monotonic() + seconds
        epoch = 0
        while time.monotonic() < deadline:
            store.heartbeat(job_hash)
            store.log_metrics(job_hash, epoch, {f"m{k}": epoch + k / 10 for k in range(METRICS_PER_EPOCH)},
                              attempt)
            result["rows"] += METRICS_PER_EPOCH
            epoch += 1
        store.complete(job_hash, attempt, {"acc": float(epoch)})
        result["rows"] += 1
        result["epochs"] = epoch
        store.close()
    except Exception:
        result["errors"].append(traceback.format_exc())
    out.put(result)


def test_sixteen_writers_lose_no_row_and_hit_no_lock_error(db_url: str, tmp_path: Path) -> None:  # noqa: F811
    hashes = setup_grid(db_url, WRITERS, tmp_path)
    ctx = mp.get_context("fork")  # fast start; no engine is open in the parent at fork time
    barrier, out = ctx.Barrier(WRITERS + 1), ctx.Queue()
    procs = [ctx.Process(target=_writer, args=(db_url, h, barrier, WRITE_SECONDS, out)) for h in hashes]
    for p in procs:
        p.start()
    store = Store(db_url)
    barrier.wait(timeout=120)
    # meanwhile a user runs status from another shell: reads never fail or block the writers
    reads = 0
    deadline = time.monotonic() + WRITE_SECONDS
    while time.monotonic() < deadline:
        assert sum(store.state_counts("g").values()) == WRITERS
        store.jobs("g")
        store.final_metrics("g")
        reads += 1
    results = [out.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    errors = [e for r in results for e in r["errors"]]
    assert errors == [], errors[0]
    assert reads > 0
    total = sum(r["rows"] for r in results)
    with store.session(write=False) as s:
        from sqlalchemy import func, select

        from db.models import Metric
        assert s.scalar(select(func.count()).select_from(Metric)) == total
    for r in results:
        m = store.metrics(r["job"])
        assert len(m) == r["epochs"] + 1  # every epoch and the final metrics
        assert all(len(v) == METRICS_PER_EPOCH for e, v in m.items() if e != FINAL_EPOCH)
        assert m[FINAL_EPOCH] == {"acc": float(r["epochs"])}
    assert store.state_counts("g") == {JobState.COMPLETED: WRITERS}
    assert all(j.heartbeat_at is not None for j in store.jobs("g"))
    store.close()
    print(f"\n{store.backend}: {total} metric rows from {WRITERS} writers in {WRITE_SECONDS:.0f}s "
          f"({total / WRITE_SECONDS:.0f} rows/s), {reads} status reads meanwhile")


def _racer(url: str, hashes: list[str], barrier: Any, out: Any) -> None:
    """Claim every job in turn, in lockstep with the other racers (a barrier before each claim)."""
    won: list[tuple[str, int]] = []
    errors: list[str] = []
    try:
        store = Store(url, create=False)
        for h in hashes:
            barrier.wait()
            attempt = store.claim(h, backend="local", backend_id=None, host="h", pid=os.getpid())
            if attempt is not None:
                won.append((h, attempt))
        store.close()
    except Exception:
        errors.append(traceback.format_exc())
        barrier.abort()
    out.put((won, errors))


def test_processes_racing_to_claim_a_job_never_both_win(db_url: str, tmp_path: Path) -> None:  # noqa: F811
    hashes = setup_grid(db_url, RACES, tmp_path)
    ctx = mp.get_context("fork")  # fast start; no engine is open in the parent at fork time
    barrier, out = ctx.Barrier(RACERS), ctx.Queue()
    procs = [ctx.Process(target=_racer, args=(db_url, hashes, barrier, out)) for _ in range(RACERS)]
    for p in procs:
        p.start()
    results = [out.get(timeout=300) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    errors = [e for _, errs in results for e in errs]
    assert errors == [], errors[0]
    winners: dict[str, list[int]] = {}
    for won, _ in results:
        for h, attempt in won:
            winners.setdefault(h, []).append(attempt)
    assert sorted(winners) == hashes  # every race had a winner...
    assert all(len(w) == 1 for w in winners.values()), {h: w for h, w in winners.items() if len(w) > 1}
    with Store(db_url) as store:  # ...and exactly one attempt was opened per job
        assert all(len(store.attempts(h)) == 1 for h in hashes)
        assert store.state_counts("g") == {JobState.RUNNING: RACES}
    spread = sorted(len(won) for won, _ in results)
    print(f"\nwins per racer over {RACES} races: {spread}")
