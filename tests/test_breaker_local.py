"""The breaker on the local backend, for real: jobs whose first attempts fail with the same error pause
the grid; the launcher starts nothing new and exits 3, and so does a relaunch. The failures come from the
product's test hook (workers/test_hooks.py, ``DLTH_TEST_FAIL_ONCE``) in real worker processes. The slots
come from a profile file given with ``launch --profile`` (one slot: the jobs run one after the other)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from db import AttemptState, Store
from orchestrator.grid import expand, load_grid
from subsets import DatasetMeta
from workers.test_hooks import ENV as FAIL_ONCE

from .grids import tiny_grid

pytestmark = pytest.mark.slow

METHODS = "[methods.supervised]\nlr = [0.01, 0.02, 0.05, 0.1, 0.2]\n"


def test_the_breaker_stops_new_starts_and_launch_exits_3(tmp_path: Path, digits: Path) -> None:
    grid = tmp_path / "grid.toml"
    grid.write_text(tiny_grid("brk", digits, failure_budget=3, tables="[breaker]\nthreshold = 2\n",
                              methods=METHODS))
    profile = tmp_path / "one_slot.toml"
    profile.write_text('backend = "local"\nmax_slots = 1\ngpus = []\n')
    armed = tmp_path / "armed"
    armed.mkdir()
    hashes = [j.spec.job_hash for j in expand(load_grid(grid), DatasetMeta.load(digits))]
    for h in hashes:  # every job's first attempt would fail the same way
        (armed / f"{h}.fail").touch()
    db = f"sqlite:///{tmp_path / 'db.sqlite'}"
    env = {**os.environ, "DLTH_HOME": str(tmp_path / "home"), FAIL_ONCE: str(armed), "COLUMNS": "300"}

    def launch() -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "orchestrator.cli", "launch", str(grid), "--profile",
                               str(profile), "--no-progress", "--db", db], capture_output=True, text=True, env=env,
                              timeout=900)

    first = launch()
    assert first.returncode == 3, first.stdout + first.stderr
    assert "dlth-orch resume brk" in first.stdout + first.stderr
    started = sorted(p.stem for p in armed.glob("*.failed"))
    assert len(started) == 2  # the threshold: nothing started after the second failure
    assert len(list(armed.glob("*.fail"))) == len(hashes) - 2
    store = Store(db)
    attempts = {h: store.attempts(h) for h in hashes}
    assert sorted(h for h, a in attempts.items() if a) == started
    one, two = (attempts[h][0] for h in started)
    assert {one.state, two.state} == {AttemptState.FAILED}
    assert all(len(attempts[h]) == 1 for h in started)  # within the failure budget, yet not retried
    first_done, second = sorted((one, two), key=lambda a: a.started_at)
    assert second.started_at >= first_done.ended_at  # one slot, from the --profile file

    again = launch()  # paused: a relaunch starts nothing either
    assert again.returncode == 3, again.stdout + again.stderr
    assert {h: len(store.attempts(h)) for h in hashes} == {h: len(attempts[h]) for h in hashes}
    assert len(list(armed.glob("*.fail"))) == len(hashes) - 2
    store.close()
