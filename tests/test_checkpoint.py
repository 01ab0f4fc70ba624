"""Durable epoch checkpoints: flushed to disk (file and directory) before they replace the previous one,
which is kept; a torn checkpoint is set aside with one warning and the job resumes from the previous
one without spending its failure budget (really trained, stopped, torn and relaunched); every rank
restores its own RNG states (two real gloo ranks)."""

from __future__ import annotations

import json
import logging
import os
import random
import signal
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from specs.contract import CHECKPOINT_FILE, PREVIOUS_CHECKPOINT_FILE, JobPaths, previous_of
from workers.checkpoint import load_checkpoint, save_checkpoint, save_rank_rng


def _draws() -> list[float]:
    """One number from each RNG a job draws from."""
    return [float(torch.rand(1)), float(np.random.rand()), random.random()]


def _save(job_dir: Path, epoch: int) -> None:
    save_checkpoint(job_dir, {"epoch": epoch, "model": {"w": torch.full((2,), float(epoch))}})


def test_a_checkpoint_is_flushed_before_it_replaces_the_previous_which_is_kept(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    flushed: list[str] = []
    real_fsync = os.fsync

    def spy(fd: int) -> None:  # records what is flushed, then flushes it
        flushed.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", spy)
    ckpt = JobPaths.of(tmp_path).checkpoint
    _save(tmp_path, 1)
    assert len(flushed) == 2 and ".tmp" in Path(flushed[0]).name and flushed[1] == str(tmp_path)
    _save(tmp_path, 2)
    assert torch.load(ckpt, weights_only=True)["epoch"] == 2
    assert torch.load(previous_of(ckpt), weights_only=True)["epoch"] == 1  # the one before stays
    assert {p.name for p in tmp_path.iterdir()} == {CHECKPOINT_FILE, PREVIOUS_CHECKPOINT_FILE}
    assert previous_of(ckpt).name == PREVIOUS_CHECKPOINT_FILE


def test_rng_states_are_stored_as_tensors_and_restored(tmp_path: Path) -> None:
    torch.manual_seed(1), np.random.seed(2), random.seed(3)
    np.random.randn()  # NumPy's cached Gaussian is part of its state
    _save(tmp_path, 1)
    expected = _draws()
    torch.load(JobPaths.of(tmp_path).checkpoint, weights_only=True)  # plain weights-only load
    load_checkpoint(tmp_path)
    assert _draws() == expected


def test_a_checkpoint_of_an_older_version_with_numpy_rng_state_still_resumes(tmp_path: Path) -> None:
    np.random.seed(5)
    legacy = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    torch.save({"epoch": 3, "model": {}, "rng": legacy}, JobPaths.of(tmp_path).checkpoint)
    expected = _draws()
    state = load_checkpoint(tmp_path)
    assert state is not None and state["epoch"] == 3 and _draws() == expected


def test_a_torn_checkpoint_is_set_aside_and_the_previous_one_used(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    ckpt = JobPaths.of(tmp_path).checkpoint
    _save(tmp_path, 1)
    _save(tmp_path, 2)
    ckpt.write_bytes(ckpt.read_bytes()[:ckpt.stat().st_size // 2])
    with caplog.at_level(logging.WARNING, logger="workers.checkpoint"):
        state = load_checkpoint(tmp_path)
    assert state is not None and state["epoch"] == 1
    (warning,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warning.startswith(f"{ckpt}: unreadable") and "set aside as checkpoint.pt.torn-" in warning
    assert "\n" not in warning
    (aside,) = tmp_path.glob("checkpoint.pt.torn-*")
    assert not ckpt.exists() and aside.stat().st_size > 0  # kept for a post-mortem
    previous_of(ckpt).write_bytes(b"")  # the previous one torn too: start from scratch
    assert load_checkpoint(tmp_path) is None
    assert len(list(tmp_path.glob("checkpoint.prev.pt.torn-*"))) == 1


def _rank_main(rank: int, world: int, init_file: str, job_dir: str, out_dir: str) -> None:
    """What the trainer does at an epoch's end and on resume, on each rank of a real gloo group."""
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        torch.manual_seed(100 + rank), np.random.seed(200 + rank), random.seed(300 + rank)
        path = Path(job_dir)
        for epoch in (1, 2):
            _draws()  # an epoch's augmentations
            save_rank_rng(path, rank, epoch)
            dist.barrier()
            if rank == 0:
                _save(path, epoch)
            dist.barrier()
        expected = _draws()  # what epoch 3 would have drawn
        _draws()  # the run goes on, then is stopped; a new process seeds as the trainer does ...
        torch.manual_seed(100), np.random.seed(200 + rank), random.seed(300 + rank)
        state = load_checkpoint(path, rank)  # ... and resumes
        Path(out_dir, f"rank{rank}.json").write_text(json.dumps(
            {"epoch": state["epoch"] if state else None, "expected": expected, "resumed": _draws()}))
    finally:
        dist.destroy_process_group()


@pytest.mark.slow  # trains, or compiles FFCV pipelines
def test_each_rank_resumes_with_its_own_rng_states(tmp_path: Path) -> None:
    job_dir = tmp_path / "job"
    job_dir.mkdir()
    mp.spawn(_rank_main, args=(2, str(tmp_path / "init"), str(job_dir), str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2))
    assert r0["epoch"] == r1["epoch"] == 2
    assert r0["expected"] != r1["expected"]  # the ranks draw different numbers
    assert r0["resumed"] == r0["expected"]
    assert r1["resumed"] == r1["expected"]  # rank 1 continues its own sequence, not rank 0's
    assert torch.load(JobPaths.of(job_dir).rank_rng(1), weights_only=True)["epoch"] == 2


GRID = """
name = "torn"
seeds = [0]
failure_budget = 0
[dataset]
root = "{root}"
[train]
backbone = "test_resnet"
epochs = 3
batch_size = 64
image_size = 32
[resources]
cpus_per_task = 1
loader_workers = 1
[subsets.full]
strategy = "full"
[methods.supervised]
lr = 0.1
"""


@pytest.mark.slow
def test_a_torn_checkpoint_resumes_from_the_previous_without_spending_the_failure_budget(
        tmp_path: Path, digits: Path) -> None:
    from db import AttemptState, JobState, Store

    from .test_e2e_local import _epochs_logged, _wait_for, cli

    grid = tmp_path / "grid.toml"
    grid.write_text(GRID.format(root=digits))
    db = f"sqlite:///{tmp_path / 'db.sqlite'}"
    env = {**os.environ, "DLTH_HOME": str(tmp_path), "DLTH_HEARTBEAT_S": "1"}
    launcher = subprocess.Popen([sys.executable, "-m", "orchestrator.cli", "launch", str(grid), "--no-progress",
                                 "--db", db], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    store = Store(db)
    job = _wait_for(lambda: (store.jobs("torn") or [None])[0], 120, "the job to be recorded")
    paths = JobPaths.of(job.job_dir)
    _wait_for(lambda: len(_epochs_logged(paths.root)) >= 2, 240, "two epochs")
    (settings,) = (tmp_path / "settings").iterdir()  # the grid's one settings file, private
    assert stat.S_IMODE(settings.stat().st_mode) == 0o600 and not paths.worker_settings.exists()
    os.kill(store.open_attempts("torn")[0].pid, signal.SIGTERM)  # stopped (a preemption), not failed
    out, _ = launcher.communicate(timeout=300)
    assert [a.state for a in store.attempts(job.job_hash)] == [AttemptState.PREEMPTED], out
    assert not settings.exists()  # removed with the launcher's last worker
    previous = torch.load(previous_of(paths.checkpoint), weights_only=True)["epoch"]
    paths.checkpoint.write_bytes(paths.checkpoint.read_bytes()[:4096])  # torn

    cli("launch", str(grid), "--no-progress", db=db, home=tmp_path)
    final = store.job(job.job_hash)
    assert final is not None and (final.state, final.failure_count) == (JobState.COMPLETED, 0)
    attempts = store.attempts(job.job_hash)
    assert [a.state for a in attempts] == [AttemptState.PREEMPTED, AttemptState.COMPLETED]
    log = Path(attempts[1].log_path).read_text()
    warnings = [ln for ln in log.splitlines() if "set aside" in ln]
    assert len(warnings) == 1 and str(paths.checkpoint) in warnings[0], warnings
    assert f"resuming from {previous_of(paths.checkpoint)} (epoch {previous} done)" in log
    assert sorted(set(_epochs_logged(paths.root))) == [0, 1, 2]
    assert len(list(paths.root.glob("checkpoint.pt.torn-*"))) == 1
    assert not list((tmp_path / "settings").iterdir())
    store.close()
