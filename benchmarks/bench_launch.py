"""Control-plane benchmark: ``dlth-orch launch`` of a grid with nothing new to do (a relaunch) and
``launch --dry-run``, each a fresh process as a user runs them, against ``python -c "import torch"``
measured in the same run; for the quickstart and for a generated grid of ``--jobs`` jobs.

    PYTHONPATH=. .venv/bin/python -m benchmarks.bench_launch [--jobs 10000] [--repeat 3]

Set-up (not timed): the real digits dataset (the quickstart's) is built once; each grid gets its own
workspace, its jobs are recorded, and every job is marked completed with a synthetic ``knn_top1`` (the
relaunch path reads no training result); one relaunch then writes the report and the code snapshot, as
the launch that finished the grid would have. The generated grid is the quickstart's on the digits:
``full`` + 9 ``uniform`` subsets x (``--jobs`` / 100) supervised configurations x 10 seeds.

Timed: ``launch GRID`` (nothing new: pre-flights, the records, the report left as it is) and ``launch
GRID --dry-run`` (plan + read-only database), the best of ``--repeat`` runs, wall and CPU (user + system
of the child process). The machine may be shared: CPU time is the steadier figure, and the ratios to
``import torch`` (the floor of any process that trains) are measured under the same load. Bytecode
caches are written as in a user's install (``PYTHONDONTWRITEBYTECODE`` is dropped for the children).
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

console = Console(width=140)
REPO = Path(__file__).resolve().parents[1]
SUBSETS, SEEDS = 10, 10
TARGETS = {"quickstart": 2.0}  # seconds, wall, for a relaunch and a dry run; larger grids: 3 s
TARGET_LARGE = 3.0


def large_grid(path: Path, digits: Path, n_jobs: int) -> Path:
    """A grid of about ``n_jobs`` jobs on the digits: subsets x supervised configurations x seeds."""
    configs = max(1, n_jobs // (SUBSETS * SEEDS))
    lrs = [round(0.001 * (i + 1), 6) for i in range(max(1, configs // 4))]
    wds = [1e-4, 2e-4, 5e-4, 1e-3][: max(1, configs // len(lrs))]
    subsets = '[subsets.full]\nstrategy = "full"\n' + "".join(
        f'[subsets.u{k}]\nstrategy = "uniform"\nk = {k}\n' for k in range(1, SUBSETS))
    path.write_text(
        f'name = "bench"\nseeds = {list(range(SEEDS))}\n[dataset]\nroot = "{digits}"\n'
        f'[train]\nbackbone = "test_resnet"\nimage_size = 32\nepochs = 1\n[report]\nmetric = "knn_top1"\n'
        f"{subsets}[methods.supervised]\nlr = {lrs}\nweight_decay = {wds}\n"
    )
    return path


def quickstart_grid(path: Path, digits: Path) -> Path:
    """The quickstart grid, on the benchmark's digits dataset."""
    text = (REPO / "examples" / "quickstart.toml").read_text()
    path.write_text(text.replace('root = "../data/digits"', f'root = "{digits}"'))
    return path


def child_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DLTH_DB", "PYTHONDONTWRITEBYTECODE")}
    return {**env, "DLTH_HOME": str(home), "PYTHONPATH": str(REPO)}


def run_timed(args: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Run ``args``; its wall time and CPU time (user + system), in seconds. A failure stops the benchmark."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(args, env=env, cwd=REPO, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}")
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def best(args: list[str], env: dict[str, str], repeat: int) -> tuple[float, float]:
    """The best wall and the best CPU time of ``repeat`` runs."""
    runs = [run_timed(args, env) for _ in range(repeat)]
    return min(w for w, _ in runs), min(c for _, c in runs)


def seed_finished(grid_path: Path, home: Path) -> int:
    """Record the grid in ``home``'s database with every job completed (synthetic metric); its job count."""
    from db import Store
    from orchestrator.grid import load_grid
    from orchestrator.launch import ensure_dataset, record_grid

    os.environ["DLTH_HOME"] = str(home)
    grid = load_grid(grid_path)
    store = Store(f"sqlite:///{home / 'dlth.db'}")
    rec = record_grid(store, grid, ensure_dataset(grid))
    rng = random.Random(0)
    for ej in rec.jobs:
        store.complete(ej.spec.job_hash, None, {"knn_top1": rng.uniform(0.5, 0.9)})
    store.close()
    return len(rec.jobs)


def measure(name: str, grid_path: Path, home: Path, repeat: int) -> dict[str, float]:
    """Seed the grid finished, warm it up (report, snapshot, backbone cache), then time the commands."""
    t0 = time.perf_counter()
    jobs = seed_finished(grid_path, home)
    env = child_env(home)
    launch = [sys.executable, "-m", "orchestrator.cli", "launch", str(grid_path), "--no-progress"]
    run_timed(launch, env)  # the launch that finished the grid: report, code snapshot, backbone cache
    console.print(f"[dim]{name}: {jobs:,} jobs recorded, completed and reported in {time.perf_counter() - t0:.0f} s")
    torch = best([sys.executable, "-c", "import torch"], env, repeat)
    relaunch = best(launch, env, repeat)
    dry = best([*launch[:-1], "--dry-run"], env, repeat)
    return {"jobs": jobs, "torch_wall": torch[0], "torch_cpu": torch[1], "relaunch_wall": relaunch[0],
            "relaunch_cpu": relaunch[1], "dry_wall": dry[0], "dry_cpu": dry[1]}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    from workers.data.builtin import prepare_digits

    table = Table(title="dlth-orch launch with nothing new, and launch --dry-run (best of "
                        f"{args.repeat}; seconds, wall / CPU)")
    for col in ("grid", "jobs", "import torch", "relaunch", "dry run", "relaunch / torch", "dry run / torch",
                "target (wall)"):
        table.add_column(col, justify="left" if col == "grid" else "right")
    with tempfile.TemporaryDirectory(prefix="dlth-bench-launch-") as d:
        root = Path(d)
        digits = root / "data" / "digits"
        prepare_digits(digits, image_size=32)
        grids = {"quickstart": quickstart_grid(root / "quickstart.toml", digits),
                 f"{args.jobs:,}-job grid": large_grid(root / "large.toml", digits, args.jobs)}
        for name, path in grids.items():
            r = measure(name, path, root / f"home-{path.stem}", args.repeat)
            target = TARGETS.get(name, TARGET_LARGE)
            table.add_row(name, f"{r['jobs']:,}", f"{r['torch_wall']:.2f} / {r['torch_cpu']:.2f}",
                          f"{r['relaunch_wall']:.2f} / {r['relaunch_cpu']:.2f}",
                          f"{r['dry_wall']:.2f} / {r['dry_cpu']:.2f}",
                          f"{r['relaunch_wall'] / r['torch_wall']:.2f}x / {r['relaunch_cpu'] / r['torch_cpu']:.2f}x",
                          f"{r['dry_wall'] / r['torch_wall']:.2f}x / {r['dry_cpu'] / r['torch_cpu']:.2f}x",
                          f"< {target:.0f} s")
    console.print(table)


if __name__ == "__main__":
    main()
