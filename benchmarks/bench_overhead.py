"""Overhead per job: one worker process per job against ``[resources] jobs_per_worker = 8``, in the same run.

    .venv/bin/python -m benchmarks.bench_overhead [--per-worker 8 --epochs 4 --work-dir data/bench_overhead]

The jobs are the quickstart's (``examples/quickstart.toml``: the digits at 32 px, ``test_resnet``, batch
64, 4 epochs, kNN evaluation): its ``full`` and ``full_30pct`` subsets x supervised ``lr = [0.01, 0.2]`` x
seeds 0 and 1, 8 jobs, on one local slot (one job at a time, so the figures add up). Each mode launches the
grid for real in a workspace of its own (``dlth-orch launch``), then relaunches it with nothing to do (the
control plane's fixed cost: grid, data pre-flight, database). Per job:

- ``train`` / ``eval``: the job's ``train_time_s`` (final metrics), and from its last epoch record in
  ``metrics.jsonl`` to its attempt's end (evaluation and recording);
- ``overhead``: (launch wall time - relaunch wall time) / jobs - train - eval: process start, imports, FFCV
  set-up, model build, claim, checkpoints, everything a job costs that is not training or evaluation;
- ``overhead*``: the same against a relaunch that also makes the grid's once-per-launch control-plane work
  again (the backbone pre-flight, whose cache a fresh workspace lacks, and the report, made once the jobs
  end; the plain relaunch keeps both): what the jobs cost without what the launcher does once per grid;
- ``in-span``: (first attempt's start to last attempt's end) / jobs - train - eval: the same without the
  first worker's start (in a batch: what each further job costs; one process per job: the next start);
- user CPU seconds of the launch and all its workers (the machine may be shared: wall time alone misleads).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import statistics
import subprocess
import sys
import time
from datetime import UTC
from pathlib import Path

from db import Store
from orchestrator.backbone_cache import CACHE_FILE as BACKBONE_CACHE
from specs.contract import EPOCH_METRICS_FILE, FINAL_METRICS_FILE

log = logging.getLogger("bench_overhead")
GRID = """
name = "overhead"
seeds = [0, 1]
[dataset]
root = "{root}"
prepare = "digits"
[train]
backbone = "test_resnet"
epochs = {epochs}
batch_size = 64
optimizer = "sgd"
lr = 0.05
weight_decay = 5e-4
image_size = 32
[eval]
knn_k = 10
[resources]
nproc_per_node = 1
cpus_per_task = 1
loader_workers = 1
jobs_per_worker = {per_worker}
[cluster]
max_slots = 1
[subsets.full]
strategy = "full"
[subsets.full_30pct]
strategy = "full"
fraction = 0.3
[methods.supervised]
lr = [0.01, 0.2]
"""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work-dir", type=Path, default=Path("data/bench_overhead"))
    p.add_argument("--data", type=Path, default=Path("data/digits"), help="the digits dataset (built if missing)")
    p.add_argument("--per-worker", type=int, default=8, help="jobs_per_worker of the batched mode")
    p.add_argument("--epochs", type=int, default=4, help="the quickstart's 4")
    return p.parse_args(argv)


def _launch(grid: Path, home: Path) -> tuple[float, float]:
    """``dlth-orch launch grid`` in a process of its own: (wall s, user CPU s of it and its workers)."""
    env = {**os.environ, "DLTH_HOME": str(home)}
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_utime
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "orchestrator.cli", "launch", str(grid), "--no-progress",
                           "--db", f"sqlite:///{home / 'db.sqlite'}"], env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        raise SystemExit(f"launch failed ({done.returncode}):\n{done.stdout}{done.stderr}")
    return wall, resource.getrusage(resource.RUSAGE_CHILDREN).ru_utime - before


def _per_job(home: Path) -> tuple[list[float], list[float], float]:
    """Each job's training seconds and evaluation seconds (see the module docstring), and the seconds from
    the first attempt's start to the last one's end (the attempts table)."""
    train, evals, starts, ends = [], [], [], []
    with Store(f"sqlite:///{home / 'db.sqlite'}") as store:
        for job in store.jobs("overhead"):
            job_dir = Path(job.job_dir)
            train.append(float(json.loads((job_dir / FINAL_METRICS_FILE).read_text())["metrics"]["train_time_s"]))
            last_epoch = json.loads((job_dir / EPOCH_METRICS_FILE).read_text().splitlines()[-1])["time"]
            ended = store.attempts(job.job_hash)[-1].ended_at
            assert ended is not None
            evals.append(ended.replace(tzinfo=UTC).timestamp() - float(last_epoch))
            starts.append(store.attempts(job.job_hash)[0].started_at)
            ends.append(ended)
    return train, evals, (max(ends) - min(starts)).total_seconds()


def measure(work: Path, data: Path, per_worker: int, epochs: int) -> dict[str, float]:
    """Launch the grid with ``per_worker`` jobs per worker process in a fresh workspace; figures per job."""
    home = work / f"per_worker_{per_worker}"
    if home.exists():
        subprocess.run(["rm", "-rf", str(home)], check=True)
    home.mkdir(parents=True)
    grid = home / "grid.toml"
    grid.write_text(GRID.format(root=data.resolve(), epochs=epochs, per_worker=per_worker))
    wall, user = _launch(grid, home)
    fixed, fixed_user = _launch(grid, home)  # nothing new: the control plane's own cost
    for made_once in (home / BACKBONE_CACHE, home / "reports" / "overhead" / "report.json"):
        made_once.unlink()
    once, _ = _launch(grid, home)  # ... and its once-per-grid work (pre-flight, report) again
    train, evals, span = _per_job(home)
    n = len(train)
    per_job = (wall - fixed) / n
    work = statistics.mean(train) + statistics.mean(evals)
    return {"jobs": n, "wall_per_job": per_job, "train": statistics.mean(train), "eval": statistics.mean(evals),
            "overhead": per_job - work, "jobs_only": (wall - once) / n - work, "between": span / n - work,
            "user_per_job": (user - fixed_user) / n, "launch_fixed": fixed}


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if not (args.data / "train.beton").exists():  # built before timing anything
        from workers.data.builtin import prepare_digits

        prepare_digits(args.data)
    rows = {mode: measure(args.work_dir, args.data, mode, args.epochs) for mode in (1, args.per_worker)}
    log.info("%-22s %5s %9s %7s %6s %9s %9s %9s %9s %9s", "mode", "jobs", "wall/job", "train", "eval", "overhead",
             "overhead*", "in-span", "user/job", "relaunch")
    for mode, r in rows.items():
        log.info("%-22s %5d %8.2fs %6.2fs %5.2fs %8.2fs %8.2fs %8.2fs %8.2fs %8.2fs", f"jobs_per_worker = {mode}",
                 r["jobs"], r["wall_per_job"], r["train"], r["eval"], r["overhead"], r["jobs_only"], r["between"],
                 r["user_per_job"], r["launch_fixed"])
    one, many = rows[1], rows[args.per_worker]
    log.info("overhead per job: %.2fs -> %.2fs (x%.1f less; overhead* %.2fs -> %.2fs); goal: under 1 s per job",
             one["overhead"], many["overhead"], one["overhead"] / max(many["overhead"], 1e-9), one["jobs_only"],
             many["jobs_only"])
    log.info("import torch in this run: %.2fs", _import_torch_s())


def _import_torch_s() -> float:
    """Seconds of ``python -c "import torch"`` now (the machine's speed, for comparing runs)."""
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import torch"], check=True)
    return time.perf_counter() - t0


if __name__ == "__main__":
    main()
