"""Rendering the report: terminal tables, JSON, report.md / report.html with embedded PNG plots."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import pytest
from rich.console import Console

from orchestrator.report import JobResult, Report, build_report, print_report, write_report_files
from orchestrator.report import render as render_mod

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
CONFIGS = ["simclr[lr=0.1,temperature=0.2]", "simclr[lr=0.3,temperature=0.2]", "supervised[lr=0.1]",
           "supervised[lr=0.4]", "moco<v2>[lr=0.1]"]  # '<' '>' must be escaped in HTML, '[' ']' in rich markup


def _grid(incomplete: bool = False) -> Report:
    full = [0.40, 0.45, 0.50, 0.55, 0.60]
    subsets = {"full": (full, 1000.0, 10), "uniform100": ([0.70, 0.75, 0.80, 0.85, 0.90], 100.0, 5),
               "hard50": ([0.45, 0.40, 0.50, 0.60, 0.55], 50.0, 3)}
    res = []
    for subset, (means, time_s, ncls) in subsets.items():
        for c, m in zip(CONFIGS, means, strict=True):
            for seed, delta in enumerate((-0.01, 0.01)):
                state = "FAILED" if incomplete and subset == "hard50" and c == CONFIGS[0] and seed == 1 else "COMPLETED"
                metrics = {"knn_top1": m + delta, "train_time_s": time_s, "num_classes": ncls,
                           "num_train_samples": ncls * 100} if state == "COMPLETED" else {}
                res.append(JobResult(subset, c, "k" + c, seed, state, metrics))
    return build_report("paper-grid", res, bootstrap=200)


def test_terminal_report_shows_tables_labels_and_warnings() -> None:
    console = Console(record=True, width=220)
    print_report(_grid(incomplete=True), console)
    text = console.export_text()
    assert "PROVISIONAL" in text
    for c in CONFIGS:  # not eaten as rich markup
        assert c in text
    # summary row of uniform100: identical order, 10x cheaper
    row = next(line for line in text.splitlines() if line.lstrip().startswith("uniform100"))
    assert "1.000" in row and "yes" in row and "0.10x" in row and "5 / 500" in row and "10/10" in row
    hard = next(line for line in text.splitlines() if line.lstrip().startswith("hard50 *"))
    assert "9/10" in hard
    assert "warning: incomplete grid: 29/30 jobs completed (1 FAILED)" in text
    assert f"hard50: 1 FAILED job(s): {CONFIGS[0]} seed 1" in text


def test_html_markdown_and_plots_are_written_with_the_numbers(tmp_path: Path) -> None:
    rep = _grid()
    hard = rep.subset("hard50").consistency
    files = write_report_files(rep, tmp_path / "out")
    names = sorted(p.name for p in files)
    plots = [f"{p}.{fmt}" for p in ("cost", "regret", "scatter", "tau") for fmt in ("pdf", "png", "svg")]
    assert names == sorted([*plots, "report.html", "report.json", "report.md"])
    assert (tmp_path / "out" / "tau.svg").read_text().lstrip().startswith("<?xml")
    assert (tmp_path / "out" / "tau.pdf").read_bytes().startswith(b"%PDF-")
    assert all(p.is_file() for p in files)
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.startswith(".")]  # no temp files left

    page = (tmp_path / "out" / "report.html").read_text()
    images = re.findall(r"src='data:image/png;base64,([A-Za-z0-9+/=]+)'", page)
    assert len(images) == 4
    assert all(base64.b64decode(b).startswith(PNG_MAGIC) for b in images)
    assert "<style>" in page and "<link" not in page  # self-contained
    for name in ("full", "uniform100", "hard50"):
        assert f"<h2>{name}" in page
    assert f"{hard.kendall_tau:.3f}" in page and f"{hard.spearman_rho:.3f}" in page
    assert "moco&lt;v2&gt;[lr=0.1]" in page and "moco<v2>" not in page
    assert "0.10x" in page and "0.05x" in page

    md = (tmp_path / "out" / "report.md").read_text()
    assert "| uniform100 |" in md and f"{hard.kendall_tau:.3f}" in md
    assert "![Kendall tau per subset](tau.png)" in md
    assert (tmp_path / "out" / "tau.png").read_bytes().startswith(PNG_MAGIC)
    assert Report.from_dict(json.loads((tmp_path / "out" / "report.json").read_text())) == rep


def test_a_failing_render_leaves_the_previous_files_untouched(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    write_report_files(_grid(), tmp_path)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}

    def boom(*args: object) -> str:
        raise RuntimeError("render failed")

    monkeypatch.setattr(render_mod, "render_html", boom)
    with pytest.raises(RuntimeError):
        write_report_files(_grid(incomplete=True), tmp_path)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_report_without_comparable_subsets_still_renders(tmp_path: Path) -> None:
    res = [JobResult("full", c, "k" + c, 0, "COMPLETED", {"knn_top1": 0.5}) for c in CONFIGS[:2]]
    res.append(JobResult("sub", CONFIGS[0], "k" + CONFIGS[0], 0, "RUNNING", {}))
    rep = build_report("tiny", res)
    files = write_report_files(rep, tmp_path)
    assert sorted(p.name for p in files) == ["report.html", "report.json", "report.md"]  # no plot without data
    page = (tmp_path / "report.html").read_text()
    assert "only 0 configuration(s) in common" in page and "2/3 jobs completed" in page and "No plots yet" in page
    console = Console(record=True, width=200)
    print_report(rep, console)
    assert "only 0 configuration(s) in common" in console.export_text()


def test_the_recommendation_comes_first_in_every_form(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from orchestrator.report import sections

    monkeypatch.setattr(sections, "HEADER_LINES", [lambda r: "ranked by kNN on frozen features"])
    monkeypatch.setattr(sections, "EXTRA_SECTIONS", [lambda r: sections.Section("Lottery", ("a line",), ("a", "b"),
                                                                                (("1", "2"),)), lambda r: None])
    rep = _grid()
    assert rep.decision is not None and rep.decision.recommended == "uniform100"
    write_report_files(rep, tmp_path)
    page = (tmp_path / "report.html").read_text()
    body = page[page.index("<body>"):]
    head = "Recommended: uniform100, the cheapest subset that meets the criterion."
    assert body.index(head) < body.index("alt='Regret vs cost") < body.index("<h2>Summary")
    assert body.index("ranked by kNN") < body.index("<h2>Summary") < body.index("<h2>Lottery")
    assert "<td>RECOMMENDED</td>" in page
    md = (tmp_path / "report.md").read_text().splitlines()
    assert md[0] == "# Rank-consistency report: paper-grid" and md[2] == f"**{head}**"
    assert "## Lottery" in md and "| 1 | 2 |" in md
    console = Console(record=True, width=200)
    print_report(rep, console)
    text = console.export_text()
    assert text.startswith(head) and text.index("ranked by kNN") < text.index("Rank consistency: paper-grid")
    assert "Lottery" in text and "a line" in text
