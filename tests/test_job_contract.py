"""The job contract: every file of a job directory is named in specs/contract.py; the subset manifest is
saved at launch and read by the worker (which still refuses a changed dataset); one atomic-write helper;
no import circle in subsets/."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from db import Store
from orchestrator.grid import load_grid
from orchestrator.launch import record_grid
from specs import contract
from specs.atomic import atomic_path, write_bytes_atomic, write_json_atomic, write_text_atomic
from specs.contract import JobPaths
from specs.job import JobSpec
from subsets import DatasetMeta, Manifest, ManifestError, resolve
from workers.manifest import SubsetChanged, load_manifest

from .conftest import write_meta_dir

REPO = Path(__file__).resolve().parents[1]
NAMED_GRID = """
name = "contract"
seeds = [0]
[dataset]
root = "{root}"
[report]
reference = "listed"
[subsets.listed]
strategy = "named"
wnids_file = "{wnids}"
fraction = 0.5
[methods.supervised]
"""


# --- the atomic-write helper ---------------------------------------------------------------------------
def test_atomic_writes_replace_whole_files_and_leave_nothing_behind(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "f.json"
    write_json_atomic(target, {"b": 1, "a": [1, 2]}, sort_keys=True)
    assert json.loads(target.read_text()) == {"a": [1, 2], "b": 1}
    write_text_atomic(target, "text")
    assert target.read_text() == "text"
    write_bytes_atomic(target, b"\x00\x01", fsync=True)
    assert target.read_bytes() == b"\x00\x01"
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask  # ordinary permissions, not mkstemp's 0600
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:  # a writer that dies half-way ...
        tmp.write_bytes(b"half")
        raise RuntimeError("killed")
    assert target.read_bytes() == b"\x00\x01"  # ... leaves the old file whole
    array = target.with_name("a.npy")
    with atomic_path(array, fsync=True) as tmp:
        np.save(tmp, np.arange(3))  # np.save appends .npy to a name without it: the tmp name keeps the suffix
    assert np.load(array).tolist() == [0, 1, 2]
    assert sorted(p.name for p in target.parent.iterdir()) == ["a.npy", "f.json"]


# --- the manifest: saved at launch, read by the worker --------------------------------------------------
def test_manifest_json_round_trip_and_altered_files_are_refused(meta_dir: Path) -> None:
    meta = DatasetMeta.load(meta_dir)
    m = resolve("u", {"strategy": "uniform", "k": 3, "mode": "random", "seed": 2, "fraction": 0.5}, meta)
    back = Manifest.from_json(m.to_json())
    assert back.content_hash == m.content_hash
    assert back.classes == m.classes and (back.name, back.strategy, back.params) == (m.name, m.strategy, m.params)
    assert {s: v.tolist() for s, v in back.indices.items()} == {s: v.tolist() for s, v in m.indices.items()}
    doc = json.loads(m.to_json())
    doc["indices"]["train"] = doc["indices"]["train"][:-1]  # one sample less
    with pytest.raises(ManifestError, match="m.json: content_hash: expected"):
        Manifest.from_json(json.dumps(doc), "m.json")
    with pytest.raises(ManifestError, match="format_version"):
        Manifest.from_json("{}", "m.json")


def _record_named_grid(tmp_path: Path) -> tuple[JobSpec, Path, Path]:
    write_meta_dir(tmp_path / "ds")
    wnids = tmp_path / "wnids.txt"
    wnids.write_text("n01000001\nn01000003\nn01000004\n")
    grid = tmp_path / "grid.toml"
    grid.write_text(NAMED_GRID.format(root=tmp_path / "ds", wnids=wnids))
    store = Store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    rec = record_grid(store, load_grid(grid), DatasetMeta.load(tmp_path / "ds"))
    (row,) = store.jobs("contract")
    store.close()
    assert rec.new == 1
    return JobSpec.from_json((Path(row.job_dir) / contract.JOB_FILE).read_text()), Path(row.job_dir), wnids


def test_worker_reads_the_manifest_saved_at_launch_and_refuses_a_changed_dataset(tmp_path: Path) -> None:
    spec, job_dir, wnids = _record_named_grid(tmp_path)
    paths = JobPaths(job_dir)
    assert sorted(p.name for p in job_dir.iterdir()) == sorted(contract.RECORDED_FILES)
    saved = Manifest.from_json(paths.manifest.read_text())
    assert saved.content_hash == spec.manifest_hash and [c.wnid for c in saved.classes] == [
        "n01000001", "n01000003", "n01000004"]
    # the compute node has no class list: resolving the strategy there would fail, the saved manifest serves
    wnids.unlink()
    meta, manifest = load_manifest(spec, job_dir)
    assert manifest.content_hash == spec.manifest_hash and manifest.name == "listed"
    assert manifest.indices["train"].tolist() == saved.indices["train"].tolist()
    with pytest.raises(Exception, match="wnids_file"):  # what a worker re-running the strategy would hit
        load_manifest(spec, None)
    # the dataset changes under the job: refused, naming the dataset and its fingerprint
    write_meta_dir(tmp_path / "ds", train_per_class=11)
    with pytest.raises(SubsetChanged, match=r"ds: fingerprint: expected .* the dataset changed"):
        load_manifest(spec, job_dir)


def test_a_manifest_that_is_not_the_jobs_is_refused_and_old_job_dirs_resolve(tmp_path: Path) -> None:
    spec, job_dir, wnids = _record_named_grid(tmp_path)
    manifest_file = JobPaths(job_dir).manifest
    other = resolve("x", {"strategy": "uniform", "k": 2}, DatasetMeta.load(spec.dataset_root))
    manifest_file.unlink()  # a hard link: replace it, do not write through it into the shared file
    manifest_file.write_text(other.to_json())
    with pytest.raises(SubsetChanged, match=f"launched with {spec.manifest_hash}"):
        load_manifest(spec, job_dir)
    manifest_file.unlink()  # a job recorded by a version that saved no manifest: resolved as before
    assert load_manifest(spec, job_dir)[1].content_hash == spec.manifest_hash


# --- a real job writes only files the contract names ------------------------------------------------------
def assert_only_contract_files(job_dir: Path) -> None:
    """A finished job's directory holds only files named in specs/contract.py (and no temporary file).
    Called by tests/test_e2e_local.py on the jobs it really trains (no second training run here)."""
    named = {v for k, v in vars(contract).items() if k.isupper() and k.endswith(("_FILE", "_DIR"))}
    written = {p.name for p in job_dir.iterdir()}
    assert written <= named, f"{job_dir}: files the contract does not name: {sorted(written - named)}"
    assert {contract.JOB_FILE, contract.MANIFEST_FILE, contract.CHECKPOINT_FILE, contract.EPOCH_METRICS_FILE,
            contract.FINAL_METRICS_FILE} <= written, sorted(written)


def test_the_contract_check_flags_an_unnamed_file(tmp_path: Path) -> None:
    for name in (contract.JOB_FILE, contract.MANIFEST_FILE, contract.CHECKPOINT_FILE, contract.EPOCH_METRICS_FILE,
                 contract.FINAL_METRICS_FILE):
        (tmp_path / name).write_text("x")
    assert_only_contract_files(tmp_path)
    (tmp_path / ".checkpoint.1.2.3.tmp.pt").write_text("torn")
    with pytest.raises(AssertionError, match="does not name"):
        assert_only_contract_files(tmp_path)


# --- subsets/: no import circle ---------------------------------------------------------------------------
STRATEGY_MODULES = ["full", "named", "per_class_accuracy", "ticket", "uniform", "wordnet"]


def _imports(module: str) -> set[str]:
    tree = ast.parse((REPO / "subsets" / f"{module}.py").read_text())
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("subsets"):
            out |= {node.module} if node.module != "subsets" else {f"subsets.{a.name}" for a in node.names}
        elif isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("subsets")}
    return out


def test_subsets_have_no_import_circle() -> None:
    modules = [p.stem for p in (REPO / "subsets").glob("*.py") if p.stem != "__init__"]
    graph = {m: {i.removeprefix("subsets.") for i in _imports(m)} for m in modules}
    for strategy in STRATEGY_MODULES:  # strategies know the base, never the registry or the resolver
        assert not graph[strategy] & {"registry", "resolve", "show"}, (strategy, graph[strategy])
    state: dict[str, int] = {}

    def visit(m: str, path: list[str]) -> None:
        assert state.get(m) != 1, f"import circle: {' -> '.join([*path, m])}"
        if state.get(m) == 2:
            return
        state[m] = 1
        for dep in graph.get(m, ()):
            visit(dep, [*path, m])
        state[m] = 2

    for m in modules:
        visit(m, [])
    # and each strategy module imports first thing in a fresh interpreter
    for m in STRATEGY_MODULES:
        code = f"import subsets.{m}; from subsets.registry import STRATEGIES; print(sorted(STRATEGIES))"
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                             env={**os.environ, "PYTHONPATH": str(REPO)})
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip() == str(sorted(STRATEGY_MODULES)), out.stdout
