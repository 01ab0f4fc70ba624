"""``launch --dry-run`` before and after a launch: a builtin dataset planned from its labels alone, other
missing data as stand-ins ("resolved at launch"), and the database read without writing (new / done /
to retry); the backbone check's cache in the workspace (a malformed entry is never trusted)."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import pytest
from click.testing import CliRunner

from db import JobState, Store
from orchestrator.backbone_cache import CACHE_FILE, BackboneCache, BackboneKey, timm_version
from orchestrator.cli import cli
from orchestrator.dry_run import planned_meta
from orchestrator.grid import expand, load_grid
from orchestrator.launch import record_grid
from orchestrator.preflight import check_backbones
from orchestrator.words import plural
from specs.base import SpecError
from subsets import DatasetMeta

QUICK = """
name = "quick"
seeds = [0, 1]
failure_budget = 1
[dataset]
root = "{root}"
{prepare}
[train]
backbone = "test_resnet"
image_size = 32
epochs = 1
[subsets.full]
strategy = "full"
[subsets.even5]
strategy = "uniform"
k = 5
[subsets.full_30pct]
strategy = "full"
fraction = 0.3
[methods.supervised]
lr = [0.01, 0.2]
[methods.simclr]
temperature = [0.1, 0.5]
"""


def _grid(tmp_path: Path, root: Path, prepare: str = "") -> Path:
    path = tmp_path / "grid.toml"
    path.write_text(QUICK.format(root=root, prepare=f'prepare = "{prepare}"' if prepare else ""))
    return path


def _seed_cache(home: Path) -> None:
    """The workspace's backbone cache knows test_resnet at 32 px (as after a first launch)."""
    BackboneCache.in_workspace(home).put(BackboneKey("test_resnet", 32, 0, timm_version()), 512)


def _dry(home: Path, *args: str) -> tuple[int, str]:
    res = CliRunner().invoke(cli, ["launch", *args, "--dry-run"], env={"DLTH_HOME": str(home)},
                             catch_exceptions=False)
    return res.exit_code, res.output


def test_a_builtin_dataset_is_planned_exactly_before_it_is_built(tmp_path: Path, digits: Path) -> None:
    home = tmp_path / "home"
    _seed_cache(home)
    missing = tmp_path / "data" / "digits"
    code, out = _dry(home, str(_grid(tmp_path, missing, "digits")), "--json")
    assert code == 0, out
    doc = json.loads(out)
    built = DatasetMeta.load(digits)  # the same dataset, built by the session fixture
    full = {s["name"]: s for s in doc["subsets"]}
    assert full["full"]["classes"] == 10 and full["full"]["train_samples"] == len(built.labels["train"])
    assert full["even5"]["classes"] == 5 and full["full_30pct"]["train_samples"] < len(built.labels["train"])
    assert doc["data"]["state"] == "builtin" and doc["jobs"] == 24 and doc["would_run"] == 24
    assert doc["by_status"] == {"new": 24, "done": 0, "to retry": 0}
    assert not missing.exists(), "nothing built"
    # the job identities are the ones a launch on the built dataset records
    on_built = _grid(tmp_path, digits)
    want = {ej.spec.label(): ej.spec.job_hash for ej in expand(load_grid(on_built), built)}
    code, out = _dry(home, str(on_built), "--json")
    assert code == 0 and sorted(j for g in json.loads(out)["groups"] for j in g["jobs"]) == sorted(want)
    assert planned_meta(load_grid(_grid(tmp_path, missing, "digits")))[0].fingerprint == built.fingerprint


