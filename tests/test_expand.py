"""Expansion and identity: counts, zip groups, stable hashes, idempotent relaunch, minimal re-expansion."""

from __future__ import annotations

from pathlib import Path

from db import Store
from orchestrator.grid import expand, load_grid
from orchestrator.launch import record_grid
from specs.job import EvalConfig, JobSpec, Resources, TrainConfig
from subsets import DatasetMeta

from .test_grid_validation import GOOD, write


def test_expansion_counts_and_zip(tmp_path: Path, meta_dir: Path) -> None:
    grid = load_grid(write(tmp_path, GOOD))
    jobs = expand(grid, DatasetMeta.load(meta_dir))
    # supervised: 2 lrs; simclr: 2 zipped (temperature, lr) pairs -> 4 configs x 2 subsets x 2 seeds
    assert len(jobs) == 16
    configs = sorted({j.config_name for j in jobs})
    assert configs == ["simclr[lr=0.3,temperature=0.1]", "simclr[lr=0.4,temperature=0.2]",
                       "supervised[lr=0.1]", "supervised[lr=0.2]"]
    assert len({j.spec.job_hash for j in jobs}) == 16
    # the configuration key is shared across subsets and seeds, and differs across configurations
    keys = {(j.config_name, j.spec.config_key) for j in jobs}
    assert len(keys) == 4 and len({k for _, k in keys}) == 4
    sim = [j.spec for j in jobs if j.spec.method == "simclr"]
    assert {(s.typed_hparams().temperature, s.train.lr) for s in sim} == {(0.1, 0.3), (0.2, 0.4)}


def _spec(**over) -> JobSpec:  # type: ignore[no-untyped-def]
    base = dict(grid="g", dataset_root="/data/a", dataset_fingerprint="f" * 16, subset_name="full",
                subset={"strategy": "full"}, manifest_hash="m" * 16, config_name="supervised",
                method="supervised", hparams={}, train=TrainConfig(), eval=EvalConfig(), seed=0)
    base.update(over)
    return JobSpec(**base)


def test_pinned_hashes_never_change_by_accident() -> None:
    """If this fails, job identities changed: every existing study would rerun. Do not just update it."""
    assert _spec().job_hash == PINNED["default"]
    assert _spec(seed=1).job_hash == PINNED["seed1"]
    assert _spec(method="simclr", hparams={"temperature": 0.5}).job_hash == PINNED["simclr"]
    assert _spec(train=TrainConfig(lr=0.2, epochs=90)).job_hash == PINNED["train"]
    assert _spec().config_key == PINNED["config_key"]


PINNED = {
    "default": "f2a5de34e24fafc8",
    "seed1": "9eb1d8082d547789",
    "simclr": "6306140a450c8a54",
    "train": "5728f34cd80807ec",
    "config_key": "3f08d514acfa",
}


def test_hash_ignores_what_cannot_change_results() -> None:
    h = _spec().job_hash
    assert _spec(grid="other", dataset_root="/elsewhere", subset_name="renamed", config_name="x").job_hash == h
    assert _spec(resources=Resources(nproc_per_node=8, cpus_per_task=10, loader_workers=12)).job_hash == h
    assert _spec(train=TrainConfig(lr=0.1)).job_hash == h  # explicit default == omitted
    assert _spec(manifest_hash="n" * 16).job_hash != h
    assert _spec(dataset_fingerprint="e" * 16).job_hash != h
    assert _spec(train=TrainConfig(lr=0.11)).job_hash != h


def test_spec_json_round_trip() -> None:
    s = _spec(method="simclr", hparams={"temperature": 0.5}, train=TrainConfig(lr=0.3),
              resources=Resources(nproc_per_node=2, slurm={"partition": "gpu"}))
    back = JobSpec.from_json(s.to_json())
    assert back == s and back.job_hash == s.job_hash


def test_relaunch_is_idempotent_and_edits_add_only_changed_jobs(tmp_path: Path, meta_dir: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    meta = DatasetMeta.load(meta_dir)
    path = write(tmp_path, GOOD)
    first = record_grid(store, load_grid(path), meta)
    assert (first.new, first.known) == (16, 0)
    again = record_grid(store, load_grid(path), meta)
    assert (again.new, again.known) == (0, 16)
    assert len(store.jobs("g")) == 16
    # one edited value: only the 4 jobs of that configuration are new (2 subsets x 2 seeds)
    write(tmp_path, GOOD.replace("lr = [0.1, 0.2]", "lr = [0.1, 0.25]"))
    edited = record_grid(store, load_grid(path), meta)
    assert (edited.new, edited.known) == (4, 12)
    # every job has its spec on disk for the worker
    for j in store.jobs("g"):
        spec = JobSpec.from_json((Path(j.job_dir) / "job.json").read_text())
        assert spec.job_hash == j.job_hash
