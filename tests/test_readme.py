"""The README leads a newcomer: its sections, its links into docs/ (files and anchors resolve), its first
grid (a real grid file that loads), and no notes for the project's own engineers in user text."""

from __future__ import annotations

import re
from pathlib import Path

from orchestrator.grid import load_grid

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ["cli.md", "grid.md", "methods.md", "lottery.md", "clusters.md", "measurements.md", "report.md"]
LINK = re.compile(r"\]\(([^)\s]+)\)")


def _anchor(title: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to dashes."""
    return re.sub(r"[^\w\- ]", "", title.strip().lower()).replace(" ", "-")


def _anchors(md: Path) -> set[str]:
    return {_anchor(m) for m in re.findall(r"^#+ (.+)$", md.read_text(), re.M)}


def test_readme_keeps_the_path_and_links_the_reference() -> None:
    text = README.read_text()
    heads = re.findall(r"^## (.+)$", text, re.M)
    assert heads == ["Contents", "The two commands", "What to do next", "A first grid of your own",
                     "Reading the report", "Where the reference lives"]
    for doc in DOCS:
        assert f"(docs/{doc})" in text, doc
    assert ".dlth/reports/quickstart/report.html" in text and "dlth-orch status" in text
    assert len(text.splitlines()) < 200


def test_every_relative_link_resolves() -> None:
    for md in [README, *sorted((ROOT / "docs").glob("*.md"))]:
        for target in LINK.findall(md.read_text()):
            if target.startswith(("http://", "https://")):
                continue
            path, _, anchor = target.partition("#")
            dest = (md.parent / path).resolve() if path else md
            assert dest.exists(), f"{md.name}: link {target} to a missing file"
            if anchor and dest.suffix == ".md":
                assert anchor in _anchors(dest), f"{md.name}: link {target} to a missing heading"


def test_no_notes_for_the_projects_engineers_in_user_text() -> None:
    for md in [README, *(ROOT / "docs" / d for d in DOCS)]:
        text = md.read_text()
        for phrase in ("rooms' doors", "design card", "shared with other test runs", "not measured here"):
            assert phrase not in text, f"{md.name}: {phrase!r}"


def test_the_first_grid_of_the_readme_is_a_grid(tmp_path: Path) -> None:
    text = README.read_text()
    section = text[text.index("## A first grid of your own"):text.index("## Reading the report")]
    block = re.search(r"```toml\n(.*?)```", section, re.S)
    assert block is not None
    (tmp_path / "examples").mkdir()
    grid_file = tmp_path / "examples" / "mygrid.toml"
    grid_file.write_text(block.group(1))
    grid = load_grid(grid_file)
    assert grid.name == "mygrid" and list(grid.subsets) == ["full", "even5"]
