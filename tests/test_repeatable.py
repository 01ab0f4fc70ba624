"""Runs repeat exactly: the same one-job grid launched in two fresh workspaces on the CPU, once with 1 and
once with 2 loader threads, gives bit-identical metrics (every one but wall-clock times), for a supervised
and an SSL method, through the real ``launch`` path (real training on the digits).

Why it holds: every augmentation draw is keyed by (job seed, epoch, view, sample index)
(``workers.data.draws``), the sample order by (seed, epoch), and everything else random draws from
torch's seeded generator in the worker's main thread (``workers.train.seed_everything``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from db import JobState, Store
from specs.base import from_table
from specs.job import TrainConfig
from specs.protocol import PROTOCOL_METRIC, TRAINING_PROTOCOL

from .test_e2e_local import cli

GRID = """
name = "repeat"
seeds = [3]
[dataset]
root = "{root}"
[train]
backbone = "test_resnet"
epochs = 1
batch_size = 64
lr = 0.05
image_size = 16
[eval]
knn_k = 10
[resources]
cpus_per_task = 1
loader_workers = {workers}
[report]
reference = "three"
[subsets.three]
strategy = "uniform"
k = 3
[methods.supervised]
[methods.simclr]
temperature = 0.2
"""
WALL_CLOCK = {"train_time_s", "epoch_time_s", "images_per_s"}  # how long, not what: may differ


def _launch(home: Path, digits: Path, workers: int) -> dict[str, tuple[dict[str, float], list[dict]]]:
    """Launch the grid in the fresh workspace ``home``; job hash -> (final metrics, epoch metrics)."""
    home.mkdir()
    grid = home / "grid.toml"
    grid.write_text(GRID.format(root=digits, workers=workers))
    db = f"sqlite:///{home / 'db.sqlite'}"
    cli("launch", str(grid), "--cluster", "local", "--no-progress", db=db, home=home)
    store = Store(db)
    jobs = store.jobs("repeat")
    assert [j.state for j in jobs] == [JobState.COMPLETED] * 2
    out = {}
    for j in jobs:
        doc = json.loads((Path(j.job_dir) / "final_metrics.json").read_text())
        final = {k: v for k, v in doc["metrics"].items() if k not in WALL_CLOCK}
        epochs = [{k: v for k, v in e.items() if k not in WALL_CLOCK} for e in doc["epoch_metrics"].values()]
        out[j.method] = (j.job_hash, final, epochs)
    return out


@pytest.mark.slow
def test_a_job_repeats_bit_identically_whatever_the_loader_thread_count(tmp_path: Path, digits: Path) -> None:
    one = _launch(tmp_path / "one_thread", digits, workers=1)
    two = _launch(tmp_path / "two_threads", digits, workers=2)
    assert sorted(one) == ["simclr", "supervised"]
    for method in one:
        (hash1, final1, epochs1), (hash2, final2, epochs2) = one[method], two[method]
        assert hash1 == hash2  # loader_workers is not part of a job's identity
        assert final1 == final2, method  # exact float equality, every metric
        assert epochs1 == epochs2 and epochs1[0]["train_loss"] > 0
        assert 0.0 < final1["knn_top1"] <= 1.0
        assert final1[PROTOCOL_METRIC] == TRAINING_PROTOCOL


def test_deterministic_kernels_are_switched_on_and_stay_out_of_the_identity(monkeypatch: pytest.MonkeyPatch) -> None:
    """``[train] deterministic = true``: PyTorch's deterministic mode (the GPU part cannot run here: only the
    switches are checked); a job's identity does not change with it."""
    import torch

    from workers.train import seed_everything

    on = from_table(TrainConfig, {"deterministic": True, "lr": 0.2}, "train")
    assert on.deterministic and on.canonical == from_table(TrainConfig, {"lr": 0.2}, "train").canonical == {"lr": 0.2}
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)  # restored after the test
    try:
        seed_everything(0, 0, deterministic=True)
        assert torch.are_deterministic_algorithms_enabled() and torch.is_deterministic_algorithms_warn_only_enabled()
        assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark
        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
    finally:
        torch.use_deterministic_algorithms(False)
        torch.backends.cudnn.deterministic = False
