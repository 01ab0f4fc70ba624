"""``advance`` and ``replay``: an adaptive study's controller step, and the policy played on a finished grid
(see :mod:`orchestrator.adaptive`)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import click

from db import Store
from orchestrator.cli_common import db_option, fail, open_store, resolve_grid_name


def _backend_of(store: Store, grid_name: str) -> str:
    """The backend that holds most of the grid's jobs (``local`` when none was submitted yet)."""
    used = Counter(j.backend for j in store.jobs(grid_name) if j.backend)
    return used.most_common(1)[0][0] if used else "local"


@click.command()
@click.argument("grid", required=False)
@click.option("--cluster", type=click.Choice(["local", "slurm"]), default=None,
              help="Backend for the jobs it adds (default: the one holding the grid's jobs).")
@click.option("--profile", default=None, help="Cluster profile (default: the grid's [cluster].profile).")
@db_option
def advance(grid: str | None, cluster: str | None, profile: str | None, db_url: str) -> None:
    """Take the next look of adaptive GRID if its round is over: add seeds, drop subsets, or stop.

    Idempotent and safe from cron or after a crash (it holds the grid's lock); jobs recorded but not yet
    handed over are submitted (SLURM) or run to the end (local).
    """
    from orchestrator import launch as pipeline
    from orchestrator.adaptive.controller import step
    from orchestrator.backends.base import LaunchContext

    store = open_store(db_url)
    name = resolve_grid_name(store, grid)
    g = store.get_grid(name)
    assert g is not None
    v = pipeline.validate(Path(g.source_path), cluster or _backend_of(store, name), profile, db_url=db_url)
    if v.grid.name != name or v.grid.spec_hash != g.spec_hash:
        fail(f"grid {name}: its file {g.source_path} changed since it was launched; launch it again first")
    if v.grid.adaptive is None and not v.grid.audited:
        fail(f"grid {name}: {g.source_path} has no [adaptive] table and no audited ticket; nothing to advance")
    meta = pipeline.ensure_dataset(v.grid)
    local = v.backend.name == "local"
    try:
        with pipeline.holding_grid(store, name):
            st = step(store, v.grid, lambda: pipeline.record_grid(store, v.grid, meta))
            click.echo(f"grid {name}: {st.message}" + (f"; {st.cancelled} jobs cancelled" if st.cancelled else ""))
            jobs = pipeline.runnable_jobs(store, name, v.grid.failure_budget, include_queued=local)
            if jobs and not st.stopped:
                click.echo(f"{len(jobs)} jobs to run on {v.backend.name}")
                v.backend.submit(LaunchContext(store=store, db_url=db_url, grid_name=name,
                                               failure_budget=v.grid.failure_budget, profile=v.profile,
                                               wait=local, progress=False), jobs)
    except pipeline.LauncherBusy as exc:
        fail(str(exc))


@click.command()
@click.argument("grid", required=False)
@click.option("--adaptive", is_flag=True, help="Play the adaptive policy (the only mode; required).")
@click.option("--seeds-min", type=click.IntRange(min=1), default=None,
              help="Seeds each (subset, configuration) starts with (default: the grid's [adaptive], else 2).")
@db_option
def replay(grid: str | None, adaptive: bool, seeds_min: int | None, db_url: str) -> None:
    """Play the adaptive policy on finished GRID's results (in seed order): the jobs and device-hours it
    would have spent, and whether it reaches the full grid's decision."""
    from orchestrator.adaptive.replay import replay_grid

    if not adaptive:
        fail("replay: --adaptive: expected the flag (the adaptive policy is the only thing replay plays)")
    store = open_store(db_url)
    name = resolve_grid_name(store, grid)
    try:
        lines = replay_grid(store, name, seeds_min)
    except ValueError as exc:
        fail(str(exc))
    for line in lines:
        click.echo(line)
