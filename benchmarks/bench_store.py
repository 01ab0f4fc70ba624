"""Store benchmark: metric rows/second with 1 and 8 concurrent writer processes, and the latency of a status
query (Store.state_counts + Store.jobs + Store.final_metrics) on a grid of 10,000 jobs, on SQLite and on
PostgreSQL; prints the figures and the ratios (8 vs 1 writers, PostgreSQL vs SQLite).

    .venv/bin/python -m benchmarks.bench_store [--seconds 3] [--jobs 10000] [--backends sqlite,postgres]

PostgreSQL is the server of ``scripts/postgres.sh up`` (``DLTH_TEST_PG_URL`` to use another); the benchmark
works in a scratch database that it drops afterwards. Each writer is a process with its own job; a write
is one ``Store.log_metrics`` call (one transaction) of ``--metrics`` values.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import Progress
from rich.table import Table
from sqlalchemy import insert

from db import FINAL_EPOCH, JobState, NewJob, Store
from db.models import Metric, utcnow
from db.testing import postgres_problem, scratch_postgres

console = Console(width=132)


@contextmanager
def database(backend: str) -> Iterator[str]:
    """A fresh empty database URL of ``backend``, removed afterwards."""
    if backend == "sqlite":
        with tempfile.TemporaryDirectory(prefix="dlth-bench-") as d:
            yield f"sqlite:///{Path(d) / 'bench.db'}"
    else:
        with scratch_postgres("dlth_bench") as url:
            yield url


def _writer(url: str, job_hash: str, n_metrics: int, seconds: float, barrier: Any, out: Any) -> None:
    store = Store(url, create=False)
    names = [f"metric_{k}" for k in range(n_metrics)]
    barrier.wait()
    deadline = time.perf_counter() + seconds
    epoch = 0
    while time.perf_counter() < deadline:
        store.log_metrics(job_hash, epoch, {n: epoch + k for k, n in enumerate(names)}, None)
        epoch += 1
    out.put(epoch * n_metrics)
    store.close()


def write_rate(backend: str, writers: int, seconds: float, n_metrics: int) -> float:
    """Metric rows per second written by ``writers`` processes at once."""
    with database(backend) as url:
        with Store(url) as store:
            gid = store.upsert_grid("bench", "{}", "h", "", 2)
            store.add_jobs(gid, [NewJob(f"w{i}", "{}", "supervised", "ck", i, f"/tmp/w{i}", "full", "sup")
                                 for i in range(writers)])
        ctx = mp.get_context("fork")  # no engine open in this process at fork time
        barrier, out = ctx.Barrier(writers + 1), ctx.Queue()
        procs = [ctx.Process(target=_writer, args=(url, f"w{i}", n_metrics, seconds, barrier, out))
                 for i in range(writers)]
        for p in procs:
            p.start()
        barrier.wait()
        t0 = time.perf_counter()
        rows = sum(out.get(timeout=seconds + 120) for _ in procs)
        elapsed = time.perf_counter() - t0
        for p in procs:
            p.join()
        if any(p.exitcode for p in procs):
            raise RuntimeError(f"{backend}: a writer failed (exit codes {[p.exitcode for p in procs]})")
        return rows / max(elapsed, seconds)


def populate(store: Store, n_jobs: int, epochs: int, progress: Progress) -> None:
    """A grid of ``n_jobs`` jobs in mixed states; finished ones have final and per-epoch metrics."""
    gid = store.upsert_grid("big", "{}", "h", "", 2)
    task = progress.add_task(f"{store.backend}: {n_jobs} jobs", total=n_jobs * 2)
    subsets, configs = [f"subset{s:02d}" for s in range(20)], [f"cfg{c:02d}" for c in range(25)]
    jobs = [NewJob(f"job{i:06d}", '{"train": {"lr": 0.1}}', "supervised", f"ck{i % 25}", i // 500,
                   f"/tmp/big/job{i}", subsets[(i // 25) % 20], configs[i % 25]) for i in range(n_jobs)]
    for k in range(0, n_jobs, 1000):
        store.add_jobs(gid, jobs[k:k + 1000])
        progress.advance(task, len(jobs[k:k + 1000]))
    ids = {j.job_hash: j.id for j in store.jobs("big")}
    done = [j.job_hash for i, j in enumerate(jobs) if i % 10 < 7]  # 70 % finished, the rest mixed
    store.set_state(done, JobState.COMPLETED, JobState.ALL, check=False)  # seeding rows
    for rest, state in ((7, JobState.RUNNING), (8, JobState.FAILED)):
        store.set_state([j.job_hash for i, j in enumerate(jobs) if i % 10 == rest], state, JobState.ALL, check=False)
    now = utcnow()
    with store.session() as s:
        for k in range(0, len(done), 500):
            rows = [{"job_id": ids[h], "attempt_id": None, "epoch": e, "name": n, "value": 0.5, "created_at": now}
                    for h in done[k:k + 500] for e in [*range(epochs), FINAL_EPOCH]
                    for n in ("knn_top1", "top1", "loss")]
            s.execute(insert(Metric.__table__), rows)
            progress.advance(task, len(done[k:k + 500]) * n_jobs / max(len(done), 1))
    progress.update(task, completed=n_jobs * 2)


def status_latency(store: Store, repeats: int) -> dict[str, float]:
    """Median seconds of the status query and of its parts (after one warm-up)."""
    parts = {"state_counts": lambda: store.state_counts("big"), "jobs": lambda: store.jobs("big"),
             "final_metrics": lambda: store.final_metrics("big")}
    for fn in parts.values():
        fn()
    times: dict[str, list[float]] = {k: [] for k in [*parts, "status"]}
    for _ in range(repeats):
        total = 0.0
        for name, fn in parts.items():
            t0 = time.perf_counter()
            fn()
            dt = time.perf_counter() - t0
            times[name].append(dt)
            total += dt
        times["status"].append(total)
    return {k: statistics.median(v) for k, v in times.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_store", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=3.0, help="writing time per measurement")
    parser.add_argument("--jobs", type=int, default=10_000, help="jobs in the status-query grid")
    parser.add_argument("--epochs", type=int, default=10, help="per-epoch metric rows of each finished job")
    parser.add_argument("--metrics", type=int, default=10, help="metrics per log_metrics call")
    parser.add_argument("--repeats", type=int, default=7, help="status queries timed (median reported)")
    parser.add_argument("--backends", default="sqlite,postgres")
    args = parser.parse_args(argv)

    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    if "postgres" in backends and (problem := postgres_problem()):
        console.print(f"[yellow]PostgreSQL skipped: {problem} (start it with scripts/postgres.sh up)")
        backends.remove("postgres")
    console.print(f"machine: {os.cpu_count()} CPUs; {args.seconds:g} s per write measurement, "
                  f"{args.metrics} metrics per write; status grid {args.jobs} jobs x {args.epochs} epochs")
    rates: dict[tuple[str, int], float] = {}
    latency: dict[str, dict[str, float]] = {}
    with Progress(console=console, transient=True) as progress:
        for backend in backends:
            for writers in (1, 8):
                task = progress.add_task(f"{backend}: {writers} writer(s)", total=None)
                rates[backend, writers] = write_rate(backend, writers, args.seconds, args.metrics)
                progress.remove_task(task)
            with database(backend) as url, Store(url) as store:
                populate(store, args.jobs, args.epochs, progress)
                latency[backend] = status_latency(store, args.repeats)

    table = Table(title="dlth-orch store benchmark")
    table.add_column("backend")
    for col in ("rows/s, 1 writer", "rows/s, 8 writers", "8 vs 1", f"status of {args.jobs} jobs",
                "state_counts", "jobs", "final_metrics"):
        table.add_column(col, justify="right")
    for b in backends:
        lat = latency[b]
        table.add_row(b, f"{rates[b, 1]:,.0f}", f"{rates[b, 8]:,.0f}", f"{rates[b, 8] / rates[b, 1]:.2f}x",
                      f"{lat['status'] * 1000:.0f} ms", f"{lat['state_counts'] * 1000:.1f} ms",
                      f"{lat['jobs'] * 1000:.0f} ms", f"{lat['final_metrics'] * 1000:.0f} ms")
    console.print(table)
    if {"sqlite", "postgres"} <= set(backends):
        console.print("PostgreSQL vs SQLite: "
                      f"1 writer {rates['postgres', 1] / rates['sqlite', 1]:.2f}x, "
                      f"8 writers {rates['postgres', 8] / rates['sqlite', 8]:.2f}x, "
                      f"status query {latency['postgres']['status'] / latency['sqlite']['status']:.2f}x the time")
    return 0


if __name__ == "__main__":
    sys.exit(main())
