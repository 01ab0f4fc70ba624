"""External result tables: as extra rows, as the reference, alone, and every kind of bad table (exit 2)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from scipy.stats import kendalltau

from db import Store
from orchestrator.cli import cli
from orchestrator.report import Criterion
from orchestrator.report.external import ExternalTableError, read_external
from orchestrator.results import ReportRequest, assemble_report
from tests.report_store import make_grid

REF = [0.50, 0.60, 0.70, 0.80, 0.90]
LABELS = [f"simclr[lr=0.{c + 1}]" for c in range(5)]


@pytest.fixture(scope="module")
def grid_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One grid for the whole module (the report only reads it)."""
    tmp = tmp_path_factory.mktemp("extgrid")
    url = f"sqlite:///{tmp / 'db.sqlite'}"
    make_grid(Store(url), tmp, "g", {"full": REF, "u5": [0.45, 0.40, 0.70, 0.80, 0.90]}, configs=LABELS)
    return url


def _csv(tmp_path: Path, text: str, name: str = "published.csv") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


# published full-data numbers: same order as the grid's own full except the two worst swapped
PUBLISHED = "config,subset,metric,value,source\n" + "".join(
    f"{label},full,knn_top1,{v},paper\n" for label, v in zip(LABELS, [0.62, 0.61, 0.70, 0.80, 0.90], strict=True))


def _run(*args: str) -> tuple[int, str, str]:
    res = CliRunner().invoke(cli, ["report", *args])
    return res.exit_code, res.stdout, res.stderr


def test_external_rows_take_part_and_are_marked(tmp_path: Path, grid_url: str) -> None:
    url = grid_url
    table = _csv(tmp_path, PUBLISHED)
    code, out, err = _run("g", "--external", str(table), "--json", "--out", str(tmp_path / "r"), "--db", url)
    assert code == 0, err
    rep = json.loads(out)
    assert rep["reference"] == "full" and rep["sources"] == ["g", str(table)]
    ext = next(s for s in rep["subsets"] if s["subset"] == "external:full")
    assert ext["external"] is True and ext["jobs_completed"] == 5 and ext["cost_hours"] is None
    assert ext["consistency"]["kendall_tau"] == pytest.approx(0.8)  # one swapped pair of 5
    assert not next(s for s in rep["subsets"] if s["subset"] == "u5")["external"]
    page = (tmp_path / "r" / "report.html").read_text()
    assert "external:full: tau 0.800, 5/5 jobs done [external results]" in page


def test_external_table_as_the_reference(tmp_path: Path, grid_url: str) -> None:
    url = grid_url
    table = _csv(tmp_path, PUBLISHED)
    code, out, err = _run("g", "--external", str(table), "--reference", "external:full", "--json",
                          "--out", str(tmp_path / "r"), "--db", url)
    assert code == 0, err
    rep = json.loads(out)
    assert rep["reference"] == "external:full" and rep["subsets"][0]["subset"] == "external:full"
    by = {s["subset"]: s["consistency"] for s in rep["subsets"][1:]}
    ext_values = [0.62, 0.61, 0.70, 0.80, 0.90]
    assert by["full"]["kendall_tau"] == pytest.approx(kendalltau(REF, ext_values).statistic)
    assert by["u5"]["kendall_tau"] == pytest.approx(kendalltau([0.45, 0.40, 0.70, 0.80, 0.90], ext_values).statistic)
    # external rows have a single value each: no seed interval, the decision says so honestly ...
    assert rep["decision"]["status"] == "undecidable" and "seed" in rep["decision"]["headline"]
    # ... unless the criterion reads point estimates: u5 swaps the two worst (tau 0.8) and picks the right best
    # (what the CLI assembles, without rendering the files again)
    d = assemble_report(Store(url), ReportRequest(grids=["g"], external=table, reference="external:full",
                                                  criterion="confidence=0,min_tau=0.75")).decision
    assert d is not None and d.criterion == Criterion(min_tau=0.75, confidence=0.0, max_regret=0.01)
    assert d.status == "met" and d.recommended == "full"  # full and u5 both cost 1 CPU-hour a job: by name
    code, _, err = _run("g", "--criterion", "confidence=2", "--out", str(tmp_path / "r2"), "--db", url)
    assert code == 2 and "--criterion.confidence: expected a number <= 0.999" in err


