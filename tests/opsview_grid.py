"""One tiny grid, really trained once per session on the digits, shared by the operations tests (logs,
TensorBoard, MLflow export, watch, efficiency): one subset x two configurations; the worker of the first
job is killed (SIGKILL) while it stands paused (``DLTH_TEST_PAUSE``, workers/test_hooks.py) right after
saving its third epoch's checkpoint, and resumes from it in a second attempt, while
``dlth-orch logs -f`` follows that job from before the kill to its end, and ``watch --once --json`` takes
a frame while it runs."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from db import Store
from workers.test_hooks import EPOCH_SAVED, PAUSE_ENV

GRID_NAME = "ops"
EPOCHS = 4
GRID = f"""
name = "{GRID_NAME}"
seeds = [0]
failure_budget = 2
[dataset]
root = "{{root}}"
[train]
backbone = "test_resnet"
epochs = {EPOCHS}
batch_size = 64
lr = 0.05
image_size = 32
[eval]
knn_k = 10
[resources]
cpus_per_task = 1
loader_workers = 1
[cluster]
max_slots = 1
[subsets.full]
strategy = "full"
[methods.supervised]
lr = [0.05, 0.1]
"""


@dataclass(frozen=True)
class TrainedGrid:
    """The trained grid: its database, workspace, the killed-and-resumed job and what ``logs -f`` printed."""

    db: str
    home: Path
    grid_file: Path
    killed: str
    follow_output: str
    follow_rc: int
    running_frame: str  # ``watch --once --json`` while the first job ran its third epoch


def cli(*args: str, db: str, home: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    """``dlth-orch ARGS --db DB`` in a subprocess with this workspace."""
    env = {**os.environ, "DLTH_HOME": str(home), "DLTH_HEARTBEAT_S": "1"}
    return subprocess.run([sys.executable, "-m", "orchestrator.cli", *args, "--db", db], capture_output=True,
                          text=True, env=env, timeout=timeout)


def wait_for(what: str, cond: Callable[[], Any], timeout: float = 240) -> Any:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if value := cond():
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


_TRAINED: TrainedGrid | None = None


def train(root: Path, digits: Path) -> TrainedGrid:
    """Launch the grid locally, kill the first job's worker after two epochs, let it resume, follow it."""
    home = root / "home"
    grid_file = root / "grid.toml"
    grid_file.write_text(GRID.format(root=digits))
    db = f"sqlite:///{root / 'db.sqlite'}"
    pauses = root / "pauses"
    pauses.mkdir()
    env = {**os.environ, "DLTH_HOME": str(home), "DLTH_HEARTBEAT_S": "1", PAUSE_ENV: str(pauses)}
    # one job at a time (max_slots = 1): the first job's two attempts run before the second job starts
    launcher = subprocess.Popen([sys.executable, "-m", "orchestrator.cli", "launch", str(grid_file),
                                 "--no-progress", "--db", db], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        def open_attempt() -> Any:
            with Store(db) as store:
                return (store.open_attempts(GRID_NAME) or [None])[0]

        first = wait_for("a running job", lambda: Path(root / "db.sqlite").exists() and open_attempt())
        store = Store(db)
        job_dir = Path(store.job(first.job_hash).job_dir)  # type: ignore[union-attr]
        store.close()
        follow = subprocess.Popen([sys.executable, "-m", "orchestrator.cli", "logs", first.job_hash[:10], "-f",
                                   "--interval", "0.2", "--db", db], env=env, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True)
        metrics = job_dir / "metrics.jsonl"
        marker = pauses / f"{first.job_hash}.{EPOCH_SAVED}"
        while True:  # stop the worker at each epoch's checkpoint until it stands right after the third one
            marker.touch()
            paused = wait_for("the worker paused at a checkpoint",
                              lambda: (p := marker.with_name(marker.name + ".paused")).exists() and p)
            if len(metrics.read_text().splitlines()) >= 3:
                break
            paused.unlink()
        assert len(metrics.read_text().splitlines()) == 3, "the worker passed its third epoch before the test"
        frame = cli("watch", GRID_NAME, "--once", "--json", db=db, home=home)
        assert frame.returncode == 0, frame.stderr
        os.kill(first.pid, signal.SIGKILL)  # the worker dies without a word; the launcher retries it
        out, _ = launcher.communicate(timeout=600)
        assert launcher.returncode == 0, out
        follow_out, _ = follow.communicate(timeout=60)
    finally:
        for proc in (launcher, locals().get("follow")):
            if isinstance(proc, subprocess.Popen) and proc.poll() is None:
                proc.kill()
    return TrainedGrid(db=db, home=home, grid_file=grid_file, killed=first.job_hash, follow_output=follow_out,
                       follow_rc=follow.returncode, running_frame=frame.stdout)


def trained(tmp_path_factory: pytest.TempPathFactory, digits: Path) -> TrainedGrid:
    """The shared trained grid (trained at most once per test process); each test module's fixture calls it."""
    global _TRAINED
    if _TRAINED is None:
        _TRAINED = train(tmp_path_factory.mktemp("opsgrid"), digits)
    return _TRAINED
