"""Launch benchmark: expand + record a 10,000-job grid, then relaunch it (nothing new), against a bare
``sqlite3.executemany`` of the same number of rows in the same run.

    PYTHONPATH=. .venv/bin/python -m benchmarks.bench_launch [--jobs 10000] [--repeat 1]

The grid is synthetic (a metadata-only dataset of 100 classes, as ``tests/conftest.write_meta_dir``):
``full`` + 9 ``uniform`` subsets x (``--jobs`` / 100) supervised configurations x 10 seeds. "record" is
:func:`orchestrator.launch.record_grid` on a fresh workspace and SQLite database (job files, manifests,
rows); "relaunch" is the same call again, when every job is known. The baseline writes the same number
of rows (hash, spec JSON, labels) into a bare SQLite table with one ``executemany`` and a commit.
Wall and CPU (process) time are printed; the machine may be shared, so CPU time is the steadier figure.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

console = Console(width=120)
SUBSETS, SEEDS = 10, 10


def make_grid(root: Path, n_jobs: int) -> Path:
    """A metadata-only dataset and a grid of about ``n_jobs`` jobs (subsets x configurations x seeds)."""
    from subsets import ClassInfo, DatasetMeta

    n_classes = 100
    ds = root / "ds"
    classes = [ClassInfo(i, f"n{1000000 + i:08d}", f"class {i}") for i in range(n_classes)]
    labels = {"train": np.repeat(np.arange(n_classes), 50), "val": np.repeat(np.arange(n_classes), 10)}
    DatasetMeta(root=ds, name="bench", classes=classes, split_files={"train": "train.beton", "val": "val.beton"},
                labels=labels).save()
    configs = max(1, n_jobs // (SUBSETS * SEEDS))
    lrs = [round(0.001 * (i + 1), 6) for i in range(max(1, configs // 4))]
    wds = [1e-4, 2e-4, 5e-4, 1e-3][: max(1, configs // len(lrs))]
    subsets = '[subsets.full]\nstrategy = "full"\n' + "".join(
        f'[subsets.u{k}]\nstrategy = "uniform"\nk = {10 * k}\n' for k in range(1, SUBSETS))
    grid = root / "grid.toml"
    grid.write_text(
        f'name = "bench"\nseeds = {list(range(SEEDS))}\n[dataset]\nroot = "{ds}"\n[train]\nepochs = 1\n'
        f"{subsets}[methods.supervised]\nlr = {lrs}\nweight_decay = {wds}\n"
    )
    return grid


def timed(fn: Callable[[], Any]) -> tuple[Any, float, float]:
    """``fn()``, its wall time and its CPU time (this process), in seconds."""
    w0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - w0, time.process_time() - c0


def bare_executemany(path: Path, rows: list[tuple[str, str, str, str]]) -> None:
    """The baseline: the same number of rows into one bare SQLite table, one executemany + commit."""
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE jobs (job_hash TEXT PRIMARY KEY, spec_json TEXT, subset TEXT, config TEXT)")
    con.executemany("INSERT INTO jobs VALUES (?, ?, ?, ?)", rows)
    con.commit()
    con.close()


def run_once(n_jobs: int) -> dict[str, float]:
    from db import Store
    from orchestrator.grid import load_grid
    from orchestrator.launch import record_grid
    from subsets import DatasetMeta

    with tempfile.TemporaryDirectory(prefix="dlth-bench-launch-") as d:
        root = Path(d)
        os.environ["DLTH_HOME"] = str(root / "home")
        grid_path = make_grid(root, n_jobs)
        store = Store(f"sqlite:///{root / 'db.sqlite'}")
        meta = DatasetMeta.load(root / "ds")
        first, rec_w, rec_c = timed(lambda: record_grid(store, load_grid(grid_path), meta))
        again, rel_w, rel_c = timed(lambda: record_grid(store, load_grid(grid_path), meta))
        assert first.new == len(first.jobs) and again.new == 0 and again.known == len(first.jobs)
        rows = [(ej.spec.job_hash, ej.spec.to_json(), ej.subset_name, ej.config_name) for ej in first.jobs]
        _, base_w, base_c = timed(lambda: bare_executemany(root / "bare.sqlite", rows))
        store.close()
    return {"jobs": len(first.jobs), "record_wall": rec_w, "record_cpu": rec_c, "relaunch_wall": rel_w,
            "relaunch_cpu": rel_c, "bare_wall": base_w, "bare_cpu": base_c}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args(argv)
    table = Table(title=f"launch of a {args.jobs:,}-job grid (SQLite)")
    for col in ("run", "jobs", "record wall s", "record CPU s", "relaunch wall s", "relaunch CPU s",
                "bare executemany s", "record / bare", "relaunch / bare"):
        table.add_column(col, justify="right")
    for i in range(args.repeat):
        r = run_once(args.jobs)
        table.add_row(str(i + 1), f"{r['jobs']:,}", f"{r['record_wall']:.2f}", f"{r['record_cpu']:.2f}",
                      f"{r['relaunch_wall']:.2f}", f"{r['relaunch_cpu']:.2f}", f"{r['bare_wall']:.3f}",
                      f"{r['record_wall'] / r['bare_wall']:.1f}x", f"{r['relaunch_wall'] / r['bare_wall']:.1f}x")
    console.print(table)
    console.print("targets: record < 2 s, relaunch < 1 s (wall, on the project's 2-core machine)")


if __name__ == "__main__":
    main()