def test_an_external_table_alone_compares_its_own_subsets(tmp_path: Path) -> None:
    # a published-style ImageNet-100 vs ImageNet-1K table with seeds and a tie, no grid and no database
    rows = ["config,subset,metric,value,seed"]
    in1k = {"simclr": 69.3, "moco": 71.1, "byol": 74.3, "swav": 75.3, "dino": 77.0}
    in100 = {"simclr": 79.6, "moco": 82.1, "byol": 82.1, "swav": 83.9, "dino": 85.0}
    for name, table in (("in1k", in1k), ("in100", in100)):
        for c, v in table.items():
            rows += [f"{c},{name},top1,{v - 0.1},0", f"{c},{name},top1,{v + 0.1},1"]
    path = _csv(tmp_path, "\n".join(rows) + "\n", "in100_vs_in1k.csv")
    code, out, err = _run("--external", str(path), "--reference", "in1k", "--json", "--out", str(tmp_path / "r"),
                          "--db", f"sqlite:///{tmp_path / 'none' / 'db.sqlite'}")
    assert code == 0, err
    rep = json.loads(out)
    assert rep["grid"] == "in100_vs_in1k" and rep["metric"] == "top1" and rep["reference"] == "external:in1k"
    c = rep["subsets"][1]["consistency"]
    assert c["kendall_tau"] == pytest.approx(kendalltau(list(in100.values()), list(in1k.values())).statistic)
    assert c["regret"] == 0.0 and c["n_common"] == 5
    assert not (tmp_path / "none").exists()  # no database was created


@pytest.mark.parametrize(("text", "where"), [
    ("config,subset,value\nsimclr[lr=0.1],full,0.5\n", "row 1, column metric: expected a column named 'metric'"),
    ("config,subset,metric,value\nsimclr[lr=0.1],full,knn_top1,0.5\nsimclr[lr=0.2],full,knn_top1,high\n",
     "row 3, column value: expected a number, got 'high'"),
    ("config,subset,metric,value\nsimclr[lr=0.1],full,knn_top1,0.5\nsimclr[lr=0.1],full,knn_top1,0.6\n",
     "row 3, column config: expected one row per config/subset/metric/seed (duplicate of row 2"),
    ("config,subset,metric,value\nsimclr[lr=0.1],full,knn_top1,0.5\nresnet-bogus,full,knn_top1,0.6\n",
     "row 3, column config: expected a configuration label of the grid"),
    ("config,subset,metric,value,seed\nsimclr[lr=0.1],full,knn_top1,0.5,one\n",
     "row 2, column seed: expected an integer, got 'one'"),
    ("config,subset,metric,value\nsimclr[lr=0.1],full,top5,0.5\n",
     "column metric: expected rows of the report's metric 'knn_top1'"),
])
def test_a_bad_table_is_one_line_naming_file_row_and_column_and_exit_2(tmp_path: Path, grid_url: str, text: str,
                                                                        where: str) -> None:
    url = grid_url
    path = _csv(tmp_path, text, "bad.csv")
    out = tmp_path / "r"
    code, _, err = _run("g", "--external", str(path), "--out", str(out), "--db", url)
    assert code == 2
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"error: {path}: ") and where in lines[0], err
    assert not out.exists()  # nothing written


def test_missing_and_empty_files_are_reported(tmp_path: Path) -> None:
    with pytest.raises(ExternalTableError, match="expected an existing CSV file"):
        read_external(tmp_path / "nope.csv")
    with pytest.raises(ExternalTableError, match="row 2: expected at least one row"):
        read_external(_csv(tmp_path, "config,subset,metric,value\n"))
