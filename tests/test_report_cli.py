"""``dlth-orch report`` on a real SQLite store: the numbers the store holds reach the report unchanged."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from db import NewJob, Store
from orchestrator.cli import cli

# reference order lr=0.4 > 0.3 > 0.2 > 0.1; the subset swaps lr=0.1 and lr=0.2 -> tau = (5 - 1) / 6
FULL = {0: 0.50, 1: 0.60, 2: 0.70, 3: 0.80}
SUB = {0: 0.45, 1: 0.40, 2: 0.70, 3: 0.80}


def _store(tmp_path: Path, *, leave_pending: str | None = None) -> str:
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    store = Store(url)
    spec = {"report": {"metric": "knn_top1", "reference": "full", "top_k": 2}}
    gid = store.upsert_grid("g", json.dumps(spec), "spec-hash", str(tmp_path / "grid.toml"), 3)
    jobs = [NewJob(f"{sub}-{c}-{seed}", "{}", "simclr", f"key{c}", seed, str(tmp_path / "jobs" / f"{sub}{c}{seed}"),
                   sub, f"simclr[lr=0.{c + 1}]") for sub in ("full", "u5") for c in range(4) for seed in (0, 1)]
    store.add_jobs(gid, jobs)
    for j in jobs:
        if j.job_hash == leave_pending:
            continue
        c = int(j.job_hash.split("-")[1])
        means = FULL if j.subset_name == "full" else SUB
        store.complete(j.job_hash, None, {"knn_top1": means[c] + 0.01 * j.seed,
                                          "train_time_s": 100.0 if j.subset_name == "full" else 20.0,
                                          "num_classes": 10.0 if j.subset_name == "full" else 5.0})
    return url


def test_report_command_json_and_files(tmp_path: Path) -> None:
    url = _store(tmp_path)
    out = tmp_path / "rep"
    res = CliRunner().invoke(cli, ["report", "g", "--json", "--out", str(out), "--db", url])
    assert res.exit_code == 0, res.output
    rep = json.loads(res.output)
    assert rep["complete"] is True and rep["top_k"] == 2 and rep["jobs_completed"] == 16
    assert [s["subset"] for s in rep["subsets"]] == ["full", "u5"]
    u5 = rep["subsets"][1]
    assert u5["consistency"]["kendall_tau"] == pytest.approx(4 / 6)
    assert u5["consistency"]["top_k_overlap"] == 1.0 and u5["consistency"]["top1_agree"] is True
    assert u5["cost_ratio"] == pytest.approx(0.2) and u5["num_classes"] == 5.0
    means = {c["config"]: c["mean"] for c in u5["configs"]}
    assert means["simclr[lr=0.1]"] == pytest.approx(0.455)
    assert {p.name for p in out.iterdir()} >= {"report.md", "report.html", "report.json", "tau.png"}


def test_report_command_flags_an_unfinished_grid(tmp_path: Path) -> None:
    url = _store(tmp_path, leave_pending="u5-3-1")
    res = CliRunner().invoke(cli, ["report", "g", "--out", str(tmp_path / "rep"), "--db", url],
                             env={"COLUMNS": "100"})
    assert res.exit_code == 0, res.output
    assert "PROVISIONAL" in res.output
    assert "incomplete grid: 15/16 jobs completed (1 PENDING)" in " ".join(res.output.split())
