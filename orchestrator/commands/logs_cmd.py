"""``dlth-orch logs JOB [-f] [--attempt N] [--rank R]``: a job's log across its attempts, each attempt's start
marked (number, node, time), SLURM's stdout and stderr included; ``-f`` follows it through requeues."""

from __future__ import annotations

import sys
import time

import click

from orchestrator.cli_common import db_option, fail, open_job


def _emit(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


@click.command()
@click.argument("job")
@click.option("-f", "--follow", is_flag=True, help="Keep printing as the job writes, through requeues, until it ends.")
@click.option("--attempt", type=click.IntRange(min=1), default=None, metavar="N", help="Only attempt N.")
@click.option("--rank", type=click.IntRange(min=0), default=0, show_default=True, metavar="R",
              help="The log of rank R (a multi-rank job).")
@click.option("--grid", default=None, help="Look for the label in this grid only.")
@click.option("--interval", type=click.FloatRange(min=0.05), default=0.5, show_default=True, metavar="S",
              help="With -f: seconds between looks.")
@db_option
def logs(job: str, follow: bool, attempt: int | None, rank: int, grid: str | None, interval: float,
         db_url: str) -> None:
    """The log of JOB (a hash prefix or a label such as full/supervised[lr=0.2]/s0) across its attempts."""
    from orchestrator.job_logs import Follower, attempt_logs, segments
    store, named = open_job(db_url, job, grid)
    h = named.row.job_hash
    numbers = [a.number for a in attempt_logs(store, h, rank)]
    if attempt is not None and attempt not in numbers and not follow:
        fail(f"job {h[:12]}: no attempt {attempt} (attempts: {', '.join(map(str, numbers)) or 'none yet'})")
    if not follow:
        if not numbers:
            click.echo(f"job {h[:12]} ({named.row.state}) has no attempt yet", err=True)
        for a, text in segments([a for a in attempt_logs(store, h, rank) if attempt in (None, a.number)], rank):
            _emit(a.header() + "\n" + text + ("" if not text or text.endswith("\n") else "\n"))
        return
    g = store.get_grid(named.grid)
    follower = Follower(store, h, g.failure_budget if g else 0, _emit, rank=rank, attempt=attempt)
    try:
        while follower.poll():
            time.sleep(interval)
        follower.drain()
    except KeyboardInterrupt:  # Ctrl-C: stop following, quietly
        follower.drain()
