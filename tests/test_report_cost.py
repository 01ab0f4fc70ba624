"""Cost from attempts (failed and preempted ones too), ``report --plan`` and several grids, through a real store."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from rich.console import Console

from db import Store
from orchestrator.cli import cli
from orchestrator.report import Report, build_report, print_report
from orchestrator.results import grid_results
from tests.report_store import make_grid

REF = [0.50, 0.60, 0.70, 0.80, 0.90]


def _report(url: str, *args: str, out: Path) -> dict:
    res = CliRunner().invoke(cli, ["report", *args, "--json", "--out", str(out), "--db", url])
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout)


def test_cost_counts_every_attempt_times_the_devices_held(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    store = Store(url)
    # full: 4 GPUs per job; u5: 1 GPU; one u5 job was preempted (2 h) and one failed (2 h) before completing
    make_grid(store, tmp_path, "g", {"full": REF, "u5": [m - 0.2 for m in REF]}, gpus={"full": 4, "u5": 1},
              earlier={"g-u5-0-0": "PREEMPTED", "g-u5-1-1": "FAILED"})
    by_hash = {f"{r.subset}-{r.config_key}-{r.seed}": r for r in grid_results(store, "g")}
    assert by_hash["full-g-key0-0"].cost_hours == pytest.approx(4.0)
    assert by_hash["full-g-key0-0"].cost_unit == "GPU-hours"
    assert by_hash["u5-g-key0-0"].cost_hours == pytest.approx(3.0)  # 2 h preempted + 1 h completed, 1 GPU
    assert by_hash["u5-g-key1-1"].cost_hours == pytest.approx(3.0)  # 2 h failed + 1 h completed
    assert by_hash["u5-g-key2-0"].cost_hours == pytest.approx(1.0)

    rep = _report(url, "g", "--plan", "100x3", out=tmp_path / "rep")
    full, u5 = (next(s for s in rep["subsets"] if s["subset"] == n) for n in ("full", "u5"))
    assert full["cost_hours"] == pytest.approx(40.0) and full["cost_hours_per_job"] == pytest.approx(4.0)
    assert u5["cost_hours"] == pytest.approx(14.0) and u5["cost_hours_per_job"] == pytest.approx(1.4)
    assert u5["cost_unit"] == "GPU-hours"
    d = rep["decision"]
    assert d["status"] == "met" and d["recommended"] == "u5"
    plan = rep["plan"]
    assert plan["configs"] == 100 and plan["seeds"] == 3 and plan["subset"] == "u5" and plan["recommended"]
    assert plan["reference_hours"] == pytest.approx(1200.0) and plan["subset_hours"] == pytest.approx(420.0)
    assert plan["factor"] == pytest.approx(1200 / 420)
    console = Console(record=True, width=200)
    print_report(Report.from_dict(rep), console)  # what the terminal shows of the same report
    flat = " ".join(console.export_text().split())
    assert flat.startswith("Recommended: u5")
    assert "Plan 100 configurations x 3 seeds (300 jobs): 1,200 GPU-hours on full vs 420 on u5 (recommended): " \
           "2.9x cheaper" in flat


def test_cpu_jobs_are_counted_in_cpu_hours_and_a_bad_plan_is_refused(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    store = Store(url)
    make_grid(store, tmp_path, "g", {"full": REF, "u5": REF})
    rep = build_report("g", grid_results(store, "g"), plan=(10, 2))
    assert rep.subsets[0].cost_unit == "CPU-hours" and rep.subsets[0].cost_hours_per_job == 1.0
    assert rep.plan is not None and rep.plan.unit == "CPU-hours" and rep.plan.factor == 1.0
    res = CliRunner().invoke(cli, ["report", "g", "--plan", "100", "--out", str(tmp_path / "rep"), "--db", url])
    assert res.exit_code == 2 and "--plan: expected CONFIGSxSEEDS" in res.stderr
    assert not (tmp_path / "rep").exists()


def test_several_grids_in_one_report(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    store = Store(url)
    labels = [f"simclr[lr=0.{c + 1}]" for c in range(5)]
    make_grid(store, tmp_path, "resnet", {"full": REF, "u5": [m + 0.05 for m in REF]}, configs=labels)
    # the second grid (another backbone) has a configuration the first has not, and swaps two on u5
    make_grid(store, tmp_path, "vit", {"full": [*REF, 0.3], "u5": [0.5, 0.6, 0.7, 0.9, 0.8, 0.2]},
              configs=[*labels, "byol[lr=0.1]"])
    rep = _report(url, "resnet", "vit", out=tmp_path / "rep")
    assert rep["reference"] == "resnet/full" and rep["sources"] == ["resnet", "vit"]
    names = [s["subset"] for s in rep["subsets"]]
    assert names[0] == "resnet/full" and set(names) == {"resnet/full", "resnet/u5", "vit/full", "vit/u5"}
    by = {s["subset"]: s["consistency"] for s in rep["subsets"]}
    assert by["resnet/u5"]["kendall_tau"] == 1.0 and by["vit/full"]["kendall_tau"] == 1.0
    assert by["vit/u5"]["kendall_tau"] == pytest.approx(0.8) and by["vit/u5"]["n_common"] == 5
    assert any("byol[lr=0.1]" in n and "not compared" in n for n in by["vit/u5"]["notes"])
    assert any(w.startswith("not comparable across grids") and "vit has" in w and "byol[lr=0.1]" in w
               for w in rep["warnings"])
