"""``dlth-orch slurm ...``: the SLURM side of a grid (mounted by the CLI as the ``slurm`` group).

``retry`` and ``cancel`` for every backend live in :mod:`orchestrator.commands.jobs_cmds`; cancelling
SLURM jobs goes through :meth:`SlurmBackend.cancel` (one ``scancel`` for all of them).
"""

from __future__ import annotations

import json

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from orchestrator.cli_common import db_option, fail, open_store, resolve_grid_name
from specs.job import job_label


@click.group()
def slurm() -> None:
    """SLURM jobs of a grid: what SLURM says about them, submitting runnable ones again."""


@slurm.command("jobs")
@click.argument("grid", required=False)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@db_option
def jobs_cmd(grid: str | None, as_json: bool, db_url: str) -> None:
    """Each job of GRID with its SLURM id and SLURM's state (one batched sacct query)."""
    from orchestrator.backends.slurm_profile import job_name
    from orchestrator.backends.slurm_sacct import query
    from orchestrator.backends.slurm_submit import first_submission
    from orchestrator.backends.slurm_target import grid_conf, targeting

    store = open_store(db_url)
    name = resolve_grid_name(store, grid)
    sname = job_name(store, name)
    since = first_submission(sname)
    rows = [j for j in store.jobs(name) if j.backend == "slurm"]
    with targeting(grid_conf(store, sname)):
        view = query(sname, since, [j.backend_id for j in rows if j.backend_id]) if since else None
    out = []
    for j in rows:
        run = view.latest(j.backend_id) if view and j.backend_id else None
        out.append({"job": j.job_hash, "label": job_label(j.subset_name, j.config_name, j.seed), "state": j.state,
                    "slurm_id": j.backend_id, "slurm_state": run.state if run else "",
                    "node": run.nodes if run else "", "attempts": j.attempt_count, "failures": j.failure_count})
    if as_json:
        click.echo(json.dumps({"grid": name, "slurm_job_name": sname, "jobs": out}, indent=1))
        return
    table = Table(title=escape(f"{name} (SLURM job name {sname})"), show_edge=False)
    for col in ("label", "job", "state", "slurm id", "slurm state", "node", "attempts", "failures"):
        table.add_column(col)
    for r in out:
        table.add_row(escape(r["label"]), r["job"], r["state"], r["slurm_id"] or "", r["slurm_state"], r["node"],
                      str(r["attempts"]), str(r["failures"]))
    Console().print(table)


@slurm.command("resubmit")
@click.argument("grid", required=False)
@click.option("--profile", default=None, help="Cluster profile (default: the grid's [cluster].profile, else "
              "slurm-local).")
@click.option("--follow/--no-follow", default=False, help="Follow the jobs to the end.")
@db_option
def resubmit(grid: str | None, profile: str | None, follow: bool, db_url: str) -> None:
    """Submit GRID's runnable jobs (PENDING, FAILED within budget) to SLURM again, e.g. after ``retry``.

    Uses the grid as recorded in the database (the grid file is not read again).
    """
    from orchestrator.backends.base import LaunchContext
    from orchestrator.backends.slurm import SlurmBackend, runnable
    from orchestrator.profiles import load_profile

    store = open_store(db_url)
    name = resolve_grid_name(store, grid)
    g = store.get_grid(name)
    if g is None:
        fail(f"grid {name!r}: expected a launched grid")
    assert g is not None
    cluster = json.loads(g.spec_json).get("cluster", {})
    prof = load_profile(profile or cluster.get("profile") or "slurm-local",
                        {k: v for k, v in cluster.items() if k != "profile"})
    ctx = LaunchContext(store=store, db_url=db_url, grid_name=name, failure_budget=g.failure_budget, profile=prof,
                        wait=follow, progress=follow)
    todo = runnable(store, name, g.failure_budget)
    SlurmBackend().submit(ctx, todo)
    click.echo(f"{len(todo)} jobs submitted to SLURM")
