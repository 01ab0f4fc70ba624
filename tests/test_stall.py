"""Stalled jobs (heartbeat alive, steps frozen) are stopped and retried with the reason "stalled": locally
and on the real single-node SLURM cluster. The freeze is the product's test hook
(``DLTH_TEST_FREEZE_ONCE``, workers/test_hooks.py) in real worker processes; ``stall_s`` is a few seconds.
Mocked: nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from db import AttemptState, JobState, Store
from orchestrator.grid import expand, load_grid
from orchestrator.stall import MIN_STALL_S, stall_limit, stalled
from specs.contract import PROGRESS_FILE
from subsets import DatasetMeta
from tests import test_slurm_backend as sb
from workers.test_hooks import FREEZE_ENV

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]
home, slurm_cluster = sb.home, sb.slurm_cluster  # the real cluster's fixtures (SLURM test only)
STALL = "stall_s = 4"


def _arm(grid: Path, digits: Path, tmp_path: Path) -> tuple[str, Path]:
    (job,) = expand(load_grid(grid), DatasetMeta.load(digits))
    armed = tmp_path / "armed"
    armed.mkdir()
    (armed / f"{job.spec.job_hash}.freeze").touch()
    return job.spec.job_hash, armed


def _check_stalled_then_completed(db: str, h: str, armed: Path) -> None:
    store = Store(db)
    (job,) = [j for g in store.list_grids() for j in store.jobs(g.name)]
    reasons = [(str(a.state), a.exit_reason) for a in store.attempts(h)]
    assert job.job_hash == h and job.state == JobState.COMPLETED, reasons
    first, *rest = store.attempts(h)
    assert first.state == AttemptState.FAILED, first.exit_reason
    assert (first.exit_reason or "").startswith("stalled: step "), first.exit_reason
    assert "has not moved for" in (first.exit_reason or "") and "(stall_s 4)" in (first.exit_reason or "")
    assert [a.state for a in rest] == [AttemptState.COMPLETED] and (armed / f"{h}.frozen").is_file()
    assert job.failure_count == 1  # a stall counts against the budget (a job that always stalls stops)


def test_the_default_limit_reads_the_step_times(tmp_path: Path, digits: Path) -> None:
    grid = tmp_path / "grid.toml"
    grid.write_text(sb.GRID.format(name="st", root=digits, epochs=1, budget=1, resources="", cluster="",
                                   subsets="", methods="[methods.supervised]"))
    (job,) = expand(load_grid(grid), DatasetMeta.load(digits))
    assert stall_limit(job.spec, 0.5) == MIN_STALL_S and stall_limit(job.spec, 60.0) == 1200.0
    now = time.time()
    doc = {"step": 7, "moved_at": now - 700, "step_s": 0.5, "beat_at": now - 1, "phase": "train", "attempt": 3}
    (tmp_path / PROGRESS_FILE).write_text(json.dumps(doc))
    stall = stalled(tmp_path, job.spec.to_json(), now)
    assert stall is not None and "stalled: step 7 has not moved for 700s (stall_s 600)" in stall.reason
    assert stall.of([3]) and not stall.of([4])  # attempt 4 (a retry) has not beaten yet: the file is attempt 3's
    (tmp_path / PROGRESS_FILE).write_text(json.dumps({k: v for k, v in doc.items() if k != "attempt"}))
    legacy = stalled(tmp_path, job.spec.to_json(), now)  # an older worker's file (a frozen study's snapshot)
    assert legacy is not None and legacy.attempt is None and legacy.of([4])
    for change in ({"phase": "eval"}, {"moved_at": now - 500}, {"beat_at": now - 650}):  # evaluating,
        (tmp_path / PROGRESS_FILE).write_text(json.dumps({**doc, **change}))  # moving, heartbeat gone
        assert stalled(tmp_path, job.spec.to_json(), now) is None


def test_a_stalled_local_job_is_stopped_and_retried(tmp_path: Path, digits: Path) -> None:
    grid = tmp_path / "grid.toml"
    grid.write_text(sb.GRID.format(name="stall-local", root=digits, epochs=1, budget=1, resources=STALL,
                                   cluster="", subsets="", methods="[methods.supervised]"))
    h, armed = _arm(grid, digits, tmp_path)
    db = f"sqlite:///{tmp_path / 'db.sqlite'}"
    env = {**os.environ, "DLTH_HOME": str(tmp_path / "ws"), "DLTH_HEARTBEAT_S": "1", FREEZE_ENV: str(armed)}
    out = subprocess.run([sys.executable, "-m", "orchestrator.cli", "launch", str(grid), "--cluster", "local",
                          "--no-progress", "--db", db], capture_output=True, text=True, env=env, timeout=600, cwd=REPO)
    assert out.returncode == 0, out.stdout + out.stderr
    _check_stalled_then_completed(db, h, armed)


@pytest.mark.slurm
def test_a_stalled_slurm_job_is_cancelled_and_resubmitted(tmp_path: Path, home: Path, digits: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    grid = sb.write_grid(tmp_path / "grid.toml", "stall-slurm", digits, budget=1, methods="[methods.supervised]",
                         resources=STALL)
    h, armed = _arm(grid, digits, tmp_path)
    monkeypatch.setenv(FREEZE_ENV, str(armed))  # sbatch passes the environment on to the task
    db = f"sqlite:///{tmp_path / 'db.sqlite'}"
    sb.cli("launch", str(grid), "--cluster", "slurm", "--wait", "--no-progress", db=db)
    _check_stalled_then_completed(db, h, armed)
    store = Store(db)
    first = store.attempts(h)[0]
    out = subprocess.run(["sacct", "-X", "-n", "-P", "-o", "State", "-j", first.backend_id or ""],
                         capture_output=True, text=True).stdout
    assert out.split()[0] == "CANCELLED"  # its task was cancelled: the heartbeat thread would beat on
