"""Job-chain orchestration overhead: the time between a parent's end and its child's start, on the local
backend and on SLURM, against the same jobs without dependencies run one after another in the same run.

    PYTHONPATH=. .venv/bin/python -m benchmarks.bench_chain [--levels 3] [--skip-slurm]

Per backend, two grids of ``--levels`` equally tiny real jobs (supervised ``test_resnet``, 1 epoch on 10% of
the digits at 32 px: a few seconds each) are launched with ``dlth-orch launch --wait`` in fresh workspaces
(``DLTH_HOME``, SQLite database):

* chain: level k starts from level k-1's weights (``init = { from = "l{k-1}" }``): the local backend starts
  a child once its parent is COMPLETED; SLURM gets the whole chain at once, each child held by
  ``--dependency=aftercorr`` on its parent's array;
* independent (the baseline): the same number of jobs of the same size, no dependencies (one configuration,
  ``--levels`` seeds), forced to run one at a time: ``max_slots = 1`` locally, an array throttled to
  ``%1`` on SLURM. Each job then starts when the one before it ends, as a child does, but what it waits
  for is a free slot, not a parent.

A gap is measured from the store's attempts (the worker's own clock, both ends): a job's first attempt
``started_at`` minus the latest ``ended_at`` of its parents' attempts (chain) or of the job before it
(independent). ``started_at`` is when the worker claims the job, so every gap includes launching the worker
(process start, torch imports) besides the backend's poll and the scheduler: that is why the baseline is
the same jobs' gap and not zero. Ratios printed: "chain / indep." = mean chain gap / mean independent gap
(1.0: the dependency costs nothing beyond starting the next job at all), and "gap / run" = mean gap / mean
job run time (``ended_at - started_at``): how much of a chain's wall time is orchestration with jobs this
short. Wall times only: a gap is waiting, not computing (the machine may be shared: load is printed).
For SLURM the same gaps are also computed from SLURM's own Start/End (``sacct``, whole seconds): the part
of a gap that is SLURM's scheduling (the rest is the batch script, ``srun`` and the worker starting up).
The scheduler settings that bound that part are printed with the result (``SchedulerParameters`` unset:
the defaults, a main scheduler run on job events and at least every ``sched_interval`` = 60 s, backfill
every ``bf_interval`` = 30 s).
Total: about 4 x ``--levels`` jobs, a few minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime
from itertools import pairwise
from pathlib import Path

from rich.console import Console
from rich.table import Table

from tests.grids import tiny_grid

REPO = Path(__file__).resolve().parents[1]
console = Console(width=140)

CLUSTER = {"local": "max_slots = 1",
           "slurm": 'profile = "slurm-local"\narray_throttle = 1\npoll_min_s = 0.5\npoll_max_s = 2.0'}


def grid_text(name: str, root: Path, backend: str, levels: int, chain: bool) -> str:
    """A chain of ``levels`` jobs (l0 <- l1 <- ...), or ``levels`` independent jobs of the same size."""
    text = tiny_grid(name, root, seeds=[0] if chain else range(levels),
                     tables=f'[report]\nreference = "tiny"\n[cluster]\n{CLUSTER[backend]}\n',
                     subsets='[subsets.tiny]\nstrategy = "full"\nfraction = 0.1\n')
    if not chain:
        return text + '[methods.l0]\nmethod = "supervised"\n'
    return text + "".join(f'[methods.l{k}]\nmethod = "supervised"\n'
                          + (f'init = {{ from = "l{k - 1}" }}\n' if k else "") for k in range(levels))


# --- the measurement: pure functions of attempt spans ---------------------------------------------
Span = tuple[datetime, datetime]  # (first attempt started_at, last attempt ended_at) of one job


def serial_deps(spans: dict[str, Span]) -> dict[str, list[str]]:
    """Jobs that ran one at a time: each job's "parent" is the job that started just before it."""
    order = sorted(spans, key=lambda h: spans[h][0])
    return {child: [parent] for parent, child in pairwise(order)}


