"""``retry`` and ``cancel``: act on a grid's jobs (or a filter of them) on whatever backend holds them."""

from __future__ import annotations

import click

from db import JobRow, JobState
from orchestrator.cli_common import db_option, open_store, resolve_grid_name


def select_jobs(jobs: list[JobRow], subset: str | None, config: str | None, states: tuple[str, ...],
                job: str | None = None) -> list[JobRow]:
    """Jobs matching every given filter (subset name, config label substring, states, job hash prefix)."""
    return [j for j in jobs
            if (subset is None or j.subset_name == subset)
            and (job is None or j.job_hash.startswith(job))
            and (config is None or config in j.config_name)
            and (not states or j.state in states)]


def _filters(fn):  # type: ignore[no-untyped-def]
    fn = click.option("--subset", default=None, help="Only jobs of this subset.")(fn)
    fn = click.option("--config", default=None, help="Only jobs whose config label contains this text.")(fn)
    fn = click.option("--job", "job", default=None, help="Only the job whose hash starts with this.")(fn)
    return fn


@click.command()
@click.argument("grid", required=False)
@_filters
@click.option("--cancelled", is_flag=True, help="Also retry cancelled jobs.")
@click.option("--stale", is_flag=True, help="Instead: reset the COMPLETED jobs whose results come from older code "
              "than the grid's latest launch (outputs kept in <job>/stale/<code>/), to retrain on the current code.")
@db_option
def retry(grid: str | None, subset: str | None, config: str | None, job: str | None, cancelled: bool,
          stale: bool, db_url: str) -> None:
    """Reset FAILED (and with --cancelled, CANCELLED) jobs to PENDING, whatever their failure count.

    The next ``dlth-orch launch`` runs them again (from their last checkpoint). With --stale: completed jobs
    of an older code version, retrained from scratch by the next ``dlth-orch launch GRID_FILE --code current``.
    """
    store = open_store(db_url)
    name = resolve_grid_name(store, grid)
    if stale:
        from orchestrator.provenance.stale import reset_stale

        reset = reset_stale(store, name, {j.job_hash for j in select_jobs(store.jobs(name), subset, config, (), job)})
        click.echo(f"{len(reset)} stale jobs reset to PENDING (old outputs kept in <job>/stale/); run "
                   "'dlth-orch launch GRID_FILE --code current' to retrain them")
        return
    states = (JobState.FAILED, JobState.CANCELLED) if cancelled else (JobState.FAILED,)
    jobs = select_jobs(store.jobs(name, states), subset, config, (), job)
    n = store.reset_jobs([j.job_hash for j in jobs], list(states))
    from orchestrator.grid.graph import advance

    g = store.get_grid(name)
    back = advance(store, name, g.failure_budget if g else 0).rewaiting  # their PARENT_FAILED children
    extra = f" ({len(back)} dependent jobs waiting for them again)" if back else ""
    click.echo(f"{n} jobs reset to PENDING{extra}; run 'dlth-orch launch' to run them")


@click.command()
@click.argument("grid", required=False)
@_filters
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@db_option
def cancel(grid: str | None, subset: str | None, config: str | None, job: str | None, yes: bool,
           db_url: str) -> None:
    """Cancel a grid's unfinished jobs (or those matching --subset/--config)."""
    from orchestrator.backends.registry import get_backend

    store = open_store(db_url)
    name = resolve_grid_name(store, grid)
    everything = store.jobs(name)
    jobs = select_jobs(everything, subset, config, JobState.CANCELLABLE, job)
    chosen = {j.job_hash for j in jobs}
    dependents = set(store.descendants(chosen))  # a cancelled parent's children can never run
    jobs += [j for j in everything if j.job_hash in dependents - chosen and j.state in JobState.CANCELLABLE]
    if not jobs:
        click.echo("nothing to cancel")
        return
    if not yes:
        click.confirm(f"cancel {len(jobs)} jobs of {name}?", abort=True)
    by_backend: dict[str, list[JobRow]] = {}
    for j in jobs:
        by_backend.setdefault(j.backend or "local", []).append(j)
    n = sum(get_backend(b).cancel(store, js) for b, js in by_backend.items())
    if "slurm" in by_backend:  # nothing left to wait for: the grid's report job goes too
        from orchestrator.backends.slurm_profile import job_name
        from orchestrator.backends.slurm_report import drop_if_grid_over

        drop_if_grid_over(store, name, job_name(store, name))
    n_dep = len(dependents & {j.job_hash for j in jobs})
    click.echo(f"{n} jobs cancelled" + (f", {n_dep} of them dependents of the selected jobs" if n_dep else ""))
