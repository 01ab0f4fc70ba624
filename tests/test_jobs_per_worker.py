"""``[resources] jobs_per_worker`` on the local backend, for real: several jobs in one worker process, each
claimed, logged, recorded, retried and cancelled on its own, and giving the same numbers bit for bit as the
same jobs each in a process of its own. Failures come from the product's test hook (workers/test_hooks.py);
one slot (``max_slots = 1``) makes every batch one process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from db import AttemptState, JobState, Store
from orchestrator.grid import expand, load_grid
from specs.contract import FINAL_METRICS_FILE
from subsets import DatasetMeta
from workers.test_hooks import ENV as FAIL_ONCE

pytestmark = pytest.mark.slow

GRID = """
name = "{name}"
seeds = [0]
failure_budget = 1
[dataset]
root = "{root}"
[train]
backbone = "test_resnet"
epochs = {epochs}
batch_size = 64
image_size = 32
deterministic = true
[resources]
cpus_per_task = 1
loader_workers = 1
{resources}
[cluster]
max_slots = 1
[subsets.full]
strategy = "full"
[methods.supervised]
lr = {lrs}
"""
TIMES = ("train_time_s", "epoch_time_s", "images_per_s")  # wall-clock figures: the only ones that may differ


def write_grid(tmp_path: Path, digits: Path, name: str, *, per_worker: int, epochs: int = 1,
               lrs: str = "[0.01, 0.2]") -> Path:
    grid = tmp_path / f"{name}.toml"
    resources = f"jobs_per_worker = {per_worker}" if per_worker > 1 else ""
    grid.write_text(GRID.format(name=name, root=digits, epochs=epochs, resources=resources, lrs=lrs))
    return grid


def launcher(grid: Path, home: Path, *, armed: Path | None = None, wait: bool = True) -> subprocess.Popen:
    env = {**os.environ, "DLTH_HOME": str(home), "DLTH_HEARTBEAT_S": "1", "COLUMNS": "300"}
    if armed is not None:
        env[FAIL_ONCE] = str(armed)
    proc = subprocess.Popen([sys.executable, "-m", "orchestrator.cli", "launch", str(grid), "--no-progress",
                             "--db", f"sqlite:///{home / 'db.sqlite'}"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    if wait:
        out, _ = proc.communicate(timeout=900)
        assert proc.returncode == 0, out
    return proc


def final_metrics(store: Store, grid: str) -> dict[str, dict[str, float]]:
    out = {}
    for job in store.jobs(grid):
        values = json.loads((Path(job.job_dir) / FINAL_METRICS_FILE).read_text())["metrics"]
        out[job.job_hash] = {k: v for k, v in values.items() if k not in TIMES}
    return out


def wait_for(what: str, cond: Callable[[], object], timeout: float = 300) -> object:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if value := cond():
            return value
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture(scope="module")
def lone(tmp_path_factory: pytest.TempPathFactory, digits: Path) -> dict[str, dict[str, float]]:
    """The grid's final metrics with one process per job (today's behaviour)."""
    tmp = tmp_path_factory.mktemp("lone")
    launcher(write_grid(tmp, digits, "jpw", per_worker=1), tmp / "home")
    with Store(f"sqlite:///{tmp / 'home' / 'db.sqlite'}") as store:
        return final_metrics(store, "jpw")


def test_a_batch_runs_its_jobs_in_one_process_each_on_its_own_with_the_same_numbers(
        tmp_path: Path, digits: Path, lone: dict[str, dict[str, float]]) -> None:
    grid = write_grid(tmp_path, digits, "jpw", per_worker=2)
    hashes = [j.spec.job_hash for j in expand(load_grid(grid), DatasetMeta.load(digits))]
    assert sorted(hashes) == sorted(lone), "jobs_per_worker stays out of the job identity"
    armed = tmp_path / "armed"
    armed.mkdir()
    failing = hashes[0]  # the first job of the batch fails its first attempt: the second runs after it
    (armed / f"{failing}.fail").touch()
    home = tmp_path / "home"
    launcher(grid, home, armed=armed)

    with Store(f"sqlite:///{home / 'db.sqlite'}") as store:
        assert {j.state for j in store.jobs("jpw")} == {JobState.COMPLETED}
        attempts = {h: store.attempts(h) for h in hashes}
        firsts = [attempts[h][0] for h in hashes]
        assert len({a.pid for a in firsts}) == 1, "the first attempts ran in one worker process"
        assert [a.state for a in attempts[failing]] == [AttemptState.FAILED, AttemptState.COMPLETED]
        assert "fails on purpose" in (attempts[failing][0].exit_reason or "")
        assert attempts[failing][1].pid != firsts[0].pid  # retried in a process of its own
        others = [h for h in hashes if h != failing]
        assert all([a.state for a in attempts[h]] == [AttemptState.COMPLETED] for h in others)
        starts = sorted(firsts, key=lambda a: a.started_at)
        assert all(b.started_at >= a.ended_at for a, b in zip(starts, starts[1:], strict=False))  # one by one
        logs = [Path(a.log_path or "") for h in hashes for a in attempts[h]]
        assert len(set(logs)) == len(logs)  # each attempt its own log, in its own job directory
        for h in hashes:
            for a in attempts[h]:
                text = Path(a.log_path or "").read_text()
                assert f"job {h}" in text and not any(f"job {o}" in text for o in hashes if o != h)
        # the same numbers bit for bit as one process per job (one of them after a failure in its batch)
        assert final_metrics(store, "jpw") == lone


def test_cancel_of_a_batched_job_stops_it_alone_and_the_next_one_runs(tmp_path: Path, digits: Path) -> None:
    grid = write_grid(tmp_path, digits, "jpwc", per_worker=2, epochs=6, lrs="[0.01, 0.2]")
    home = tmp_path / "home"
    proc = launcher(grid, home, wait=False)
    db = f"sqlite:///{home / 'db.sqlite'}"
    store = wait_for("the database", lambda: (home / "db.sqlite").exists() and Store(db))
    assert isinstance(store, Store)
    with store:
        first = wait_for("a running job", lambda: [j for j in store.jobs("jpwc") if j.state == JobState.RUNNING])
        victim = first[0]  # type: ignore[index]
        wait_for("its first epoch", lambda: (Path(victim.job_dir) / "metrics.jsonl").exists())
        env = {**os.environ, "DLTH_HOME": str(home)}
        done = subprocess.run([sys.executable, "-m", "orchestrator.cli", "cancel", "jpwc", "--job", victim.job_hash,
                               "--yes", "--db", db], capture_output=True, text=True, env=env, timeout=120)
        assert done.returncode == 0, done.stdout + done.stderr
        out, _ = proc.communicate(timeout=900)
        assert proc.returncode == 0, out
        jobs = {j.job_hash: j for j in store.jobs("jpwc")}
        assert jobs[victim.job_hash].state == JobState.CANCELLED
        other = next(h for h in jobs if h != victim.job_hash)
        assert jobs[other].state == JobState.COMPLETED
        (cancelled,), (completed,) = store.attempts(victim.job_hash), store.attempts(other)
        assert cancelled.state == AttemptState.CANCELLED and completed.pid == cancelled.pid  # the same worker
        assert completed.started_at >= cancelled.ended_at
        epochs = [json.loads(line)["epoch"] for line in
                  (Path(victim.job_dir) / "metrics.jsonl").read_text().splitlines()]
        assert len(epochs) < 6  # stopped early, not trained to the end
