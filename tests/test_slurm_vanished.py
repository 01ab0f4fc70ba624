"""A child whose SLURM task vanishes while it waits for its parent, on the real single-node cluster of
``scripts/slurm-cluster.sh`` (a manual ``scancel`` of the pending child: accounting never lists a task
cancelled before it became eligible, and squeue no longer does). Mocked: nothing; skipped where the cluster
cannot exist, like ``test_slurm_backend.py``."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from db import AttemptState, JobState
from tests.test_slurm_backend import GRAPH_METHODS, Fresh, cli, home, refresh, slurm_cluster, squeue_state, write_grid

pytestmark = [pytest.mark.slurm, pytest.mark.slow]
__all__ = ["home", "slurm_cluster"]  # fixtures used here


def test_a_waiting_childs_cancelled_task_is_noticed_in_one_refresh_and_the_graph_completes(
        tmp_path: Path, home: Path, digits: Path) -> None:
    """Two levels queued at once; the child's pending task is cancelled behind dlth-orch's back. One refresh
    notices (the child keeps WAITING, without a task) and ``launch --wait`` gives it a new task, against its
    parent's, so the graph completes instead of waiting for ever."""
    grid = write_grid(tmp_path / "grid.toml", "vanish", digits, epochs=1, methods=GRAPH_METHODS)
    db = f"sqlite:///{tmp_path / 'db.sqlite'}"
    cli("launch", str(grid), "--cluster", "slurm", "--no-wait", "--no-progress", db=db)
    store = Fresh(db)
    parent, child = sorted(store.jobs("vanish"), key=lambda j: j.config_name != "supervised")
    assert child.state == JobState.WAITING and child.backend_id and squeue_state(child.backend_id) == "PENDING"
    subprocess.run(["scancel", child.backend_id], check=True)

    res = refresh(db, "vanish")
    assert res.vanished == 1 and res.commands == 2, res  # squeue lacked a waiting task: sacct asked too
    now = store.job(child.job_hash)
    assert (now.state, now.backend_id) == (JobState.WAITING, None)

    cli("launch", str(grid), "--cluster", "slurm", "--wait", "--no-progress", db=db)
    parent, child_now = store.job(parent.job_hash), store.job(child.job_hash)
    assert (parent.state, child_now.state) == (JobState.COMPLETED, JobState.COMPLETED)
    assert child_now.backend_id not in (None, child.backend_id)
    (c_attempt,) = store.attempts(child.job_hash)
    assert c_attempt.state == AttemptState.COMPLETED
    assert c_attempt.started_at >= store.attempts(parent.job_hash)[-1].ended_at
