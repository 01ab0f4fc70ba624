"""The relaunch fast paths of ``record_grid`` (a 10,000-job relaunch in under 3 s): a job file is rewritten
only when it is gone or its text differs, the database links and inserts only what it does not hold, one
expansion serves a launch, and the control plane's light queries answer what the full job rows did."""

from __future__ import annotations

import os
from pathlib import Path

from db import JobState, Store
from db.testing import db_url  # noqa: F401  (fixture: a fresh database on each backend)
from orchestrator.grid import load_grid
from orchestrator.launch import expansion, record_grid
from subsets import DatasetMeta

from .test_grid_validation import GOOD, write

ONE_JOB = GOOD.replace("seeds = [0, 1]", "seeds = [0]").replace(
    '[subsets.half]\nstrategy = "uniform"\nk = 3\n', "").replace(
    "[methods.simclr]\ntemperature = [0.1, 0.2]\nlr = [0.3, 0.4]\nzip = [[\"temperature\", \"lr\"]]\n", "").replace(
    "lr = [0.1, 0.2]", "lr = 0.1")


def test_relaunch_rewrites_exactly_the_job_files_that_are_gone_or_differ(db_url: str, tmp_path: Path,  # noqa: F811
                                                                         meta_dir: Path) -> None:
    store = Store(db_url)
    meta = DatasetMeta.load(meta_dir)
    path = write(tmp_path, GOOD)
    rec = record_grid(store, load_grid(path), meta)
    files = {ej.spec.job_hash: Path(row.job_dir) / "job.json" for ej in rec.jobs
             for row in [store.job(ej.spec.job_hash)] if row is not None}
    texts = {h: f.read_bytes() for h, f in files.items()}
    gone, short, longer, edited, *kept = sorted(files)
    files[gone].unlink()
    files[short].write_bytes(texts[short][:-1])
    files[longer].write_bytes(texts[longer] + b" ")  # the same text and one byte more
    files[edited].write_bytes(texts[edited].replace(b'"grid": "g"', b'"grid": "x"'))  # as long, not the same
    inodes = {h: os.stat(files[h]).st_ino for h in kept}

    again = record_grid(store, load_grid(path), meta)
    assert (again.new, again.known) == (0, 16)
    assert {h: f.read_bytes() for h, f in files.items()} == texts  # every file holds its job's exact text
    assert {h: os.stat(files[h]).st_ino for h in kept} == inodes  # the others were read, never rewritten
    store.close()


def test_a_grid_that_grows_by_one_job_records_exactly_that_job(db_url: str, tmp_path: Path,  # noqa: F811
                                                               meta_dir: Path) -> None:
    store = Store(db_url)
    meta = DatasetMeta.load(meta_dir)
    path = write(tmp_path, ONE_JOB)
    (first,) = record_grid(store, load_grid(path), meta).jobs
    write(tmp_path, ONE_JOB.replace("seeds = [0]", "seeds = [0, 1]"))
    grown = record_grid(store, load_grid(path), meta)
    assert (grown.new, grown.known, len(grown.jobs)) == (1, 1, 2)
    rows = store.jobs("g")
    assert len(rows) == 2 and first.spec.job_hash in {r.job_hash for r in rows}
    assert {r.state for r in rows} == {JobState.PENDING}
    # another grid holding the same two jobs links them without inserting them again
    other = tmp_path / "other"
    other.mkdir()
    (other / "ds").symlink_to(meta_dir)
    twin = record_grid(store, load_grid(write(other, ONE_JOB.replace('name = "g"', 'name = "h"')
                                                   .replace("seeds = [0]", "seeds = [0, 1]"))), meta)
    assert (twin.new, twin.known) == (0, 2)
    assert {r.job_hash for r in store.jobs("h")} == {r.job_hash for r in rows}
    store.close()


def test_one_expansion_per_grid_and_dataset_objects(tmp_path: Path, meta_dir: Path) -> None:
    meta = DatasetMeta.load(meta_dir)
    grid = load_grid(write(tmp_path, GOOD))
    first = expansion(grid, meta)
    assert expansion(grid, meta) is first  # the launch's early check and its record share it
    reread = expansion(load_grid(write(tmp_path, GOOD)), meta)  # a grid file read again is expanded again
    assert reread is not first and [j.spec.job_hash for j in reread.jobs] == [j.spec.job_hash for j in first.jobs]


def test_light_queries_answer_what_the_job_rows_say(db_url: str, tmp_path: Path, meta_dir: Path) -> None:  # noqa: F811
    store = Store(db_url)
    meta = DatasetMeta.load(meta_dir)
    rec = record_grid(store, load_grid(write(tmp_path, GOOD)), meta)
    assert store.grid_backends("g") == set()
    hashes = [ej.spec.job_hash for ej in rec.jobs]
    store.mark_queued(hashes[:3], "local", [None] * 3)
    assert store.grid_backends("g") == {"local"} and store.grid_backends("nope") == set()
    states = store.job_states("g")
    assert states == {r.job_hash: (r.state, r.failure_count) for r in store.jobs("g")}
    assert sorted(s for s, _ in states.values()) == sorted([JobState.QUEUED] * 3 + [JobState.PENDING] * 13)
    store.close()
