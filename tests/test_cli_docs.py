"""docs/cli.md's table against what click knows (both ways, so they cannot drift), and the help itself:
``--version``, bare ``dlth-orch``, an example at the end of every ``--help``, the ``--db`` default."""

from __future__ import annotations

import importlib.metadata
import re
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from orchestrator.cli import cli, main

ROOT = Path(__file__).resolve().parents[1]
CLI_DOC = ROOT / "docs" / "cli.md"
ROW = re.compile(r"^\| `([^`]+)` \| (?:`([^`]+)`)? *\|")
GLOBAL = "dlth-orch"
SHARED = {"--db", "--help"}  # listed once, on `dlth-orch`


def _commands(group: click.Group = cli, prefix: str = "") -> dict[str, click.Command]:
    """Every visible command by its path (``"db current"``), leaves only, plus the root as ``dlth-orch``."""
    found: dict[str, click.Command] = {GLOBAL: cli} if not prefix else {}
    for name, cmd in group.commands.items():
        if cmd.hidden:
            continue
        path = f"{prefix} {name}".strip()
        found.update(_commands(cmd, path) if isinstance(cmd, click.Group) else {path: cmd})
    return found


def _long_name(opt: click.Option) -> str:
    return next((n for n in opt.opts if n.startswith("--")), opt.opts[0])


def _click_table() -> set[tuple[str, str]]:
    rows: set[tuple[str, str]] = set()
    for path, cmd in _commands().items():
        rows.add((path, ""))
        for p in cmd.params:
            if isinstance(p, click.Option) and (path == GLOBAL or _long_name(p) not in SHARED):
                rows.add((path, _long_name(p)))
    return rows


def _doc_table() -> set[tuple[str, str]]:
    rows: set[tuple[str, str]] = set()
    for line in CLI_DOC.read_text().splitlines():
        m = ROW.match(line)
        if m and m.group(1) != "command":
            option = re.split(r"[ /]", m.group(2))[0] if m.group(2) else ""
            assert (m.group(1), option) not in rows, f"docs/cli.md: row {m.group(1)} {option} twice"
            rows.add((m.group(1), option))
    return rows


def test_docs_cli_table_lists_exactly_what_click_knows() -> None:
    doc, known = _doc_table(), _click_table()
    assert len(doc) > 50  # the table was parsed at all
    assert not known - doc, f"in click, missing from docs/cli.md: {sorted(known - doc)}"
    assert not doc - known, f"in docs/cli.md, unknown to click: {sorted(doc - known)}"


def test_the_table_names_the_commands_the_issue_found_missing() -> None:
    doc = _doc_table()
    for row in [("slurm jobs", ""), ("slurm resubmit", ""), ("report", "--criterion"), ("retry", "--cancelled"),
                ("cancel", "--yes"), ("export", "--format"), ("db current", "--check"), ("data make-synthetic", "")]:
        assert row in doc


def test_every_help_ends_with_an_example() -> None:
    for path in _commands():
        args = [] if path == GLOBAL else path.split()
        out = CliRunner().invoke(cli, [*args, "--help"]).output
        tail = out.rstrip().splitlines()[-1].strip()
        assert "Examples:" in out and tail.startswith(("dlth-orch", "DLTH_DB=")), (path, tail)


def test_db_help_names_the_real_default_file() -> None:
    for args in ([], ["status"], ["report"]):
        out = CliRunner().invoke(cli, [*args, "--help"], terminal_width=200).output
        assert "./.dlth/dlth.db" in out and "$DLTH_HOME/.dlth" not in out


def test_report_out_help_names_every_file() -> None:
    out = CliRunner().invoke(cli, ["report", "--help"], terminal_width=300).output
    assert all(word in out for word in ("report.md", "report.html", "report.json", "PNG", "SVG", "PDF"))


@pytest.mark.parametrize("args", [[], ["--version"]])
def test_bare_command_and_version_exit_0(args: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    try:
        main(args)
        code = 0
    except SystemExit as exc:
        code = exc.code
    out, err = capsys.readouterr()
    assert code == 0, err
    if args:
        assert out.strip() == f"dlth-orch {importlib.metadata.version('dlth-orch')}"
    else:
        assert out.startswith("Usage: dlth-orch") and "Commands:" in out and not err