def test_a_builtin_that_cannot_be_read_yet_shows_subsets_resolved_at_launch(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import workers.data.fashion_mnist as fashion

    # Debian's dataset-fashion-mnist is installed here; a machine without it is simulated by a wrong path
    monkeypatch.setattr(fashion, "SOURCE_DIR", tmp_path / "not-installed")
    home = tmp_path / "home"
    _seed_cache(home)
    path = _grid(tmp_path, tmp_path / "fashion", "fashion-mnist")
    code, out = _dry(home, str(path))
    assert code == 0, out
    assert "dry run: 24 jobs on local (profile local), 1 group; nothing written" in out
    assert "labels cannot be read yet" in out and "dataset-fashion-mnist" in out
    assert out.count("resolved at launch") >= 7  # the note, then the classes and samples of 3 subsets
    doc = json.loads(_dry(home, str(path), "--json")[1])
    assert [(s["name"], s["jobs"], s["classes"], s["train_samples"]) for s in doc["subsets"]] == [
        ("full", 8, None, None), ("even5", 8, None, None), ("full_30pct", 8, None, None)]
    assert doc["data"]["state"] == "missing" and doc["by_status"]["new"] == 24
    assert sorted(doc["groups"][0]["jobs"])[:2] == ["even5/simclr[temperature=0.1]/s0",
                                                    "even5/simclr[temperature=0.1]/s1"]
    assert not (tmp_path / "fashion").exists()
    assert sorted(p.relative_to(home).as_posix() for p in home.rglob("*")) == ["cache", "cache/backbones.json"]


def test_the_database_is_read_not_written(tmp_path: Path, meta_dir: Path) -> None:
    home = tmp_path / "home"
    _seed_cache(home)
    path = _grid(tmp_path, meta_dir)
    db = tmp_path / "db.sqlite"
    url = f"sqlite:///{db}"
    code, out = _dry(home, str(path), "--db", url)
    assert code == 0 and "a launch would run 24 jobs: 24 new, 0 done, 0 to retry" in out, out
    assert not db.exists(), "a dry run creates no database"
    store = Store(url)
    rec = record_grid(store, load_grid(path), DatasetMeta.load(meta_dir))
    hashes = [ej.spec.job_hash for ej in rec.jobs]
    for h in hashes[:20]:  # 20 done; 2 failed once (to retry); 1 failed twice (budget 1 spent); 1 pending
        store.complete(h, store.claim(h, backend="local", backend_id=None, host="h", pid=1), {"knn_top1": 0.5})
    for h, failures in ((hashes[20], 1), (hashes[21], 1), (hashes[22], 2)):
        for _ in range(failures):
            store.reset_jobs([h], [JobState.FAILED])  # a retry: FAILED -> PENDING (a no-op the first time)
            store.finish_attempt(store.claim(h, backend="local", backend_id=None, host="h", pid=1), JobState.FAILED)
    store.close()
    before = hashlib.sha256(db.read_bytes()).hexdigest()
    code, out = _dry(home, str(path), "--db", url, "--json")
    doc = json.loads(out)
    assert doc["by_status"] == {"new": 0, "done": 20, "to retry": 2, "failed (no retries left)": 1, "pending": 1}
    assert doc["would_run"] == 3 and doc["jobs"] == 24
    code, out = _dry(home, str(path), "--db", url)
    assert "a launch would run 3 jobs: 0 new, 20 done, 2 to retry, 1 failed (no retries left), 1 pending" in out
    assert hashlib.sha256(db.read_bytes()).hexdigest() == before


def test_a_finished_grid_would_run_nothing(tmp_path: Path, meta_dir: Path) -> None:
    home = tmp_path / "home"
    _seed_cache(home)
    path = _grid(tmp_path, meta_dir)
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    store = Store(url)
    for ej in record_grid(store, load_grid(path), DatasetMeta.load(meta_dir)).jobs:
        store.complete(ej.spec.job_hash, None, {"knn_top1": 0.5})
    store.close()
    code, out = _dry(home, str(path), "--db", url)
    assert code == 0 and "a launch would run 0 jobs: 0 new, 24 done, 0 to retry" in out, out


def test_plurals() -> None:
    assert [plural(n, "group") for n in (0, 1, 2)] == ["0 groups", "1 group", "2 groups"]


# --- the backbone check's cache ---------------------------------------------------------------------

def test_a_passed_check_is_remembered_and_a_malformed_entry_is_not_trusted(
        tmp_path: Path, meta_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    home = tmp_path / "home"
    bogus = _grid(tmp_path, meta_dir).read_text().replace('"test_resnet"', '"no_such_model"')
    grid = load_grid(_write(tmp_path / "bogus.toml", bogus))
    with pytest.raises(SpecError, match="train.backbone: expected a timm model name"):
        check_backbones(grid, BackboneCache.in_workspace(home))
    assert not (home / CACHE_FILE).exists(), "a refused backbone is not remembered"
    good = load_grid(_grid(tmp_path, meta_dir))
    check_backbones(good, BackboneCache.in_workspace(home))  # builds test_resnet once, then remembers it
    doc = json.loads((home / CACHE_FILE).read_text())
    key = BackboneKey("test_resnet", 32, 0, timm_version())
    width = doc["entries"][key.id].pop("num_features")
    assert doc == {"schema": 1, "entries": {key.id: {"backbone": "test_resnet", "image_size": 32, "patch_size": 0,
                                                     "timm": timm_version()}}}
    from specs.backbones import create_backbone

    assert width == create_backbone("test_resnet", 32).num_features
    # an entry is what the check trusts: a well-formed one for the bogus name lets it through unbuilt ...
    entry = {"backbone": "no_such_model", "image_size": 32, "patch_size": 0, "timm": timm_version(),
             "num_features": 8}
    name = BackboneKey("no_such_model", 32, 0, timm_version()).id
    (home / CACHE_FILE).write_text(json.dumps({"schema": 1, "entries": {name: entry}}))
    check_backbones(grid, BackboneCache.in_workspace(home))
    # ... and a malformed or edited one is ignored, so the check runs (and refuses it) again
    for bad in ({**entry, "num_features": "8"}, {**entry, "num_features": 0}, {**entry, "image_size": 64},
                {**entry, "extra": 1}, [entry]):
        (home / CACHE_FILE).write_text(json.dumps({"schema": 1, "entries": {name: bad}}))
        with caplog.at_level(logging.WARNING), pytest.raises(SpecError, match="expected a timm model name"):
            check_backbones(grid, BackboneCache.in_workspace(home))
        assert "ignored (malformed)" in caplog.text
    for text in ("{not json", json.dumps({"schema": 2, "entries": {name: entry}}), "[]"):
        (home / CACHE_FILE).write_text(text)
        with pytest.raises(SpecError, match="expected a timm model name"):
            check_backbones(grid, BackboneCache.in_workspace(home))
    check_backbones(good, BackboneCache.in_workspace(home))  # a damaged file is replaced by a good one
    assert list(json.loads((home / CACHE_FILE).read_text())["entries"]) == [key.id]


def test_another_timm_version_is_checked_again(tmp_path: Path) -> None:
    cache = BackboneCache.in_workspace(tmp_path)
    cache.put(BackboneKey("resnet18", 32, 0, "0.9.0"), 512)
    again = BackboneCache.in_workspace(tmp_path)
    assert again.get(BackboneKey("resnet18", 32, 0, "0.9.0")) == 512
    assert again.get(BackboneKey("resnet18", 32, 0, "1.0.0")) is None
    assert again.get(BackboneKey("resnet18", 64, 0, "0.9.0")) is None
    read_only = BackboneCache.in_workspace(tmp_path / "other", read_only=True)
    read_only.put(BackboneKey("resnet18", 32, 0, "0.9.0"), 512)
    assert not (tmp_path / "other").exists()


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


# --- a relaunch with nothing new --------------------------------------------------------------------

def test_a_relaunch_with_nothing_new_imports_no_training_stack_and_keeps_the_report(tmp_path: Path,
                                                                                    digits: Path) -> None:
    import os
    import subprocess
    import sys

    from .conftest import REPO

    home = tmp_path / "home"
    _seed_cache(home)
    path = _grid(tmp_path, digits)
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    store = Store(url)
    for i, ej in enumerate(record_grid(store, load_grid(path), DatasetMeta.load(digits)).jobs):
        store.complete(ej.spec.job_hash, None, {"knn_top1": 0.5 + 0.01 * (i % 7)})
    store.close()
    env = {**os.environ, "DLTH_HOME": str(home), "PYTHONPATH": str(REPO)}
    launch = [sys.executable, "-X", "importtime", "-m", "orchestrator.cli", "launch", str(path), "--db", url,
              "--no-progress"]
    first = subprocess.run(launch, env=env, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0 and "its report:" in first.stdout, first.stdout + first.stderr[-2000:]
    page = home / "reports" / "quick" / "report.html"
    written = page.stat().st_mtime_ns
    again = subprocess.run(launch, env=env, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "0 jobs to run" in again.stderr and "nothing new to run; its report is up to date" in again.stdout
    assert f"report: {page}" in again.stdout and page.stat().st_mtime_ns == written
    imported = {line.rsplit("|", 1)[-1].strip().split(".")[0] for line in again.stderr.splitlines()
                if line.startswith("import time:")}
    assert "sqlalchemy" in imported  # (the import log was read)
    assert not imported & {"torch", "timm", "ffcv", "numba", "matplotlib", "scipy", "sklearn"}
