"""An sbatch that SLURM refuses (here: a partition the real single-node cluster does not have) is one line
and exit code 2, with nothing half-written: the jobs stay pending, no submission folder is left, and a launch
with a working profile then submits them."""

from __future__ import annotations

from pathlib import Path

import pytest

from db import JobState
from tests.test_slurm_backend import REPO, Fresh, cli, home, slurm_cluster, write_grid  # noqa: F401 (fixtures)

pytestmark = pytest.mark.slurm


def test_a_refused_sbatch_is_one_line_and_the_jobs_stay_pending_until_a_launch_that_works(
        tmp_path: Path, home: Path, digits: Path) -> None:  # noqa: F811 (fixture)
    db = f"sqlite:///{tmp_path / 'db.sqlite'}"
    grid = write_grid(tmp_path / "grid.toml", "refused", digits)
    profile = (REPO / "cluster_profiles" / "slurm-local.toml").read_text()
    assert 'partition = "debug"' in profile
    bad = tmp_path / "bad.toml"
    bad.write_text(profile.replace('partition = "debug"', 'partition = "nosuch"'))

    proc = cli("launch", str(grid), "--cluster", "slurm", "--profile", str(bad), db=db, check=False)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    error = [line for line in proc.stderr.splitlines() if "sbatch" in line]  # (stderr also has launch's progress)
    assert len(error) == 1 and error[0].startswith("error: sbatch refused 2 job(s) of grid 'refused': "), proc.stderr
    assert "invalid partition" in error[0].lower() and "launch again" in error[0], error[0]
    store = Fresh(db)
    assert {j.state for j in store.jobs("refused")} == {JobState.PENDING}
    assert not any(j.backend_id for j in store.jobs("refused"))
    assert not list((home / "slurm").glob("*/*/manifest.json")), "the refused array's folder is removed"

    cli("launch", str(grid), "--cluster", "slurm", db=db)  # the grid's own profile: submitted now
    jobs = store.jobs("refused")
    assert len(jobs) == 2 and all(j.backend_id for j in jobs), [(j.state, j.backend_id) for j in jobs]
    cli("cancel", "refused", "--yes", db=db)  # (nothing more to see: do not train them)
