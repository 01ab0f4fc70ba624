"""An adaptive study on the real single-node SLURM cluster (tiny: 1 epoch, 30 Fashion-MNIST images per class):
``launch --wait`` takes the looks between the rounds SLURM ran, submits the seeds they add, and ``advance``
afterwards changes nothing. Mocked: nothing."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.adaptive.controller import recorded_looks

from .test_adaptive_local import GRID
from .test_slurm_backend import Fresh, cli, home, opened, slurm_cluster  # noqa: F401  (fixtures)

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

SLURM = """
[cluster]
profile = "slurm-local"
poll_min_s = 0.5
poll_max_s = 3.0
"""


def test_adaptive_grid_on_slurm(tmp_path: Path, home: Path) -> None:  # noqa: F811
    grid = tmp_path / "grid.toml"
    grid.write_text(GRID.format(root=tmp_path / "fm").replace("[subsets.full]", SLURM + "[subsets.full]"))
    db = f"sqlite:///{tmp_path / 'db.sqlite'}"
    out = cli("launch", str(grid), "--cluster", "slurm", "--wait", "--no-progress", db=db, timeout=900)
    assert "adaptive: look 1" in out.stderr, out.stderr
    with opened(db) as store:
        looks = recorded_looks(store, "adapt")
        jobs = store.jobs("adapt")
    assert looks and looks[-1].stop is not None
    assert len(looks[0].add) == 6 and len(jobs) == 12 and {j.state for j in jobs} == {"COMPLETED"}
    assert {j.backend for j in jobs} == {"slurm"}
    again = cli("advance", "adapt", db=db)
    assert "stopped at look" in again.stdout and len(Fresh(db).jobs("adapt")) == len(jobs)
