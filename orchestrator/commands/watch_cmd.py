"""``dlth-orch watch [GRID] [--interval S] [--once] [--json]``: a view of a grid that refreshes itself (rich
Live): per subset x configuration done/running/queued/waiting/failed, the running jobs' epoch and
throughput, an ETA, the breaker's state. One ``status`` refresh per interval; Ctrl-C leaves the terminal
clean. ``--once`` prints one frame (no terminal needed)."""

from __future__ import annotations

import json

import click
from rich.console import Console

from orchestrator.cli_common import db_option, open_store, resolve_grid_name


@click.command()
@click.argument("grid", required=False)
@click.option("--interval", type=click.FloatRange(min=1.0), default=10.0, show_default=True, metavar="S",
              help="Seconds between refreshes (each costs the cluster what one `status` costs).")
@click.option("--once", is_flag=True, help="Print one frame and exit.")
@click.option("--json", "as_json", is_flag=True, help="With --once: the frame as JSON.")
@db_option
def watch(grid: str | None, interval: float, once: bool, as_json: bool, db_url: str) -> None:
    """Follow GRID (name or grid file; default: the only grid) in a view that refreshes itself."""
    from rich.live import Live

    from orchestrator.watch_view import build_frame, render, watch_loop

    store = open_store(db_url)
    name = resolve_grid_name(store, grid)
    console = Console()
    if once or as_json:
        frame = build_frame(store, name)
        if as_json:
            click.echo(json.dumps(frame.to_dict(), indent=1, default=str))
        else:
            console.print(render(frame))
        return
    try:
        if not console.is_terminal:  # a pipe or a log: one frame after the other
            watch_loop(store, name, interval, lambda f: console.print(render(f)))
            return
        with Live(console=console, auto_refresh=False, transient=False) as live:
            watch_loop(store, name, interval, lambda f: live.update(render(f), refresh=True))
    except KeyboardInterrupt:  # Live has restored the cursor on its way out
        console.print("[dim]watch stopped[/dim]")
