"""``dlth-orch subsets``: inspect the subsets of a grid before spending GPU hours on them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from orchestrator.cli_common import db_option, fail, open_store, output_console
from specs.base import SpecError
from specs.contract import JobPaths
from subsets import SubsetError


@click.group()
def subsets() -> None:
    """Inspect subsets: sizes, classes, WordNet coverage."""


def _params_text(params: dict[str, Any]) -> str:
    shown = {k: (Path(v).name if k.endswith("_file") and isinstance(v, str) else v) for k, v in params.items()}
    return " ".join(f"{k}={v}" for k, v in shown.items() if not k.endswith("_sha")) or "-"


def render(report: dict[str, Any], console: Console, max_classes: int = 20) -> None:
    """Print a :func:`subsets.show.subsets_report` as rich tables."""
    ds = report["dataset"]
    console.print(f"dataset [bold]{escape(ds['name'])}[/] ({escape(str(ds['root']))}): {ds['num_classes']} classes, "
                  + ", ".join(f"{n} {s} images" for s, n in ds["num_samples"].items()))
    summary = Table()
    for col in ("subset", "strategy", "params", "classes", "train", "val", "of full (train)", "hash"):
        summary.add_column(col, justify="right" if col in ("classes", "train", "val", "of full (train)") else "left")
    for name, sub in report["subsets"].items():
        summary.add_row(
            escape(name), sub["strategy"], escape(_params_text(sub["params"])), str(sub["num_classes"]),
            str(sub["num_samples"].get("train", 0)), str(sub["num_samples"].get("val", 0)),
            f"{100 * sub['fraction_of_full'].get('train', 0):.1f}%", sub["hash"],
        )
    console.print(summary)
    for name, sub in report["subsets"].items():
        classes = sub["classes"]
        limit = len(classes) if max_classes <= 0 else min(max_classes, len(classes))
        console.print(f"[bold]{escape(name)}[/]: {len(classes)} classes")
        table = Table()
        for col in ("index", "wnid", "name"):
            table.add_column(col)
        for c in classes[:limit]:
            table.add_row(str(c["index"]), escape(c["wnid"]), escape(c["name"]))
        if limit < len(classes):
            table.add_row("...", "", f"{len(classes) - limit} more (--max-classes 0 shows all)")
        console.print(table)
        details = sub.get("details", {})
        if "wordnet" in details:
            _render_wordnet(name, details["wordnet"], console, max_classes)
        if "accuracy" in details:
            a = details["accuracy"]
            console.print(f"{escape(name)}: per-class accuracy of the chosen classes {a['min']:.3f} .. {a['max']:.3f} "
                          f"(mean {a['mean']:.3f})")


def _render_wordnet(name: str, wn: dict[str, Any], console: Console, max_rows: int) -> None:
    roots = escape(f", roots {', '.join(wn['roots'])}") if wn.get("roots") else ""
    console.print(f"[bold]{escape(name)}[/]: WordNet groups at depth {wn['depth']}: {wn['groups_covered']} of "
                  f"{wn['groups_total']} covered{roots}")
    table = Table()
    for col in ("group", "chosen", "of"):
        table.add_column(col, justify="left" if col == "group" else "right")
    groups = sorted(wn["groups"], key=lambda g: (-g["chosen"], -g["total"], g["group"]))
    limit = len(groups) if max_rows <= 0 else min(max_rows, len(groups))
    for g in groups[:limit]:
        table.add_row(escape(g["group"]), str(g["chosen"]), str(g["total"]))
    if limit < len(groups):
        table.add_row(f"... {len(groups) - limit} more groups", "", "")
    console.print(table)


@subsets.command()
@click.argument("grid_file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print JSON (every class, every group) instead of tables.")
@click.option("--max-classes", default=20, show_default=True, metavar="N",
              help="Classes (and WordNet groups) listed per subset; 0 lists all.")
@db_option
def show(grid_file: Path, as_json: bool, max_classes: int, db_url: str) -> None:
    """Each subset of GRID_FILE: size, fraction of the full data, classes, WordNet group coverage."""
    from orchestrator.grid import load_grid
    from orchestrator.grid.ticket import take_tickets
    from orchestrator.launch import ensure_dataset
    from subsets.show import dataset_summary, subset_report

    grid = take_tickets(load_grid(grid_file), db_url)  # a ticket: the subset its earlier grid recommends
    meta = ensure_dataset(grid)
    report: dict[str, Any] = {"dataset": dataset_summary(meta), "subsets": {}}
    for name, table in grid.subsets.items():
        try:
            report["subsets"][name] = subset_report(name, table, meta)
        except SubsetError as exc:  # one line naming the file and the key
            raise SpecError(f"subsets.{name}.{exc.key}", exc.expected, str(grid_file)) from None
    if as_json:
        click.echo(json.dumps(report, indent=1))
    else:
        render(report, output_console(), max_classes)  # piped: values whole, never truncated


@subsets.command("class-accuracy")
@click.argument("job")
@click.option("--out", "out_file", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Accuracy file to write (.csv or .json), for a per_class_accuracy subset's accuracy_file.")
@db_option
def class_accuracy(job: str, out_file: Path, db_url: str) -> None:
    """Evaluate a finished JOB (job hash or job directory) per class and write {wnid: accuracy}.

    Take a strong supervised model, e.g. the ``supervised`` job on ``full`` of a grid (``dlth-orch status``
    and ``dlth-orch export`` list job hashes).
    """
    from subsets.accuracy_file import write_accuracy_file
    from workers.class_accuracy import NoCheckpoint, per_class_accuracy

    job_dir = Path(job)
    if not JobPaths(job_dir).job_file.is_file():
        row = open_store(db_url).job(job)
        if row is None:
            fail(f"JOB {job!r}: expected a job hash or a job directory holding job.json")
            return
        job_dir = Path(row.job_dir)
    try:
        acc = per_class_accuracy(job_dir)
    except NoCheckpoint as exc:
        fail(str(exc))
    path = write_accuracy_file(out_file, acc)
    mean = sum(acc.values()) / max(1, len(acc))
    click.echo(f"{len(acc)} classes, mean accuracy {mean:.4f}: {path}")
