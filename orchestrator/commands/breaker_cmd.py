"""``resume``: let a grid paused by the breaker (see :mod:`orchestrator.breaker`) run again."""

from __future__ import annotations

import click

from orchestrator.cli_common import db_option, open_store, resolve_grid_name


@click.command()
@click.argument("grid", required=False)
@db_option
def resume(grid: str | None, db_url: str) -> None:
    """Resume GRID after a systematic failure was fixed: release its held SLURM tasks, allow local starts.

    Failed jobs within the failure budget run again on the next ``dlth-orch launch`` (or the running
    ``launch --wait``); the failures from before the resume no longer count towards pausing it again.
    """
    from orchestrator import breaker

    store = open_store(db_url)
    name = resolve_grid_name(store, grid)
    was = breaker.paused(store, name)
    released = breaker.resume(store, name)
    state = "resumed" if was else "was not paused;"
    click.echo(f"grid {name} {state} {released} SLURM tasks released; run 'dlth-orch launch' to run what is left")
