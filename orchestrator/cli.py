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
from rich.markup import escape as escape_markup
from sqlalchemy.exc import OperationalError

from db import Store, StoreError, workspace_dir
from orchestrator.backends.registry import BACKENDS
from orchestrator.cli_common import (
    DB_DEFAULT,
    check_environment,
    check_grid_arg,
    db_option,
    fail,
    open_store,
    output_console,
    resolve_grid_name,
)
from orchestrator.commands.examples import add_examples
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


@click.group(context_settings={"help_option_names": ["-h", "--help"]}, invoke_without_command=True)
@click.option("--db", "db_url", default=None, metavar="URL", help=f"Database URL for every command ({DB_DEFAULT}).")
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
@click.version_option(package_name="dlth-orch", prog_name="dlth-orch", message="%(prog)s %(version)s")
@click.pass_context
def cli(ctx: click.Context, db_url: str | None, verbose: int) -> None:
    """dlth-orch: run grids of training jobs and find the subsets that rank configurations like the full data."""
    if ctx.invoked_subcommand is None:  # bare `dlth-orch`: the help, and success
        click.echo(ctx.get_help())
        ctx.exit(0)
    level = logging.WARNING - 10 * verbose
    logging.basicConfig(level=max(logging.DEBUG, level), format="%(levelname)s %(name)s: %(message)s")
    ctx.ensure_object(dict)
    if db_url:
        ctx.obj["db_url"] = db_url
    check_environment()  # a bad DLTH_* value is one line and exit 2 here, not a traceback later
    try:
        old_umask = apply_umask()  # the workspace is the user's alone (DLTH_UMASK to share it)
    except ValueError as exc:  # a bad DLTH_UMASK: one line, exit 2, before anything is written
        fail(str(exc))
    ctx.call_on_close(lambda: os.umask(old_umask))


@cli.command()
@click.argument("grid_file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--cluster", type=click.Choice(list(BACKENDS)), default="local", show_default=True,
              help="Where jobs run: local workers on this machine, or SLURM job arrays.")
@click.option("--profile", default=None, help="Cluster profile name or .toml path (default: the grid's "
              "[cluster].profile, else 'local' / 'slurm-local').")
@click.option("--detach", is_flag=True, help="Return once a background launcher (local jobs) holds the grid's lock.")
@click.option("--wait/--no-wait", default=False, help="SLURM: follow the jobs to the end with a live view.")
@click.option("--progress/--no-progress", default=True, help="Show a progress bar.")
@click.option("--dry-run", is_flag=True, help="Validate, expand and print what would be recorded and submitted "
              "(jobs, arrays, dependencies, resources); write nothing.")
@click.option("--json", "as_json", is_flag=True, help="With --dry-run: the plan as JSON.")
@click.option("--max-jobs", type=click.IntRange(min=1), default=100_000, show_default=True, metavar="N",
              help="Refuse a grid of more jobs (counted before anything is expanded).")
@click.option("--code", "code", type=click.Choice(["launch", "current"]), default="launch", show_default=True,
              help="Which code jobs run: 'launch' keeps each job on the snapshot it was launched with; "
              "'current' snapshots the code now and re-points the jobs that have not started.")
@click.option("--require-clean", is_flag=True, help="Refuse to launch code with uncommitted changes (exit 2).")
@db_option
def launch(grid_file: Path, cluster: str, profile: str | None, detach: bool, wait: bool, progress: bool,
           dry_run: bool, as_json: bool, max_jobs: int, code: str, require_clean: bool, db_url: str) -> None:
    """Validate GRID_FILE, record its jobs and run (or submit) the ones not done yet."""
    from orchestrator import launch as pipeline
    from orchestrator.breaker import paused
    from orchestrator.provenance.freeze import DirtyTree, freeze, read_source

    console = Console(stderr=True)
    try:  # the code the workers will run: a dirty tree warns (or is refused) before anything else
        source = None if dry_run else read_source(require_clean=require_clean)
    except DirtyTree as exc:
        fail(str(exc))
    v = pipeline.validate(grid_file, cluster, profile, max_jobs, dry_run=dry_run, db_url=db_url)
    if dry_run:
        from orchestrator.dry_run import dry_run as plan_dry_run
        from orchestrator.dry_run import print_dry_run

        planned = plan_dry_run(v, db_url)
        if as_json:
            click.echo(json.dumps(planned.to_dict(), indent=1))
        else:
            print_dry_run(planned, Console())
        return
    assert source is not None
    meta = pipeline.prepare_data(v)  # a truncated or changed .beton fails here, before anything is recorded
    frozen = freeze(workspace_dir(), source, code=code)  # snapshot before any job is recorded (named once it is)
    store = open_store(db_url, create=True)
    if cluster == "local" and detach:
        try:
            with pipeline.holding_grid(store, v.grid.name):
                pipeline.record_grid(store, v.grid, meta)
                frozen.record(store, v.grid.name)
            console.print(frozen.describe())
        except pipeline.LauncherBusy as exc:
            fail(str(exc))
        launcher = _detach_local(v.grid.name, db_url, v.profile_name)
        _await_launcher(store, v.grid.name, launcher)
        console.print("launched in the background; follow with: dlth-orch status")
        return
    # SLURM: return once submitted unless --wait; local: the launcher runs the jobs
    follow = bool(wait) if cluster == "slurm" else True
    try:
        ran = pipeline.launch(v, store, db_url, meta, wait=follow, progress=progress, console=console, frozen=frozen)
    except pipeline.LauncherBusy as exc:
        fail(str(exc))
    except KeyboardInterrupt:
        console.print("[yellow]interrupted: running jobs were stopped and will resume on the next launch")
        raise SystemExit(130) from None
    if paused(store, v.grid.name):
        _print_summary(store, v.grid.name, console)
        raise SystemExit(3)  # paused by the breaker (the summary says why and how to resume)
    _report_or_summary(store, v.grid.name, console, ran=ran)


