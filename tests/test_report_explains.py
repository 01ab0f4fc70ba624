"""The report explains itself (words, number formats, legend, stamps) and its plots are fit for a paper,
on real stores built through the store API (tests/report_store.py: every job one CPU-hour attempt)."""

from __future__ import annotations

import importlib.metadata
import json
import re
from datetime import datetime
from pathlib import Path

import pytest
from click.testing import CliRunner

from db import Store
from orchestrator.cli import cli
from orchestrator.report.plots import tau_plot
from tests.report_store import make_grid
from tests.test_report_render import _grid

SIX = [0.40, 0.45, 0.50, 0.55, 0.60, 0.65]


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("DLTH_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def _url(tmp_path: Path, means: dict[str, list[float]], seeds: int) -> str:
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    with Store(url) as store:
        make_grid(store, tmp_path, "g", means, seeds=seeds)
    return url


def _report(*args: str) -> str:
    res = CliRunner().invoke(cli, ["report", *args], env={"COLUMNS": "400"})
    assert res.exit_code == 0, res.output
    return res.output


def test_two_seeds_say_the_interval_is_coarse_and_nothing_is_written_without_out(tmp_path: Path,
                                                                                 home: Path) -> None:
    out = _report("g", "--db", _url(tmp_path, {"full": SIX, "u": SIX}, seeds=2))
    assert "interval coarse: 2 seeds" in out and "[0, 0]" not in out
    assert "the bootstrap's random seed 0" in out and "(seed 0" not in out
    assert "files: none written" in out and not (home / "reports").exists()
    legend = next(ln for ln in out.splitlines() if ln.startswith("classes / samples:"))
    assert "measured cost per job:" in legend and "train time vs" not in legend  # its column is not shown
    head = next(ln for ln in out.splitlines() if "done/total" in ln and "criterion" in ln)
    assert "measured cost per job" in head and "train time" not in head


def test_files_carry_version_time_and_grid_hash_and_every_form_uses_the_same_cells(tmp_path: Path,
                                                                                   home: Path) -> None:
    url = _url(tmp_path, {"full": SIX, "u": SIX[::-1][:3] + SIX[3:]}, seeds=3)
    text = _report("g", "--out", str(tmp_path / "r"), "--db", url)
    doc = json.loads((tmp_path / "r" / "report.json").read_text())
    written = doc["written"]
    assert written["version"] == importlib.metadata.version("dlth-orch") and written["grid_hashes"] == {"g": "hash-g"}
    assert abs(datetime.fromisoformat(written["written_at"].replace("Z", "+00:00")).timestamp()
                - datetime.now().timestamp()) < 600
    md, page = (tmp_path / "r" / "report.md").read_text(), (tmp_path / "r" / "report.html").read_text()
    line = f"written by dlth-orch {written['version']} at {written['written_at']}; grid g (spec hash hash-g)"
    assert line in md and line in page
    md_row = next(r for r in md.splitlines() if r.startswith("| u |"))
    cells = [c.strip() for c in md_row.strip("|").split("|")]
    html_row = re.search(r"<tr><td>u</td>(.*?)</tr>", page)
    assert html_row is not None and ["u", *re.findall(r"<td>(.*?)</td>", html_row.group(1))] == cells
    for cell in cells:  # the terminal shows the very same words and numbers
        assert cell in text, cell
    assert re.search(r"\d\.\d{3} \[-?\d\.\d{2}, -?\d\.\d{2}\]", cells[3])  # 3 seeds: a real interval


def test_plots_for_a_paper(tmp_path: Path, home: Path) -> None:
    url = _url(tmp_path, {"full": SIX, "u": SIX, "v": SIX[::-1]}, seeds=3)
    _report("g", "--out", str(tmp_path / "r"), "--db", url)
    r = tmp_path / "r"
    for name in ("tau", "regret", "scatter", "cost"):
        assert (r / f"{name}.pdf").read_bytes().startswith(b"%PDF-")
        assert "g: " in (r / f"{name}.svg").read_text()  # titled with the grid's name, text kept as text
    tau = (r / "tau.svg").read_text()
    assert "min_tau = 0.8 (the criterion)" in tau
    regret = (r / "regret.svg").read_text()
    assert "g: regret vs cost" in regret and "full (reference)" in regret
    assert "meets the criterion" in regret and "misses it" in regret  # u meets, v misses: both colours shown
    assert "green:" not in regret
    for name in ("regret", "cost"):
        assert "measured CPU-hours per job (all attempts)" in (r / f"{name}.svg").read_text()
    assert "full (reference)" in (r / "cost.svg").read_text()
    assert "1 = simclr[lr=0.6]" in (r / "scatter.svg").read_text()  # the reference's best, by name


def test_the_tau_axis_fits_the_data() -> None:
    ax = tau_plot(_grid()).axes[0]  # taus 1.0 and 0.6, min_tau 0.8
    low, high = ax.get_ylim()
    assert 0.3 < low < 0.6 and 1.0 < high <= 1.06


def test_an_undecidable_headline_names_its_test_next_to_the_table(tmp_path: Path, home: Path) -> None:
    out = _report("g", "--db", _url(tmp_path, {"full": SIX[:4], "u": SIX[:4]}, seeds=3))
    assert out.startswith("Undecidable") and "scipy's exact Kendall test, not the table's seed bootstrap" in out
    assert "the headline's 'Undecidable' comes from scipy's exact Kendall test" in out


def test_report_out_in_the_grid_says_where_report_writes(tmp_path: Path, home: Path, meta_dir: Path) -> None:
    """``[report] out = "paper"`` (relative to the grid file): ``report`` writes there without --out."""
    from orchestrator.grid import load_grid

    grid_file = tmp_path / "g.toml"
    grid_file.write_text(f'name = "g"\n[dataset]\nroot = "{meta_dir}"\n[report]\nout = "paper"\n'
                         '[subsets.full]\nstrategy = "full"\n[methods.supervised]\n')
    assert load_grid(grid_file).report.out == "paper"
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    with Store(url) as store:
        make_grid(store, tmp_path, "g", {"full": SIX, "u": SIX}, seeds=3, report={"out": "paper"})
    out = _report("g", "--db", url)
    assert f"written: {tmp_path / 'paper' / 'report.html'}" in out.replace("\n", "")
    assert (tmp_path / "paper" / "tau.svg").is_file() and not (home / "reports").exists()
