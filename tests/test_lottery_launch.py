"""Lottery chains through ``dlth-orch launch``: locally and on the real SLURM cluster, queued at once.

They rest on the job graph: the backends honour ``depends_on`` (locally a child starts when its parents
are COMPLETED; on SLURM it is queued at once with a dependency on its parent's task).
"""

from __future__ import annotations

import json
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


CHAIN = GRID.replace("epochs = 1", "epochs = 2").replace('rewind = "0it"', '''rewind = "1ep"
strategy = "layerwise"
start = "{start}"
not_prunable = ["backbone.conv1.*"]''')


def test_a_layerwise_chain_from_a_pretrained_start_keeps_not_prunable_layers_dense(tmp_path: Path,
                                                                                   digits: Path) -> None:
    """One small local chain for several settings at once: a pre-trained start (a weights file), rewinding
    to epoch 1, layerwise pruning and ``not_prunable``. Checked: what the masks are (rewinding's semantics
    are not asserted here)."""
    import torch

    from specs.backbones import create_backbone
    from specs.contract import JobPaths

    torch.manual_seed(7)
    start = tmp_path / "pretrained.pt"
    torch.save(create_backbone("test_resnet", 32).state_dict(), start)
    grid = tmp_path / "grid.toml"
    grid.write_text(CHAIN.format(name="lt-lw", root=digits, levels=1, start=start))
    db = f"sqlite:///{tmp_path / 'db.sqlite'}"
    cli("launch", str(grid), "--cluster", "local", "--no-progress", db=db, workspace=tmp_path)
    store = Store(db)
    jobs = _levels(store, "lt-lw")
    assert len(jobs) == 4 and {j.state for j in jobs.values()} == {JobState.COMPLETED}
    level1 = JobPaths.of(Path(jobs["lottery:sup10/L1"].job_dir))
    mask = torch.load(level1.mask, weights_only=True)
    assert mask and not [n for n in mask if n.startswith("backbone.conv1.")]  # not_prunable: never masked
    assert all(n.startswith("backbone.") for n in mask)
    for name, m in mask.items():  # layerwise: every layer keeps round(0.8 x its size), not just the total
        assert int(m.sum()) == round(0.8 * m.numel()), name
    report = json.loads(level1.sparsity.read_text())
    assert set(report["layers"]) == set(mask) and report["density"] == pytest.approx(0.8, abs=2e-3)
    trained = torch.load(level1.final_weights, weights_only=False)
    weights = trained["model"] if "model" in trained else {f"backbone.{k}": v for k, v in trained["backbone"].items()}
    for name, m in mask.items():  # the mask held through training
        assert not weights[name][~m.bool()].any(), name
    stem = [n for n in weights if n.startswith("backbone.conv1.") and n.endswith("weight")]
    assert stem and all(bool((weights[n] != 0).all()) for n in stem)  # the not_prunable stem stays dense
    assert store.final_metrics("lt-lw")[jobs["lottery:sup10/L1"].job_hash]["weights_remaining"] == pytest.approx(
        0.8, abs=2e-3)
