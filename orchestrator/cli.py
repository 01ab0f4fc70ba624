"""The ``dlth-orch`` command line.

Every command takes ``--db URL`` (else ``DLTH_DB``, else ``<DLTH_HOME or ./.dlth>/dlth.db``). Bad input
prints one line naming the file, the key and what was expected, and exits with code 2.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import click
from rich.console import Console
from sqlalchemy.exc import OperationalError

from db import Store, StoreError, workspace_dir
from orchestrator.backends.registry import BACKENDS
from orchestrator.cli_common import db_option, fail, open_store, resolve_grid_name
from specs.base import SpecError
from specs.settings import apply_umask
from subsets import DatasetMetaError, SubsetError

log = logging.getLogger("dlth-orch")
USAGE_ERRORS: tuple[type[Exception], ...] = (SpecError, SubsetError, DatasetMetaError, StoreError)


def _usage_errors() -> tuple[type[Exception], ...]:
    """Errors that mean bad input or an unusable environment: one line, exit 2."""
    extra: list[type[Exception]] = []
    try:
        from workers.data.errors import DataWriteError

        extra.append(DataWriteError)
    except ImportError:
        pass
    try:
        from orchestrator.backends.slurm_cmd import SlurmError

        extra.append(SlurmError)
    except ImportError:  # submitit missing: no SLURM backend
        pass
    return (*USAGE_ERRORS, *extra)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--db", "db_url", default=None, metavar="URL", help="Database URL for every command.")
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
@click.pass_context
def cli(ctx: click.Context, db_url: str | None, verbose: int) -> None:
    """dlth-orch: run grids of training jobs and find the subsets that rank configurations like the full data."""
    level = logging.WARNING - 10 * verbose
    logging.basicConfig(level=max(logging.DEBUG, level), format="%(levelname)s %(name)s: %(message)s")
    ctx.ensure_object(dict)
    if db_url:
        ctx.obj["db_url"] = db_url
    try:
        old_umask = apply_umask()  # the workspace is the user's alone (DLTH_UMASK to share it)
    except ValueError as exc:  # a bad DLTH_UMASK: one line, exit 2, before anything is written
        fail(str(exc))
    ctx.call_on_close(lambda: os.umask(old_umask))


@cli.command()
@click.argument("grid_file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--cluster", type=click.Choice(list(BACKENDS)), default="local", show_default=True)
@click.option("--profile", default=None, help="Cluster profile name or .toml path (default: the grid's "
              "[cluster].profile, else 'local' / 'slurm-local').")
@click.option("--detach", is_flag=True, help="Return at once; local jobs run in a background launcher.")
@click.option("--wait/--no-wait", default=False, help="SLURM: follow the jobs to the end with a live view.")
@click.option("--progress/--no-progress", default=True, help="Show a progress bar.")
@click.option("--dry-run", is_flag=True, help="Validate, expand and print what would be recorded and submitted "
              "(jobs, arrays, dependencies, resources); write nothing.")
@click.option("--json", "as_json", is_flag=True, help="With --dry-run: the plan as JSON.")
@db_option
def launch(grid_file: Path, cluster: str, profile: str | None, detach: bool, wait: bool,
           progress: bool, dry_run: bool, as_json: bool, db_url: str) -> None:
    """Validate GRID_FILE, record its jobs and run (or submit) the ones not done yet."""
    from orchestrator import launch as pipeline
    from orchestrator.breaker import paused

    console = Console(stderr=True)
    v = pipeline.validate(grid_file, cluster, profile)
    if dry_run:
        plan = pipeline.dry_run(v)
        if as_json:
            click.echo(json.dumps(plan.to_dict(), indent=1))
        else:
            pipeline.print_plan(plan, Console())
        return
    meta = pipeline.prepare_data(v)  # a truncated or changed .beton fails here, before anything is recorded
    store = open_store(db_url, create=True)
    if cluster == "local" and detach:
        pipeline.record_grid(store, v.grid, meta)
        _detach_local(v.grid.name, db_url, v.profile_name)
        console.print("launched in the background; follow with: dlth-orch status")
        return
    # SLURM: return once submitted unless --wait; local: the launcher runs the jobs
    follow = bool(wait) if cluster == "slurm" else True
    try:
        pipeline.launch(v, store, db_url, meta, wait=follow, progress=progress, console=console)
    except pipeline.LauncherBusy as exc:
        fail(str(exc))
    except KeyboardInterrupt:
        console.print("[yellow]interrupted: running jobs were stopped and will resume on the next launch")
        raise SystemExit(130) from None
    _print_summary(store, v.grid.name, console)
    if paused(store, v.grid.name):
        raise SystemExit(3)  # paused by the breaker (the summary says why and how to resume)


def _detach_local(grid_name: str, db_url: str, profile: str) -> None:
    logs = workspace_dir() / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    with open(logs / f"launch-{grid_name}.log", "ab") as fh:
        subprocess.Popen(
            [sys.executable, "-m", "orchestrator.cli", "run-local", grid_name, "--profile", profile],
            stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
            env={**os.environ, "DLTH_DB": db_url},  # not on the command line: it may hold a password
        )


@cli.command("run-local", hidden=True)
@click.argument("grid_name")
@click.option("--profile", default="local")
@db_option
def run_local(grid_name: str, profile: str, db_url: str) -> None:
    """(internal) Run a recorded grid's runnable jobs with the local backend; used by --detach."""
    from orchestrator.backends.base import LaunchContext
    from orchestrator.backends.local import LocalBackend
    from orchestrator.graph import advance
    from orchestrator.launch import grid_lock, runnable_jobs
    from orchestrator.profiles import load_profile

    store = open_store(db_url)
    g = store.get_grid(grid_name)
    if g is None:
        fail(f"grid {grid_name!r}: expected a launched grid")
    assert g is not None
    with grid_lock(grid_name) as got:
        if not got:
            fail(f"grid {grid_name!r}: another local launcher is running it")
        backend = LocalBackend()
        backend.reconcile(store, grid_name)
        advance(store, grid_name, g.failure_budget)
        jobs = runnable_jobs(store, grid_name, g.failure_budget, include_queued=True)
        ctx = LaunchContext(store=store, db_url=db_url, grid_name=grid_name, failure_budget=g.failure_budget,
                            profile=load_profile(profile), progress=False)
        backend.submit(ctx, jobs)


