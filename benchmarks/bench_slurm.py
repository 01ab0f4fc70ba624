"""Benchmark: 1,000 jobs to the local SLURM cluster as job arrays vs one submission per job.

    scripts/slurm-cluster.sh up && .venv/bin/python benchmarks/bench_slurm.py [--jobs 1000]

Both paths submit the same 1,000 trivial jobs (held with ``--hold``, so the 2-core test machine is not
kept busy running them; submission and status do not depend on that) and then refresh the status of
all of them: the array path with the backend's ONE batched query (``sacct --name``), the baseline with
one ``sacct -j`` per job, as a naive poller does. Every SLURM command either path runs is counted by
wrapping ``subprocess.Popen``. Prints both times, their ratio and the command counts; the jobs are
cancelled at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SLURM_TOOLS = {"sbatch", "sacct", "squeue", "scontrol", "scancel", "srun"}
CALLS: Counter = Counter()
_real_popen_init = subprocess.Popen.__init__


def _counting_init(self, args, *a, **kw):  # type: ignore[no-untyped-def]
    argv = [args] if isinstance(args, str) else list(args)
    tool = os.path.basename(str(argv[0]).split()[0]) if argv else ""
    if tool in SLURM_TOOLS:
        CALLS[tool] += 1
    _real_popen_init(self, args, *a, **kw)


@contextlib.contextmanager
def counted() -> Iterator[Counter]:
    """Count the SLURM commands run inside the block (every subprocess goes through Popen)."""
    CALLS.clear()
    subprocess.Popen.__init__ = _counting_init  # type: ignore[method-assign]
    try:
        yield CALLS
    finally:
        subprocess.Popen.__init__ = _real_popen_init  # type: ignore[method-assign]


def make_grid(root: Path, n_jobs: int) -> Path:
    """A metadata-only dataset and a grid of ``n_jobs`` jobs (one config, ``n_jobs`` seeds)."""
    from subsets import ClassInfo, DatasetMeta

    ds = root / "ds"
    classes = [ClassInfo(i, f"n{1000000 + i:08d}", f"class {i}") for i in range(4)]
    labels = {"train": np.repeat(np.arange(4), 8), "val": np.repeat(np.arange(4), 2)}
    DatasetMeta(root=ds, name="bench", classes=classes, split_files={"train": "train.beton", "val": "val.beton"},
                labels=labels).save()
    grid = root / "grid.toml"
    grid.write_text(f'name = "bench"\nseeds = {list(range(n_jobs))}\n[dataset]\nroot = "{ds}"\n'
                    '[subsets.full]\nstrategy = "full"\n[methods.supervised]\n')
    return grid


def setup_path(root: Path, n_jobs: int):  # type: ignore[no-untyped-def]
    """A fresh workspace + SQLite database holding the grid's jobs (PENDING)."""
    from db import Store
    from orchestrator.grid import load_grid
    from orchestrator.launch import ensure_dataset, record_grid

    root.mkdir(parents=True)
    os.environ["DLTH_HOME"] = str(root / "home")
    grid = load_grid(make_grid(root, n_jobs))
    store = Store(f"sqlite:///{root / 'db.sqlite'}")
    record_grid(store, grid, ensure_dataset(grid))
    return store, grid.name


def run_path(label: str, root: Path, n_jobs: int, per_job: bool, console: Console) -> dict:
    from orchestrator.backends.slurm_profile import SlurmProfile, job_name
    from orchestrator.backends.slurm_reconcile import reconcile_grid
    from orchestrator.backends.slurm_sacct import SACCT_FIELDS, parse_sacct
    from orchestrator.backends.slurm_submit import submit_jobs
    from orchestrator.profiles import load_profile

    store, grid = setup_path(root, n_jobs)
    profile = SlurmProfile.from_dict({**load_profile("slurm-local"), "sbatch": {"hold": True}})
    name = job_name(store, grid)
    jobs = store.jobs(grid)
    console.print(f"[bold]{label}[/]: submitting {len(jobs)} jobs ...")
    with counted() as calls:
        t0 = time.perf_counter()
        subs = submit_jobs(store, name, jobs, profile, store.url, max_chunk=1 if per_job else None)
        submit_s = time.perf_counter() - t0
        submit_calls = sum(calls.values())
    ids = [j.backend_id for j in store.jobs(grid)]
    assert all(ids) and len(set(ids)) == n_jobs
    with counted() as calls:
        t0 = time.perf_counter()
        if per_job:  # the baseline: one sacct per job
            states = {}
            for sid in ids:  # a pending array of one prints as A_[0]: ask for the array's id
                out = subprocess.run(["sacct", "-X", "-P", "-n", "-S", "now-1days", "-j", str(sid).split("_")[0],
                                      "-o", ",".join(SACCT_FIELDS)], capture_output=True, text=True,
                                     check=True).stdout
                states.update((r.slurm_id, r.state) for r in parse_sacct(out))
            seen = sum(1 for sid in ids if sid in states)
        else:
            res = reconcile_grid(store, grid, name)
            seen = res.alive
        refresh_s = time.perf_counter() - t0
        refresh_calls = sum(calls.values())
    subprocess.run(["scancel", f"--name={name}"], check=False)
    return {"label": label, "arrays": len(subs), "submit_s": submit_s, "submit_calls": submit_calls,
            "refresh_s": refresh_s, "refresh_calls": refresh_calls, "seen": seen}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1000)
    args = parser.parse_args()
    console = Console(width=120)
    from orchestrator.backends.slurm_cmd import max_array_size, slurm_available

    if not slurm_available():
        sys.exit("SLURM is not installed: run scripts/slurm-cluster.sh up (as root) first")
    console.print(f"MaxArraySize of this cluster: {max_array_size(0)}")
    with tempfile.TemporaryDirectory(prefix="bench_slurm_") as tmp:
        arrays = run_path("arrays, batched refresh", Path(tmp) / "arrays", args.jobs, False, console)
        single = run_path("one sbatch + one sacct per job", Path(tmp) / "single", args.jobs, True,
                          console)
    table = Table(title=f"{args.jobs} jobs on the local SLURM cluster")
    for col in ("path", "arrays", "submit s", "submit cmds", "refresh s", "refresh cmds", "jobs seen"):
        table.add_column(col, justify="left" if col == "path" else "right")
    for r in (arrays, single):
        table.add_row(r["label"], str(r["arrays"]), f"{r['submit_s']:.2f}", str(r["submit_calls"]),
                      f"{r['refresh_s']:.3f}", str(r["refresh_calls"]), str(r["seen"]))
    console.print(table)
    console.print(f"submission: arrays {single['submit_s'] / arrays['submit_s']:.1f}x faster "
                  f"({arrays['submit_calls']} vs {single['submit_calls']} SLURM commands)")
    console.print(f"status refresh: batched {single['refresh_s'] / arrays['refresh_s']:.1f}x faster "
                  f"({arrays['refresh_calls']} vs {single['refresh_calls']} SLURM commands)")


if __name__ == "__main__":
    main()
