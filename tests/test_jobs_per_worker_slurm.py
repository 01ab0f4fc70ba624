"""``[resources] jobs_per_worker`` on the real single-node SLURM cluster: three ready jobs in one array task.

One task runs them one after the other; ``dlth-orch cancel`` of one job leaves the shared task alone (the
worker skips the cancelled job); ``scontrol requeue`` of the task preempts the running job (it resumes from
its checkpoint) and hands the ones not started back without an attempt or a failure; a job that fails
(the product's test hook) fails alone and is retried in a task of its own. Mocked: nothing.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from db import AttemptState, JobState
from tests.test_slurm_backend import (  # noqa: F401 (fixtures)
    Fresh,
    cli,
    home,
    release_requeued,
    signal_paused_worker,
    slurm_cluster,
    squeue_state,
    submission_dirs,
    wait_for,
    write_grid,
)
from workers.test_hooks import ENV as FAIL_ONCE
from workers.test_hooks import EPOCH_SAVED, PAUSE_ENV

pytestmark = [pytest.mark.slurm, pytest.mark.slow]
THREE = """
[methods.supervised]
lr = [0.01, 0.05, 0.2]
"""


def test_one_task_runs_three_jobs_each_cancelled_requeued_and_failed_on_its_own(
        tmp_path: Path, home: Path, digits: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    """The requeue lands while the first job stands paused after its first epoch (``DLTH_TEST_PAUSE``)."""
    grid = write_grid(tmp_path / "grid.toml", "batch", digits, epochs=2, resources="jobs_per_worker = 3",
                      methods=THREE)
    armed = tmp_path / "armed"
    armed.mkdir()
    monkeypatch.setenv(FAIL_ONCE, str(armed))  # sbatch passes the environment to the task
    monkeypatch.setenv(PAUSE_ENV, str(armed))
    db = f"sqlite:///{tmp_path / 'db.sqlite'}"
    store = Fresh(db)
    cli("launch", str(grid), "--cluster", "slurm", "--no-wait", "--no-progress", db=db)
    (sub,) = submission_dirs(home)
    (task,) = json.loads((sub / "manifest.json").read_text())["tasks"]
    first, second, third = (j["job_hash"] for j in task["batch"])
    (armed / f"{second}.fail").touch()  # armed before it can start: the first job stands paused first
    (armed / f"{first}.{EPOCH_SAVED}").touch()  # before its first epoch can end (the worker is still starting)
    sid = store.job(first).backend_id
    assert {j.backend_id for j in store.jobs("batch")} == {sid} and sid.endswith("_0")  # one array task

    cli("cancel", "batch", "--job", third, "--yes", db=db)  # not started: the shared task stays
    assert store.job(third).state == JobState.CANCELLED
    paused = armed / f"{first}.{EPOCH_SAVED}.paused"
    wait_for("the first job paused after its first epoch", paused.exists)
    assert squeue_state(sid) == "RUNNING"
    # the whole task: the worker gets SIGTERM (released once it logged it)
    signal_paused_worker(home, sid, paused, ["scontrol", "requeue", sid], "SIGTERM")
    wait_for("the running job preempted", lambda: store.job(first).state == JobState.QUEUED, timeout=60)
    assert store.attempts(second) == [] and store.job(second).state == JobState.QUEUED  # handed back untouched
    release_requeued(sid)
    cli("launch", str(grid), "--cluster", "slurm", "--wait", "--no-progress", db=db)  # follow it to the end

    jobs = {j.job_hash: j for j in store.jobs("batch")}
    assert [a.state for a in store.attempts(first)] == [AttemptState.PREEMPTED, AttemptState.COMPLETED]
    assert {a.backend_id for a in store.attempts(first)} == {sid}, "requeued, not resubmitted"
    assert jobs[first].failure_count == 0 and jobs[first].state == JobState.COMPLETED
    failed, retried = store.attempts(second)
    assert failed.state == AttemptState.FAILED and "fails on purpose" in (failed.exit_reason or "")
    assert failed.backend_id == sid and retried.backend_id != sid  # its retry: a task of its own
    assert retried.state == AttemptState.COMPLETED and jobs[second].failure_count == 1
    assert jobs[third].state == JobState.CANCELLED and store.attempts(third) == []
    assert [a.pid for a in store.attempts(first)][-1] == failed.pid  # the resumed job and the failure: one worker
