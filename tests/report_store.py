"""Synthetic result tables built through the real store (no training) for the report's tests."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import update

from db import NewJob, Store
from db.models import Attempt

T0 = datetime(2026, 1, 1, 12, 0, 0)


def make_grid(store: Store, tmp_path: Path, name: str, means: dict[str, list[float]], *, seeds: int = 2,
              gpus: dict[str, int] | None = None, report: dict | None = None, noise: float = 0.002,
              configs: list[str] | None = None, earlier: dict[str, str] | None = None) -> list[NewJob]:
    """A grid whose subset ``s`` has configuration ``c`` at ``means[s][c]`` (+/- noise per seed), all completed.

    ``gpus``: GPUs per node of each subset's jobs (0/absent: a 1-CPU job). Every job gets one attempt of one
    hour from :data:`T0` (set with :func:`set_span` to change it). ``earlier``: job hash -> the state
    (PREEMPTED, FAILED, ...) of a first attempt of two hours before the one that completes.
    """
    configs = configs or [f"simclr[lr=0.{c + 1}]" for c in range(len(next(iter(means.values()))))]
    spec = {"report": {"metric": "knn_top1", "reference": "full", **(report or {})}}
    gid = store.upsert_grid(name, json.dumps(spec), f"hash-{name}", str(tmp_path / f"{name}.toml"), 3)
    jobs = []
    for sub in means:
        res = {"resources": {"gpus_per_node": (gpus or {}).get(sub, 0), "nodes": 1}}
        for c, label in enumerate(configs):
            for seed in range(seeds):
                jobs.append(NewJob(f"{name}-{sub}-{c}-{seed}", json.dumps(res), "simclr", f"{name}-key{c}", seed,
                                   str(tmp_path / "jobs" / f"{name}{sub}{c}{seed}"), sub, label))
    store.add_jobs(gid, jobs)
    for j in jobs:
        _, sub, c, seed = j.job_hash.rsplit("-", 3)
        value = means[sub][int(c)] + (noise if int(seed) % 2 else -noise)
        start = T0
        if j.job_hash in (earlier or {}):
            first = store.claim(j.job_hash, backend="local", backend_id=None, host="h", pid=1)
            assert first is not None
            store.finish_attempt(first, (earlier or {})[j.job_hash], reason="test")
            store.reset_jobs([j.job_hash], ["FAILED"])
            set_span(store, first, T0, T0 + timedelta(hours=2))
            start = T0 + timedelta(hours=2)
        att = store.claim(j.job_hash, backend="local", backend_id=None, host="h", pid=1)
        store.complete(j.job_hash, att, {"knn_top1": value})
        set_span(store, att, start, start + timedelta(hours=1))
    return jobs


def set_span(store: Store, attempt_id: int | None, start: datetime, end: datetime | None) -> None:
    """Give an attempt known start/end times (the store stamps the real clock)."""
    with store.session() as s:
        s.execute(update(Attempt).where(Attempt.id == attempt_id).values(started_at=start, ended_at=end))
