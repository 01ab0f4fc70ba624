"""``du`` and ``gc``: what a study takes on disk, and removing what its finished jobs no longer need."""

from __future__ import annotations

import json

import click

from db import Store, workspace_dir
from orchestrator.cli_common import db_option, open_store, resolve_grid_name


def _grids(store: Store, grid: str | None) -> list[str]:
    return [resolve_grid_name(store, grid)] if grid else [g.name for g in store.list_grids()]


@click.command()
@click.argument("grid", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print bytes per grid and kind as JSON.")
@db_option
def du(grid: str | None, as_json: bool, db_url: str) -> None:
    """Bytes per grid (every grid without GRID) and per kind: checkpoints, final weights, masks, logs,
    manifests, code snapshots."""
    from orchestrator.storage.du import grid_usage, human
    from orchestrator.storage.kinds import KINDS

    store = open_store(db_url)
    usages = [grid_usage(store, name, workspace_dir()) for name in _grids(store, grid)]
    if as_json:
        click.echo(json.dumps({u.grid: {"jobs": u.jobs, "total": u.total, **u.by_kind} for u in usages}, indent=1))
        return
    click.echo(f"{'grid':<24} {'jobs':>6} " + " ".join(f"{k:>13}" for k in KINDS) + f" {'total':>10}")
    for u in usages:
        click.echo(f"{u.grid:<24} {u.jobs:>6} " + " ".join(f"{human(u.by_kind[k]):>13}" for k in KINDS)
                   + f" {human(u.total):>10}")


@click.command()
@click.argument("grid", required=False)
@click.option("--keep", type=click.Choice(["final", "best", "none"]), default="final", show_default=True,
              help="Weights of finished jobs to keep: every job's, the best seed's per subset x config, none.")
@click.option("--dry-run", is_flag=True, help="Print what would go; remove nothing.")
@db_option
def gc(grid: str | None, keep: str, dry_run: bool, db_url: str) -> None:
    """Remove the per-epoch checkpoints of finished jobs and, by --keep, their weights; never a file that a
    job still to run will load (a parent's final weights, a mask, a rewind point)."""
    from orchestrator.storage.du import human
    from orchestrator.storage.gc import apply, plan_gc

    store = open_store(db_url)
    for name in _grids(store, grid):
        plan = plan_gc(store, name, keep)
        freed = plan.bytes if dry_run else apply(plan)
        verb = "would remove" if dry_run else "removed"
        click.echo(f"grid {name}: {verb} {len(plan.remove)} files ({human(freed)}); kept {len(plan.protected)} "
                   "that jobs still to run will load")
