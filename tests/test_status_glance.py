"""``status`` at a glance, on a grid recorded by the launcher's own ``record_grid`` with attempts written
through the store API (their start times set back by an hour, so that time and cost are known numbers):
one header line, the reference subset first, a finished subset collapsed to one row, pending / elapsed /
ETA / cost columns, and ``status --json`` a list of grids whether one grid or ``--all``."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

from click.testing import CliRunner
from sqlalchemy import update

from db import Store
from db.models import Attempt, utcnow
from orchestrator.cli import cli
from tests.test_cli_jobs import record


def _grid_with_history(tmp_path: Path, meta_dir: Path) -> str:
    """Grid ``g`` (subsets full, even3 x 3 configurations): every even3 job and one full job completed
    after an hour-long attempt, one full job running for an hour, one full job pending."""
    db = f"sqlite:///{tmp_path / 'db.sqlite'}"
    record(tmp_path, meta_dir, db, "g")
    with Store(db) as store:
        jobs = store.jobs("g")
        full = [j for j in jobs if j.subset_name == "full"]
        finished = [j for j in jobs if j.subset_name == "even3"] + full[:1]
        attempts = {j.job_hash: store.claim(j.job_hash, backend="local", backend_id=None, host="h", pid=1)
                    for j in [*finished, full[1]]}
        for j in finished:
            store.complete(j.job_hash, attempts[j.job_hash], {"knn_top1": 0.5})
        hour_ago = utcnow() - timedelta(hours=1)
        with store.session() as s:
            s.execute(update(Attempt).values(started_at=hour_ago))
            s.execute(update(Attempt).where(Attempt.ended_at.is_not(None)).values(ended_at=hour_ago
                                                                                   + timedelta(hours=1)))
    return db


def _invoke(*args: str) -> str:
    result = CliRunner().invoke(cli, list(args), terminal_width=200)
    assert result.exit_code == 0, result.output
    return result.output


def test_status_text_at_a_glance(tmp_path: Path, meta_dir: Path) -> None:
    db = _grid_with_history(tmp_path, meta_dir)
    lines = _invoke("status", "g", "--db", db).splitlines()
    header = lines[0]
    assert header.startswith("g: 4/6 completed, 1 running, 1 pending · elapsed 1h 00m · ETA ")
    assert header.endswith("cost 5 CPU-h")  # 4 completed + 1 running attempt of an hour, 1 CPU core each
    assert "completed 4" not in header
    rows = [ln for ln in lines[1:] if ln.startswith(("full", "even3"))]
    assert [r.split()[0] for r in rows] == ["full", "full", "full", "even3"]  # the reference first
    assert rows[0].startswith("full (reference)")
    cells = [[c.strip() for c in r.split("│")] for r in rows]
    assert cells[-1][:3] == ["even3", "all 3 configs", "3/3"] and cells[-1][-1] == "3 CPU-h"
    pending = next(c for c in cells if c[4] == "" and c[3] == "1")  # subset config done pending running ...
    assert pending[2] == "0/1" and pending[6:] == ["-", "-", "-"]  # not started: no time, no ETA, no cost


def test_status_json_is_a_list_of_grids_for_one_grid_too(tmp_path: Path, meta_dir: Path) -> None:
    db = _grid_with_history(tmp_path, meta_dir)
    one = json.loads(_invoke("status", "g", "--json", "--db", db))
    every = json.loads(_invoke("status", "--all", "--json", "--db", db))
    assert isinstance(one, list) and [d["grid"] for d in one] == [d["grid"] for d in every] == ["g"]
    (doc,) = one
    assert doc.keys() == every[0].keys()
    assert doc["pending"] == 1 and doc["reference"] == "full" and doc["cost_unit"] == "CPU-hours"
    assert abs(doc["cost_hours"] - 5) < 0.01 and abs(doc["elapsed_s"] - 3600) < 60
    assert doc["eta_s"] is not None and doc["eta_s"] > 0
    assert [g["subset"] for g in doc["groups"]][:3] == ["full"] * 3


def test_a_grid_file_that_does_not_exist_is_named(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["status", "examples/quickstrt.toml", "--db", f"sqlite:///{tmp_path}/x.db"])
    assert result.exit_code == 2
    assert "grid file examples/quickstrt.toml: no such file" in result.output
    assert not (tmp_path / "x.db").exists()