def _detach_log(grid_name: str) -> Path:
    return workspace_dir() / "logs" / f"launch-{grid_name}.log"


def _detach_local(grid_name: str, db_url: str, profile: str) -> subprocess.Popen:
    log_file = _detach_log(grid_name)
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with open(log_file, "ab") as fh:
        return subprocess.Popen(
            [sys.executable, "-m", "orchestrator.cli", "run-local", grid_name, "--profile", profile],
            stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
            env={**os.environ, "DLTH_DB": db_url},  # not on the command line: it may hold a password
        )


def _await_launcher(store: Store, grid_name: str, launcher: subprocess.Popen, timeout_s: float = 120.0) -> None:
    """Return once the background launcher holds the grid's lock; fail (one line) if it exits first."""
    import time

    from orchestrator.workspace import log_tail

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        holder = store.lock_holder(grid_name)
        if holder is not None and holder.is_process(launcher.pid):
            return
        if launcher.poll() is not None:
            last = log_tail(_detach_log(grid_name), 1).strip() or f"exit code {launcher.returncode}"
            fail(f"grid {grid_name!r}: the background launcher did not start ({last.removeprefix('error: ')})")
        time.sleep(0.1)
    fail(f"grid {grid_name!r}: the background launcher did not take the grid's lock within {timeout_s:.0f} s "
         f"(see {_detach_log(grid_name)})")


@cli.command("run-local", hidden=True)
@click.argument("grid_name")
@click.option("--profile", default="local")
@db_option
def run_local(grid_name: str, profile: str, db_url: str) -> None:
    """(internal) Run a recorded grid's runnable jobs with the local backend; used by --detach."""
    from orchestrator.backends.base import LaunchContext
    from orchestrator.backends.local import LocalBackend
    from orchestrator.grid.graph import advance
    from orchestrator.launch import LauncherBusy, holding_grid, report_refresher, runnable_jobs
    from orchestrator.profiles import load_profile

    store = open_store(db_url)
    g = store.get_grid(grid_name)
    if g is None:
        fail(f"grid {grid_name!r}: expected a launched grid")
    assert g is not None
    try:
        with holding_grid(store, grid_name):
            backend = LocalBackend()
            backend.reconcile(store, grid_name)
            advance(store, grid_name, g.failure_budget)
            jobs = runnable_jobs(store, grid_name, g.failure_budget, include_queued=True)
            ctx = LaunchContext(store=store, db_url=db_url, grid_name=grid_name, failure_budget=g.failure_budget,
                                profile=load_profile(profile), progress=False,
                                on_progress=report_refresher(store, grid_name))
            backend.submit(ctx, jobs)
    except LauncherBusy as exc:
        fail(str(exc))
    from orchestrator.breaker import paused
    from orchestrator.report_files import finish_report

    if not paused(store, grid_name) and (produced := finish_report(store, grid_name)) is not None:
        log.warning("grid %s: every job has ended; report written to %s", grid_name, produced.out_dir)


@cli.command("report-job", hidden=True)
@click.argument("grid_name")
@click.option("--settings", "settings_file", type=click.Path(dir_okay=False, path_type=Path), required=True)
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), required=True)
def report_job(grid_name: str, settings_file: Path, out_dir: Path) -> None:
    """(internal) The grid's SLURM report job: write the report once the grid's tasks have ended."""
    from orchestrator.report_files import run_report_job
    from specs.settings import WorkerSettings, remove_settings_file

    settings = WorkerSettings.read(settings_file)
    remove_settings_file(settings_file)  # the password stays on disk only while the report job waits
    store = open_store(settings.db_url)
    produced = run_report_job(store, grid_name, out_dir)
    if produced is None:
        raise SystemExit(1)
    click.echo(f"report of {grid_name} written to {produced.out_dir}")


