"""``retry`` and ``cancel`` with ``--subset``/``--config``, ``status --all`` and ``report --metric`` from the
command line, on grids recorded by the launcher's own ``record_grid`` (metadata-only dataset, no training:
attempts and final metrics go through the store API as a worker's reporter would send them)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from db import AttemptState, JobState, Store
from orchestrator.cli import cli
from orchestrator.grid import load_grid
from orchestrator.launch import record_grid
from subsets import DatasetMeta

GRID = """
name = "{name}"
seeds = [{seed}]
[dataset]
root = "{root}"
[train]
backbone = "test_resnet"
epochs = 1
image_size = 32
[subsets.full]
strategy = "full"
[subsets.even3]
strategy = "uniform"
k = 3
[methods.supervised]
lr = [0.01, 0.2]
[methods.simclr]
"""


def record(tmp_path: Path, meta_dir: Path, db: str, name: str, seed: int = 0) -> list[str]:
    """Record grid ``name`` (2 subsets x 3 configurations, one seed); its job hashes."""
    path = tmp_path / f"{name}.toml"
    path.write_text(GRID.format(name=name, root=meta_dir, seed=seed))
    with Store(db) as store:
        return [j.spec.job_hash for j in record_grid(store, load_grid(path), DatasetMeta.load(meta_dir)).jobs]


def invoke(*args: str) -> str:
    result = CliRunner().invoke(cli, list(args))
    assert result.exit_code == 0, result.output
    return result.output


def states(store: Store, grid: str) -> dict[tuple[str, str], str]:
    return {(j.subset_name, j.config_name): j.state for j in store.jobs(grid)}


@pytest.fixture
def db(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'db.sqlite'}"


def test_retry_and_cancel_act_on_the_subset_and_config_asked_for(tmp_path: Path, meta_dir: Path, db: str) -> None:
    record(tmp_path, meta_dir, db, "g")
    store = Store(db)
    for j in store.jobs("g"):
        attempt = store.claim(j.job_hash, backend="local", backend_id=None, host="h", pid=1)
        store.finish_attempt(attempt, AttemptState.FAILED, exit_code=1, reason="boom")
    assert "3 jobs reset to PENDING" in invoke("retry", "g", "--subset", "even3", "--db", db)
    assert "1 jobs reset to PENDING" in invoke("retry", "g", "--config", "simclr", "--subset", "full", "--db", db)
    failed, pending = JobState.FAILED, JobState.PENDING
    assert states(store, "g") == {
        ("full", "supervised[lr=0.01]"): failed, ("full", "supervised[lr=0.2]"): failed, ("full", "simclr"): pending,
        ("even3", "supervised[lr=0.01]"): pending, ("even3", "supervised[lr=0.2]"): pending,
        ("even3", "simclr"): pending}

    out = invoke("cancel", "g", "--subset", "even3", "--config", "lr=0.2", "--yes", "--db", db)
    assert "1 jobs cancelled" in out
    assert states(store, "g")[("even3", "supervised[lr=0.2]")] == JobState.CANCELLED
    assert sum(s == JobState.CANCELLED for s in states(store, "g").values()) == 1
    # a retry without --cancelled leaves it alone; with it, only it comes back
    assert "0 jobs reset" in invoke("retry", "g", "--subset", "even3", "--db", db)
    assert "1 jobs reset" in invoke("retry", "g", "--subset", "even3", "--cancelled", "--db", db)
    assert states(store, "g")[("even3", "supervised[lr=0.2]")] == JobState.PENDING
    store.close()


def test_status_all_lists_every_grid(tmp_path: Path, meta_dir: Path, db: str) -> None:
    record(tmp_path, meta_dir, db, "first")
    record(tmp_path, meta_dir, db, "second", seed=1)  # other jobs (a job of the same spec is shared)
    with Store(db) as store:
        (job,) = [j for j in store.jobs("second") if j.subset_name == "even3" and j.config_name == "simclr"]
        attempt = store.claim(job.job_hash, backend="local", backend_id=None, host="h", pid=1)
        store.complete(job.job_hash, attempt, {"knn_top1": 0.5})
    both = json.loads(invoke("status", "--all", "--json", "--db", db))
    assert [s["grid"] for s in both] == ["first", "second"]
    assert [s["total"] for s in both] == [6, 6]
    assert [s["counts"].get("COMPLETED", 0) for s in both] == [0, 1]
    text = invoke("status", "--all", "--db", db)
    assert "first" in text and "second" in text
    result = CliRunner().invoke(cli, ["status", "--json", "--db", db])  # two grids: which one is meant?
    assert result.exit_code == 2


def test_report_ranks_by_the_metric_asked_for(tmp_path: Path, meta_dir: Path, db: str) -> None:
    record(tmp_path, meta_dir, db, "g")
    # the configurations rank one way by knn_top1 and the other way by val_top1
    knn = {"supervised[lr=0.01]": 0.3, "supervised[lr=0.2]": 0.5, "simclr": 0.7}
    with Store(db) as store:
        for j in store.jobs("g"):
            attempt = store.claim(j.job_hash, backend="local", backend_id=None, host="h", pid=1)
            store.complete(j.job_hash, attempt, {"knn_top1": knn[j.config_name], "val_top1": 1 - knn[j.config_name]})
    by_val = json.loads(invoke("report", "g", "--json", "--metric", "val_top1", "--out", str(tmp_path / "r2"),
                               "--db", db))
    assert by_val["metric"] == "val_top1"  # the grid's [report].metric would be knn_top1

    def means(rep: dict) -> dict[str, float]:
        (even3,) = [s for s in rep["subsets"] if s["subset"] == "even3"]
        return {c["config"]: c["mean"] for c in even3["configs"]}

    assert means(by_val) == pytest.approx({c: 1 - v for c, v in knn.items()})
    bad = CliRunner().invoke(cli, ["report", "g", "--metric", "nope", "--out", str(tmp_path / "r3"), "--db", db])
    assert bad.exit_code == 2 and "nope" in bad.output