def gaps(spans: dict[str, Span], deps: dict[str, list[str]]) -> list[float]:
    """Seconds from the latest end of a job's parents to its start, for every job with parents."""
    return [(spans[c][0] - max(spans[p][1] for p in ps)).total_seconds() for c, ps in sorted(deps.items())]


def run_times(spans: dict[str, Span]) -> list[float]:
    return [(end - start).total_seconds() for start, end in spans.values()]


# --- running a grid -------------------------------------------------------------------------------
@dataclass
class Result:
    backend: str
    kind: str
    jobs: int
    gaps: list[float]
    runs: list[float]
    wall_s: float
    slurm_gaps: list[float] | None = None  # the same gaps by SLURM's own clock (sacct Start/End, whole s)


def spans_of(db: str, grid: str) -> tuple[dict[str, Span], dict[str, list[str]], dict[str, str]]:
    """The store's attempt spans of a grid's jobs, their dependencies and their SLURM ids."""
    from db import JobState, Store

    with Store(db) as store:
        jobs = store.jobs(grid)
        bad = [f"{j.config_name}: {j.state}" for j in jobs if j.state != JobState.COMPLETED]
        if bad:
            raise SystemExit(f"{grid}: not every job completed ({', '.join(bad)})")
        first: dict[str, datetime] = {}
        last: dict[str, datetime] = {}
        for a in store.grid_attempts(grid):  # by job and attempt number
            first.setdefault(a.job_hash, a.started_at)
            if a.ended_at is not None:
                last[a.job_hash] = a.ended_at
        ids = {j.job_hash: j.backend_id for j in jobs if j.backend_id}
        return {h: (first[h], last[h]) for h in first}, store.grid_deps(grid), ids


def sacct_spans(ids: dict[str, str]) -> dict[str, Span]:
    """SLURM's Start/End of each job (its last run), by job hash."""
    from orchestrator.backends.slurm_cmd import run_slurm
    from orchestrator.backends.slurm_sacct import SACCT_FIELDS, parse_sacct

    arrays = sorted({i.split("_")[0] for i in ids.values()})
    out = run_slurm(["sacct", "-X", "-P", "-n", "-j", ",".join(arrays), "-o", ",".join(SACCT_FIELDS)]).stdout
    runs = {r.slurm_id: (r.start, r.end) for r in parse_sacct(out) if r.start and r.end}
    return {h: runs[i] for h, i in ids.items() if i in runs}  # type: ignore[misc]


def launch(root: Path, digits: Path, backend: str, levels: int, chain: bool) -> Result:
    kind = "chain" if chain else "independent"
    work = root / f"{backend}-{kind}"
    work.mkdir()
    name = f"chainbench-{backend}-{kind}"
    grid = work / "grid.toml"
    grid.write_text(grid_text(name, digits, backend, levels, chain))
    db = f"sqlite:///{work / 'db.sqlite'}"
    env = {**os.environ, "DLTH_HOME": str(work / "home"), "OMP_NUM_THREADS": "1", "NUMBA_OPT": "0",
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
    env.pop("DLTH_DB", None)
    cmd = [sys.executable, "-m", "orchestrator.cli", "launch", str(grid), "--cluster", backend, "--wait",
           "--no-progress", "--db", db]
    console.print(f"[bold]{backend}[/], {kind}: {levels} jobs ...")
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"launch failed ({proc.returncode}):\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}")
    if backend == "slurm":
        settle(work)
    spans, deps, ids = spans_of(db, name)
    if chain and len(deps) != levels - 1:
        raise SystemExit(f"{name}: expected a chain of {levels} jobs, got dependencies {deps}")
    deps = deps if chain else serial_deps(spans)
    result = Result(backend, kind, len(spans), gaps(spans, deps), run_times(spans), wall)
    if backend == "slurm":
        sacct = sacct_spans(ids)
        if set(sacct) == set(spans):
            result.slurm_gaps = gaps(sacct, deps)
    return result