def _print_summary(store: Store, grid_name: str, console: Console) -> None:
    from orchestrator.status import grid_status, print_status

    print_status(grid_status(store, grid_name), console)


def _report_or_summary(store: Store, grid_name: str, console: Console, *, ran: int = 1) -> None:
    """After a launch: the grid's report (its decision and where the files are) when every job has ended,
    else (``--no-wait`` on SLURM, or jobs left to run) the status table. A launch that ``ran`` nothing
    shows the last report when it is up to date, without making it again."""
    from orchestrator.launch import unchanged_report
    from orchestrator.report_files import finish_report, print_produced

    kept = None if ran else unchanged_report(store, grid_name)
    if kept is not None:
        out = _report_console()
        out.print(f"grid [bold]{grid_name}[/]: nothing new to run; its report is up to date:")
        for i, line in enumerate(kept[1]):
            out.print(f"{'  ' if i else ''}{escape_markup(line)}", style="bold" if not i else None)
        out.print(f"report: {kept[0]} (dlth-orch report rewrites it)", soft_wrap=True)
        return

    produced = finish_report(store, grid_name)
    if produced is None:
        _print_summary(store, grid_name, console)
        return
    counts = store.state_counts(grid_name)
    ended = ", ".join(f"{n} {s.lower()}" for s, n in sorted(counts.items()) if n)
    out = _report_console()
    out.print(f"grid [bold]{grid_name}[/]: every job has ended ({ended}); its report:")
    print_produced(produced, out, full=False)


@cli.command()
@click.argument("grid", required=False)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output (a list of grids, also for one).")
@click.option("--all", "all_grids", is_flag=True, help="Every grid in the database (needed without GRID when "
              "it holds several).")
@db_option
def status(grid: str | None, as_json: bool, all_grids: bool, db_url: str) -> None:
    """Where GRID stands: counts, progress, time, cost, failures.

    GRID is a grid name or grid file; without it, the database's only grid (with several, name one or
    pass --all)."""
    from rich.markup import escape

    from orchestrator.db_wait import ride_out
    from orchestrator.report_files import report_status
    from orchestrator.status import grid_status, print_status, refresh

    check_grid_arg(grid)  # a mistyped grid file is named before any database is opened
    store = ride_out(lambda: open_store(db_url), what="status")
    names = [g.name for g in store.list_grids()] if all_grids else [resolve_grid_name(store, grid)]
    out = []
    for name in names:
        out.append(ride_out(lambda n=name: (refresh(store, n), grid_status(store, n))[1], what="status"))
    reports = {name: report_status(store, name) for name in names}
    if as_json:
        docs = [{**s.to_dict(), "report": reports[name]} for name, s in zip(names, out, strict=True)]
        click.echo(json.dumps(docs, indent=1))  # one shape: a list of grids, also for one
        return
    console = output_console(width=160)  # piped: whole lines, no wrapped cells
    for name, st in zip(names, out, strict=True):
        print_status(st, console)
        console.print(f"[dim]{escape(reports[name]['line'])}[/dim]", soft_wrap=True)


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
              help="Write the report's files here: report.md, report.html, report.json and the plots (each as PNG, "
              "SVG and PDF). Without it (or the grid's [report] out) the report is only printed (a finished grid's "
              "launch writes <workspace>/reports/<grid>).")
@db_option
def report(grids: tuple[str, ...], metric: str | None, reference: str | None, external: Path | None,
           plan: str | None, criterion: str | None, as_json: bool, out_dir: Path | None, db_url: str) -> None:
    """The report of GRIDS (default: the only grid): which subset ranks configurations like the reference."""
    from orchestrator.report import report_json
    from orchestrator.report_files import configured_out, print_produced, produce
    from orchestrator.results import ReportRequest
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
        if out_dir is None and store is not None and len(names) == 1:
            out_dir = configured_out(store, names[0])  # [report] out
        produced = produce(store, req, out_dir, write=out_dir is not None)  # files only where asked
    except ValueError as exc:
        fail(str(exc))
    if as_json:
        click.echo(report_json(produced.report, produced.lottery))
        return
    print_produced(produced, _report_console())


def _report_console() -> Console:
    """The terminal, or (a log or a pipe) a console at the tables' natural width."""
    return output_console(width=140)


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
        ("orchestrator.commands.show_cmd", "show"),
        ("orchestrator.commands.logs_cmd", "logs"),
        ("orchestrator.commands.watch_cmd", "watch"),
        ("orchestrator.commands.adaptive_cmds", "advance"),
        ("orchestrator.commands.adaptive_cmds", "replay"),
        ("orchestrator.commands.disk_cmds", "du"), ("orchestrator.commands.disk_cmds", "gc"),
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
add_examples(cli)


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
