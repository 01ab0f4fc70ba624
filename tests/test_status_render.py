"""The terminal status shows names exactly as written: config labels and errors contain brackets, which
rich would otherwise read as markup and drop."""

from __future__ import annotations

from rich.console import Console

from orchestrator.status import GridStatus, GroupProgress, print_status


def test_status_prints_bracketed_config_names_and_errors_verbatim() -> None:
    st = GridStatus(grid="g[1]", total=3, counts={"COMPLETED": 2, "FAILED": 1},
                    groups=[GroupProgress("full", "supervised[lr=0.2]", total=2, completed=2),
                            GroupProgress("even5", "simclr[temperature=0.1]", total=1, failed=1)],
                    failed=[{"job": "abc123", "label": "even5/simclr[temperature=0.1]/s0", "failures": 3,
                             "error": "FileNotFoundError: [Errno 2] No such file: '/data/[x].beton'"}])
    console = Console(record=True, width=200)
    print_status(st, console)
    text = console.export_text()
    assert "g[1]: 2/3 completed" in text
    assert "supervised[lr=0.2]" in text and "simclr[temperature=0.1]" in text
    assert "FAILED even5/simclr[temperature=0.1]/s0 (abc123, 3 failures): FileNotFoundError: [Errno 2] " \
           "No such file: '/data/[x].beton'" in text