def _print_summary(store: Store, grid_name: str, console: Console) -> None:
    from orchestrator.status import grid_status, print_status

    print_status(grid_status(store, grid_name), console)


@cli.command()
@click.argument("grid", required=False)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--all", "all_grids", is_flag=True, help="Every grid in the database.")
@db_option
def status(grid: str | None, as_json: bool, all_grids: bool, db_url: str) -> None:
    """Where GRID stands (name or grid file; default: the only grid): counts, progress, failures."""
    from orchestrator.db_wait import ride_out
    from orchestrator.status import grid_status, print_status, refresh

    store = ride_out(lambda: open_store(db_url), what="status")
    names = [g.name for g in store.list_grids()] if all_grids else [resolve_grid_name(store, grid)]
    out = []
    for name in names:
        out.append(ride_out(lambda n=name: (refresh(store, n), grid_status(store, n))[1], what="status"))
    if as_json:
        click.echo(json.dumps([s.to_dict() for s in out] if all_grids else out[0].to_dict(), indent=1))
        return
    console = Console()
    for st in out:
        print_status(st, console)


@cli.command()
@click.argument("grids", nargs=-1)
@click.option("--metric", default=None, help="Metric to rank by (default: the grid's [report].metric).")
@click.option("--reference", default=None, help="Reference subset (default: the grid's [report].reference; "
              "external:NAME for an external table's subset).")