def settle(work: Path, timeout_s: float = 30.0) -> None:
    """Let this run's SLURM tasks leave the queue (a task's process outlives its result a little)."""
    def mine() -> list[str]:
        out = subprocess.run(["squeue", "-h", "-r", "-o", "%i|%Z"], capture_output=True, text=True).stdout
        return [line.split("|")[0] for line in out.splitlines() if str(work) in line]

    deadline = time.time() + timeout_s
    while mine() and time.time() < deadline:
        time.sleep(0.5)
    if mine():
        subprocess.run(["scancel", *mine()], check=False)


def slurm_settings() -> str:
    from orchestrator.backends.slurm_cmd import cluster_config

    config = cluster_config()
    keep = ("SchedulerType", "SchedulerParameters", "DependencyParameters", "SchedulerTimeSlice")
    return ", ".join(f"{k}={config.get(k, '?')}" for k in keep)


def busy_slurm_jobs() -> int:
    out = subprocess.run(["squeue", "-h", "-t", "RUNNING", "-o", "%i"], capture_output=True, text=True).stdout
    return len(out.split())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--levels", type=int, default=3, help="jobs in the chain (>= 2)")
    parser.add_argument("--skip-slurm", action="store_true", help="the local backend only")
    args = parser.parse_args(argv)
    if args.levels < 2:
        parser.error("--levels: at least 2 (a chain has a parent and a child)")
    backends = ["local"]
    if args.skip_slurm:
        console.print("SLURM: skipped (--skip-slurm)")
    elif not shutil.which("sbatch"):
        console.print("SLURM: skipped (no sbatch on PATH: scripts/slurm-cluster.sh up starts a local cluster)")
    else:
        backends.append("slurm")
        console.print(f"SLURM: {slurm_settings()} (unset: sched_interval=60 s, bf_interval=30 s, scheduling also "
                      f"on job submit/end events); running jobs already on the cluster: {busy_slurm_jobs()}")
    from orchestrator.backends.local import POLL_S

    console.print(f"local backend poll interval: {POLL_S} s; load average: {os.getloadavg()[0]:.2f} "
                  f"on {os.cpu_count()} CPUs")
    from workers.data.builtin import prepare_digits

    t_start = time.perf_counter()
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="bench_chain_") as tmp:
        root = Path(tmp)
        prepare_digits(root / "digits", image_size=32)
        for backend in backends:
            for chain in (True, False):
                results.append(launch(root, root / "digits", backend, args.levels, chain))
    total = time.perf_counter() - t_start

    table = Table(title=f"parent end -> child start, a chain of {args.levels} tiny jobs vs {args.levels} "
                        "independent jobs run one at a time (wall s)")
    for col in ("backend", "jobs", "gaps", "mean gap s", "max gap s", "mean job run s", "gap / run",
                "chain / indep.", "SLURM-side gap s", "launch wall s"):
        table.add_column(col, justify="left" if col in ("backend", "jobs") else "right")
    by = {(r.backend, r.kind): r for r in results}
    for r in results:
        mean_gap = statistics.mean(r.gaps)
        base = statistics.mean(by[(r.backend, "independent")].gaps)
        table.add_row(r.backend, r.kind, str(len(r.gaps)), f"{mean_gap:.2f}", f"{max(r.gaps):.2f}",
                      f"{statistics.mean(r.runs):.2f}", f"{mean_gap / statistics.mean(r.runs):.2f}",
                      f"{mean_gap / base:.2f}x" if r.kind == "chain" else "(baseline)",
                      f"{statistics.mean(r.slurm_gaps):.1f}" if r.slurm_gaps else "-", f"{r.wall_s:.1f}")
    console.print(table)
    console.print(f"total {total:.0f} s; load average now {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
