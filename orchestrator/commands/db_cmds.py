"""CLI commands of the storage layer: ``dlth-orch db upgrade``, ``dlth-orch db current``, ``dlth-orch export``.

Mounted by :mod:`orchestrator.cli` (attributes ``db`` and ``export``). Every command takes ``--db URL``
(or the group's ``--db``, ``DLTH_DB``, the default SQLite file).
"""

from __future__ import annotations

from pathlib import Path

import click

from db import StoreError
from orchestrator.cli_common import db_option, fail, open_store


@click.group("db")
def db() -> None:
    """The database's schema: see its revision, upgrade it in place (data kept)."""


@db.command("upgrade")
@click.option("--revision", default="head", show_default=True, help="Target schema revision.")
@db_option
def upgrade(revision: str, db_url: str) -> None:
    """Upgrade the database schema in place (creates it if empty); workers never do this themselves."""
    from db.engine import make_engine, redact
    from db.migrate import upgrade as migrate_upgrade

    try:
        engine = make_engine(db_url)
        try:
            before, after = migrate_upgrade(engine, revision)
        finally:
            engine.dispose()
    except StoreError as exc:
        fail(str(exc))
        return
    except Exception as exc:  # alembic's CommandError for an unknown --revision
        if type(exc).__name__ != "CommandError":
            raise
        fail(f"--revision: {exc}")
        return
    where = redact(db_url)
    if before == after:
        click.echo(f"{where}: already at revision {after}")
    else:
        click.echo(f"{where}: upgraded {before or '(empty)'} -> {after}")


@db.command("current")
@click.option("--check", is_flag=True, help="Exit with code 1 unless the schema is at this dlth-orch's head.")
@db_option
def current(check: bool, db_url: str) -> None:
    """Print the database's schema revision and this dlth-orch's newest one."""
    from db.engine import make_engine, redact
    from db.migrate import BASE_REVISION, HEAD
    from db.migrate import current as migrate_current

    try:
        engine = make_engine(db_url, must_exist=True)
        try:
            state = migrate_current(engine)
        finally:
            engine.dispose()
    except StoreError as exc:
        fail(str(exc))
        return
    if state.revision is None and not state.has_tables:
        revision, note = "(empty)", "run `dlth-orch db upgrade`"
    else:
        revision = state.revision or f"{BASE_REVISION} (unstamped)"
        note = "up to date" if state.revision == HEAD else "run `dlth-orch db upgrade`"
    click.echo(f"{redact(db_url)}: revision {revision}; this dlth-orch's head: {HEAD}; {note}")
    if check and state.revision != HEAD:
        raise SystemExit(1)


@click.command("export")
@click.argument("grid")
@click.option("--out", "out_dir", default=None, type=click.Path(file_okay=False, path_type=Path),
              help="Directory for jobs/attempts/metrics.{csv,json} and grid.json (created if missing).")
@click.option("--format", "formats", default="csv,json", show_default=True,
              help="Comma-separated formats: csv, json.")
@click.option("--to", "to", nargs=2, type=(click.Choice(["mlflow"]), str), default=None, metavar="mlflow URI",
              help="Write the grid into an MLflow tracking store instead (experiment = grid, run = job; "
              "re-exporting adds nothing twice). Needs the mlflow extra.")
@db_option
def export(grid: str, out_dir: Path | None, formats: str, to: tuple[str, str] | None, db_url: str) -> None:
    """Write GRID's jobs (one row per job, final metrics as columns), attempts and metrics to files, or
    (``--to mlflow URI``) into an MLflow tracking store."""
    from db.export import ExportError, export_grid, parse_formats

    if (out_dir is None) == (to is None):
        fail("export: expected exactly one of --out DIR or --to mlflow URI")
    try:
        fmts = parse_formats(formats)
        store = open_store(db_url)
        try:
            if to is not None:
                from db.export_mlflow import export_mlflow

                done = export_mlflow(store, grid, to[1])
            else:
                counts = export_grid(store, grid, out_dir, fmts)
        finally:
            store.close()
    except (ExportError, StoreError) as exc:
        fail(str(exc))
        return
    if to is not None:
        click.echo(f"exported grid {grid!r} to MLflow experiment {done.experiment_id} at {to[1]}: "
                   f"{done.created} runs created, {done.updated} updated, {done.metrics_logged} metric points")
        return
    click.echo(f"exported grid {grid!r} to {out_dir} ({', '.join(fmts)}): "
               + ", ".join(f"{n} {name}" for name, n in counts.items()))
