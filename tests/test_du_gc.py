"""``du`` / ``gc`` and a grid's ``[storage] keep`` on a real lottery chain trained on the digits (local
backend, real workers): collected while it runs, every child still starts and the disk stays bounded;
``gc --keep none`` of a grid whose chain was extended keeps what the new levels will load. Mocked: nothing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from db import JobState, Store
from orchestrator.grid import load_grid
from orchestrator.launch import record_grid
from specs.base import SpecError
from specs.contract import CHECKPOINT_FILE, JobPaths
from subsets import DatasetMeta
from tests.test_lottery_launch import GRID

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]
STORAGE = '\n[storage]\nkeep = "none"\n'


def cli(*args: str, db: str, home: Path, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "DLTH_HOME": str(home), "DLTH_HEARTBEAT_S": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "orchestrator.cli", *args, "--db", db], capture_output=True,
                          text=True, env=env, timeout=900, cwd=REPO)
    if check:
        assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def _checkpointed(home: Path) -> int:
    """Job directories holding a per-epoch checkpoint right now."""
    return sum(1 for _ in (home / "jobs").glob(f"*/*/{CHECKPOINT_FILE}")) if (home / "jobs").is_dir() else 0


def test_storage_table_is_checked(tmp_path: Path, digits: Path) -> None:
    grid = tmp_path / "grid.toml"
    grid.write_text(GRID.format(name="st", root=digits, levels=1) + '\n[storage]\nkeep = "some"\n')
    with pytest.raises(SpecError, match=r"storage\.keep.*final, best, none"):
        load_grid(grid)


def test_chain_collected_while_it_runs_keeps_what_children_load(tmp_path: Path, digits: Path) -> None:
    """``[storage] keep = "none"``: as each job finishes its checkpoints go, and its weights, mask and rewind
    point as soon as no job still to run needs them: L1 still starts after L0's evaluation (which finished
    first or beside it) was collected, and at the end nothing but metrics, manifests, logs and code is left."""
    home = tmp_path / "ws"
    grid = tmp_path / "grid.toml"
    grid.write_text(GRID.format(name="lt-gc", root=digits, levels=1) + STORAGE)
    db = f"sqlite:///{tmp_path / 'db.sqlite'}"
    peak, stop = [0], threading.Event()

    def sample() -> None:
        while not stop.wait(0.1):
            peak[0] = max(peak[0], _checkpointed(home))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        cli("launch", str(grid), "--cluster", "local", "--no-progress", db=db, home=home)
    finally:
        stop.set()
        sampler.join()
    store = Store(db)
    jobs = {j.config_name: j for j in store.jobs("lt-gc")}
    assert len(jobs) == 4 and {j.state for j in jobs.values()} == {JobState.COMPLETED}  # every child started
    assert [a.state for j in jobs.values() for a in store.attempts(j.job_hash)] == ["COMPLETED"] * 4
    # collected as jobs finished: at most the two jobs running at once (2 cores) held a checkpoint, of the
    # four that made one; none is left, nor any weights (no job is left to load them)
    assert peak[0] <= 2 and _checkpointed(home) == 0
    usage = json.loads(cli("du", "lt-gc", "--json", db=db, home=home).stdout)["lt-gc"]
    assert usage["jobs"] == 4 and usage["checkpoints"] == 0 and usage["final_weights"] == 0
    assert 0 < usage["masks"] < 10_000  # the sparsity reports (the report reads them) stay
    assert usage["logs"] > 0 and usage["manifests"] > 0 and usage["code"] > 0
    assert usage["total"] == sum(v for k, v in usage.items() if k not in ("jobs", "total"))
    l1 = JobPaths.of(jobs["lottery:sup10/L1"].job_dir)
    assert l1.final_metrics.is_file() and not l1.final_weights.exists() and not l1.mask.exists()
    dry = cli("gc", "--keep", "none", "--dry-run", db=db, home=home).stdout
    assert "grid lt-gc: would remove 0 files (0 B)" in dry


def test_gc_keeps_the_inputs_of_jobs_still_to_run(tmp_path: Path, digits: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """A grid recorded but not run: its level-0 job is given (fake) finished outputs by hand; ``gc`` removes
    its checkpoint but keeps its final weights and rewind point, which the waiting L1 will load."""
    home = tmp_path / "ws"
    monkeypatch.setenv("DLTH_HOME", str(home))
    grid = tmp_path / "grid.toml"
    grid.write_text(GRID.format(name="lt-keep", root=digits, levels=1))
    db = f"sqlite:///{tmp_path / 'db.sqlite'}"
    store = Store(db)
    record_grid(store, load_grid(grid), DatasetMeta.load(digits))
    jobs = {j.config_name: j for j in store.jobs("lt-keep")}
    l0 = jobs["lottery:sup10/L0"]
    attempt = store.claim(l0.job_hash, backend="local", backend_id=None, host="here", pid=1)
    store.complete(l0.job_hash, attempt, {"val_top1": 0.5})
    paths = JobPaths.of(l0.job_dir)
    for p in (paths.checkpoint, paths.final_weights, paths.rewind):
        p.write_bytes(b"x" * 1000)
    out = cli("gc", "lt-keep", "--keep", "none", db=db, home=home).stdout
    assert "removed 1 files (1000 B); kept 2 that jobs still to run will load" in out, out
    assert not paths.checkpoint.exists() and paths.final_weights.is_file() and paths.rewind.is_file()