@click.option("--external", type=click.Path(dir_okay=False, path_type=Path), default=None, metavar="CSV",
              help="Results measured elsewhere (config,subset,metric,value[,seed]); alone without a grid.")
@click.option("--plan", default=None, metavar="NxS", help="Cost of a study of N configurations x S seeds.")
@click.option("--criterion", default=None, metavar="K=V,...", help="Override [report] min_tau, confidence, "
              "max_regret, e.g. confidence=0,max_regret=0.02.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Write report.md and report.html here (default: <workspace>/reports/<grid>).")
@db_option
def report(grids: tuple[str, ...], metric: str | None, reference: str | None, external: Path | None,
           plan: str | None, criterion: str | None, as_json: bool, out_dir: Path | None, db_url: str) -> None:
    """The report of GRIDS (default: the only grid): which subset ranks configurations like the reference."""
    from orchestrator.report import print_report, report_json, write_report_files
    from orchestrator.report.lottery import lottery_report_for, print_lottery
    from orchestrator.report.render import has_rank_section
    from orchestrator.results import ReportRequest, assemble_report
    from orchestrator.status import refresh

    store = None
    names: list[str] = []
    if grids or external is None:
        store = open_store(db_url)
        names = [resolve_grid_name(store, g) for g in grids or (None,)]
        for name in names:
            refresh(store, name)
    req = ReportRequest(grids=names, external=external, metric=metric, reference=reference, plan=plan,
                        criterion=criterion)
    try:
        rep = assemble_report(store, req)
    except ValueError as exc:
        fail(str(exc))
    lottery = None  # the lottery section: one grid's [lottery.*] chains
    if store is not None and len(names) == 1:
        lottery = lottery_report_for(store, names[0], rep.metric, rep.higher_is_better)
    out_dir = out_dir or workspace_dir() / "reports" / rep.grid
    files = write_report_files(rep, out_dir, lottery)
    if as_json:
        click.echo(report_json(rep, lottery))
        return
    console = Console()
    if not console.is_terminal and "COLUMNS" not in os.environ:  # a log or a pipe: the table's natural width
        console = Console(width=140)
    if lottery is None or has_rank_section(rep):
        print_report(rep, console)
    if lottery is not None:
        print_lottery(lottery, console)
    console.print("written: " + ", ".join(str(f) for f in files))


def _mount_optional_groups() -> None:
    """Command groups owned by other modules (data layer, subsets, storage, SLURM)."""
    mounts = [
        ("workers.data.cli", "data"),
        ("orchestrator.commands.subsets_cmd", "subsets"),
        ("orchestrator.commands.db_cmds", "db"),
        ("orchestrator.commands.db_cmds", "export"),
        ("orchestrator.commands.jobs_cmds", "retry"),
        ("orchestrator.commands.jobs_cmds", "cancel"),
        ("orchestrator.commands.slurm_cmds", "slurm"),
        ("orchestrator.commands.breaker_cmd", "resume"),
    ]
    import importlib

    for module, attr in mounts:
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name and module.startswith(exc.name):
                continue
            raise
        cmd = getattr(mod, attr, None)
        if isinstance(cmd, click.Command):
            cli.add_command(cmd, attr)


_mount_optional_groups()


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: usage errors become one line on stderr and exit code 2."""
    try:
        cli.main(args=argv, prog_name="dlth-orch", standalone_mode=False)
    except click.exceptions.Exit as exc:
        raise SystemExit(exc.exit_code) from None
    except click.exceptions.Abort:
        raise SystemExit(130) from None
    except click.ClickException as exc:
        exc.show()
        raise SystemExit(exc.exit_code) from None
    except _usage_errors() as exc:
        fail(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
    except OperationalError as exc:  # the database went away mid-command
        fail(f"database: {str(exc.orig or exc).strip().splitlines()[0]} (retry when it is back)")


if __name__ == "__main__":
    main()
