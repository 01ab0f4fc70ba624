"""Lottery chains through ``dlth-orch launch``: locally and on the real SLURM cluster, queued at once.

They rest on the job graph: the backends honour ``depends_on`` (locally a child starts when its parents
are COMPLETED; on SLURM it is queued at once with a dependency on its parent's task).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from db import JobState, Store
from specs.lottery import parse_label
from tests.test_slurm_backend import home, slurm_cluster  # noqa: F401  (fixtures: the real SLURM cluster)

pytestmark = pytest.mark.slow

GRID = """
name = "{name}"
seeds = [0]
[dataset]
root = "{root}"
[train]
backbone = "test_resnet"
epochs = 1
batch_size = 32
image_size = 32
[resources]
cpus_per_task = 1
loader_workers = 1
[report]
metric = "val_top1"
[cluster]
profile = "slurm-local"
poll_min_s = 0.5
poll_max_s = 3.0
[subsets.full]
strategy = "full"
[subsets.imgs_10pct]
strategy = "full"
fraction = 0.1
[methods.supervised]
plain_jobs = false
[lottery.sup10]
generate = "supervised"
subset = "imgs_10pct"
levels = {levels}
rewind = "0it"
evaluate = {{ method = "supervised", subset = "imgs_10pct" }}
"""


def cli(*args: str, db: str, workspace: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "DLTH_HOME": str(workspace), "DLTH_HEARTBEAT_S": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "orchestrator.cli", *args, "--db", db], capture_output=True,
                          text=True, env=env, timeout=900)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def _levels(store: Store, grid: str) -> dict[str, object]:
    return {j.config_name: j for j in store.jobs(grid)}


def test_local_chain_completes_relaunches_idempotently_and_extends(tmp_path: Path, digits: Path) -> None:
    grid = tmp_path / "grid.toml"
    grid.write_text(GRID.format(name="lt-local", root=digits, levels=1))
    db = f"sqlite:///{tmp_path / 'db.sqlite'}"
    cli("launch", str(grid), "--cluster", "local", "--no-progress", db=db, workspace=tmp_path)
    store = Store(db)
    jobs = _levels(store, "lt-local")
    assert len(jobs) == 4 and {j.state for j in jobs.values()} == {JobState.COMPLETED}
    finals = store.final_metrics("lt-local")
    assert finals[jobs["lottery:sup10/L1"].job_hash]["weights_remaining"] == pytest.approx(0.8, abs=1e-3)
    before = {h: len(store.attempts(j.job_hash)) for h, j in jobs.items()}

    out = cli("launch", str(grid), "--cluster", "local", "--no-progress", db=db, workspace=tmp_path)
    assert "0 jobs to run" in out.stdout + out.stderr

    grid.write_text(GRID.format(name="lt-local", root=digits, levels=2))
    cli("launch", str(grid), "--cluster", "local", "--no-progress", db=db, workspace=tmp_path)
    jobs = _levels(store, "lt-local")
    assert len(jobs) == 6 and {j.state for j in jobs.values()} == {JobState.COMPLETED}
    assert all(len(store.attempts(jobs[h].job_hash)) == n for h, n in before.items())  # nothing retrained
    assert {parse_label(h)[1] for h in jobs} == {0, 1, 2}


@pytest.mark.slurm
def test_three_level_chain_queued_at_once_completes_on_slurm(tmp_path: Path, digits: Path,
                                                             home: Path) -> None:  # noqa: F811
    grid = tmp_path / "grid.toml"
    grid.write_text(GRID.format(name="lt-slurm", root=digits, levels=2))
    db = f"sqlite:///{tmp_path / 'db.sqlite'}"
    cli("launch", str(grid), "--cluster", "slurm", "--wait", "--no-progress", db=db, workspace=home)
    store = Store(db)
    jobs = _levels(store, "lt-slurm")
    assert len(jobs) == 6 and {j.state for j in jobs.values()} == {JobState.COMPLETED}
    finals = store.final_metrics("lt-slurm")
    assert finals[jobs["lottery:sup10/L2"].job_hash]["weights_remaining"] == pytest.approx(0.64, abs=1e-3)
