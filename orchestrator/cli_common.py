"""Helpers shared by the CLI's command modules: the ``--db`` option, one-line errors, grid lookup."""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from rich.console import Console

from db import Store, default_url, require_database

if TYPE_CHECKING:
    from orchestrator.job_view import Named

DB_DEFAULT = "default: $DLTH_DB, else the SQLite file ./.dlth/dlth.db, or $DLTH_HOME/dlth.db when DLTH_HOME is set"


def fail(message: str) -> None:
    """Print a one-line error and exit with code 2."""
    click.echo(f"error: {message}", err=True)
    raise SystemExit(2)


# DLTH_* settings in seconds: finite and positive (specs.settings reads them; a NaN interval would spin)
SECONDS_SETTINGS = {"DLTH_HEARTBEAT_S": "heartbeat_s", "DLTH_STALE_S": "stale_s", "DLTH_DB_WAIT_S": "db_wait_s",
                    "DLTH_SQLITE_TIMEOUT": "sqlite_timeout_s"}
ZERO_ALLOWED = {"DLTH_DB_WAIT_S"}  # 0: do not wait for a database that went away


def check_environment() -> None:
    """Fail (one line, exit 2) on a ``DLTH_*`` setting that is not what it should be, e.g. ``DLTH_UMASK=abc``
    or ``DLTH_HEARTBEAT_S=fast``, before any command reads it."""
    from specs.settings import env_settings

    try:
        settings = env_settings()
    except ValueError as exc:  # specs.settings names the variable and what it expected
        fail(str(exc).splitlines()[0])
        return
    except OverflowError:  # the one count read through a float: DLTH_DB_RETRIES=inf
        fail(f"environment DLTH_DB_RETRIES={os.environ.get('DLTH_DB_RETRIES')!r}: expected a number of retries")
        return
    if settings.db_retries < 0:
        fail(f"environment DLTH_DB_RETRIES={os.environ.get('DLTH_DB_RETRIES')!r}: expected a number of retries")
    for var, attr in SECONDS_SETTINGS.items():
        value = getattr(settings, attr)
        if var in ZERO_ALLOWED and math.isfinite(value) and value == 0:
            continue
        if not math.isfinite(value) or value <= 0:
            what = "a number of seconds >= 0" if var in ZERO_ALLOWED else "a positive number of seconds"
            fail(f"environment {var}={os.environ.get(var)!r}: expected {what}")
    if not 0 <= settings.umask <= 0o777:
        fail(f"environment DLTH_UMASK={os.environ.get('DLTH_UMASK')!r}: expected an octal mask like 077")


def db_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``--db URL`` on a command; resolves to the group's ``--db``, ``DLTH_DB`` or the default file."""

    @click.option("--db", "db_url", default=None, metavar="URL", help=f"Database URL ({DB_DEFAULT}).")
    @click.pass_context
    @wraps(fn)
    def wrapper(ctx: click.Context, *args: Any, db_url: str | None, **kwargs: Any) -> Any:
        url = db_url or (ctx.obj or {}).get("db_url") or default_url()
        ctx.ensure_object(dict)["db_url"] = url
        return fn(*args, db_url=url, **kwargs)

    return wrapper


def open_store(url: str, *, create: bool = False) -> Store:
    """The store at ``url``; a missing SQLite file is an error unless ``create`` (only ``launch`` creates)."""
    if not create:
        require_database(url)
    return Store(url)


def open_job(db_url: str, job: str, grid: str | None) -> tuple[Store, Named]:
    """The store and the job named by ``job`` (a hash prefix or a label, in ``grid`` when given); an unknown
    or ambiguous name is a one-line error, exit 2."""
    from orchestrator.job_view import JobNotFound, find_job

    store = open_store(db_url)
    try:
        return store, find_job(store, job, grid)
    except JobNotFound as exc:
        fail(str(exc))
        raise  # (fail exits)


def output_console(width: int | None = None) -> Console:
    """A rich console for a command's output: the terminal's, or (a pipe or a file) one that never truncates
    or folds a value (``width``, else wide enough for any table)."""
    console = Console()
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console = Console(width=width or 100_000)
    return console


def looks_like_path(arg: str) -> bool:
    """Whether a GRID argument names a file rather than a grid (a ``.toml`` suffix or a path separator)."""
    return arg.endswith(".toml") or os.sep in arg or "/" in arg


def check_grid_arg(grid: str | None) -> None:
    """Fail (one line, exit 2) when a GRID argument looks like a file path but no such file exists."""
    if grid and looks_like_path(grid) and not Path(grid).is_file():
        fail(f"grid file {grid}: no such file (expected a grid file or the name of a launched grid)")


def resolve_grid_name(store: Store, grid: str | None) -> str:
    """A grid name from a name, a grid file, or the only grid in the database."""
    check_grid_arg(grid)
    if grid and grid.endswith(".toml") and Path(grid).is_file():
        from orchestrator.grid import load_grid

        grid = load_grid(grid).name
    if grid:
        if store.get_grid(grid) is None:
            fail(f"grid {grid!r}: expected the name of a launched grid (have: "
                 f"{', '.join(g.name for g in store.list_grids()) or 'none'})")
        return grid
    grids = store.list_grids()
    if len(grids) != 1:
        fail("GRID: expected a grid name or file (the database holds "
             f"{', '.join(g.name for g in grids) if grids else 'no grid'})")
    return grids[0].name
