"""What SLURM says about a grid's jobs: ONE query per refresh in steady state (``sacct``; ``squeue`` while
tasks wait on a dependency), both when accounting lags or a task may have vanished.

Behaviours of SLURM 22.05 observed on the local cluster (``scripts/slurm-cluster.sh``), which this
module relies on:

- A pending array prints as one line ``1234_[5-9%2]`` (``%2`` = the throttle) in sacct; started tasks
  print as ``1234_5`` with their own ``JobIDRaw``. The last task of an array reuses the array's raw id.
- ``sacct -D`` prints every run of a requeued job. A run ended by ``scontrol requeue`` (submitit's
  checkpoint-and-requeue, on SIGUSR2 from preemption or the time limit) is ``REQUEUED``; a run that
  SLURM itself preempted (``PreemptMode=REQUEUE``) is ``PREEMPTED``; the next run is ``PENDING``
  (reason ``BeginTime``: about 2 minutes unless ``scontrol update jobid=N StartTime=now``).
- ``scancel`` -> ``CANCELLED by <uid>``; a time limit -> ``TIMEOUT``; a non-zero exit -> ``FAILED`` with
  ``ExitCode`` ``code:signal``. Without cgroups, a job over its ``--mem`` is killed by
  ``JobAcctGatherParams=OverMemoryKill``: ``FAILED`` with ``ExitCode 0:9`` and "Exceeded job memory
  limit" in its log (``OUT_OF_MEMORY`` on clusters that enforce memory with cgroups).
- A task pending on a dependency is not *eligible*: a time-windowed ``sacct`` never lists it, nor one
  cancelled before it became eligible (``sacct -j`` may still show its array as pending). ``squeue`` does.
- sacct prints local times: commands run with ``TZ=UTC`` so times compare with the database's UTC.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from orchestrator.backends.slurm_cmd import SlurmError, run_slurm

log = logging.getLogger(__name__)

SACCT_FIELDS = ("JobID", "State", "ExitCode", "Submit", "Start", "End", "Elapsed", "Timelimit", "NodeList",
                "WorkDir")
SQUEUE_FORMAT = "%i|%T|%V|%S|%M|%l|%N|%Z"  # id, state, submit, start, elapsed, limit, nodes, workdir

# states in which a SLURM job is still alive (waiting, running, being requeued)
ALIVE = frozenset({
    "PENDING", "RUNNING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "SUSPENDED", "COMPLETING", "CONFIGURING",
    "RESIZING", "SIGNALING", "STAGE_OUT", "STOPPED", "RESV_DEL_HOLD", "SPECIAL_EXIT", "POWER_UP_NODE",
})


@dataclass(frozen=True)
class SlurmRun:
    """One run of one SLURM job or array task (a requeued job has several)."""

    slurm_id: str  # "1234_5" (array task) or "1234"
    state: str  # SLURM's state, e.g. "COMPLETED", "CANCELLED" ("by <uid>" dropped)
    exit_code: int | None
    signal: int | None
    submit: datetime | None
    start: datetime | None
    end: datetime | None
    elapsed_s: int | None
    timelimit_s: int | None  # None = unlimited
    nodes: str
    workdir: str

    @property
    def alive(self) -> bool:
        """The job lives on (as the latest run of a job: a REQUEUED one will run again)."""
        return self.state in ALIVE

    @property
    def ended(self) -> bool:
        """This run is over. Unlike ``not alive``, true for the earlier runs of a requeued job, which
        sacct lists as REQUEUED with an end time while the job itself lives on."""
        return self.end is not None or not self.alive

    @property
    def array_job_id(self) -> str:
        return self.slurm_id.split("_", 1)[0]

    @property
    def task_index(self) -> int:
        parts = self.slurm_id.split("_", 1)
        return int(parts[1]) if len(parts) == 2 else 0


def parse_time(text: str) -> datetime | None:
    """``2026-11-22T00:03:01`` -> datetime; ``Unknown``/``None``/``N/A`` -> None."""
    text = text.strip()
    if not text or text in ("Unknown", "None", "N/A"):
        return None
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        return None


def parse_duration(text: str) -> int | None:
    """SLURM durations (``[D-][HH:]MM:SS``, ``MM``, ``UNLIMITED``) -> seconds; None if unlimited/unknown."""
    text = text.strip()
    if not text or text.upper() in ("UNLIMITED", "PARTITION_LIMIT", "INVALID", "N/A", "NONE"):
        return None
    days = 0
    if "-" in text:
        d, text = text.split("-", 1)
        days = int(d)
    parts = [int(float(p)) for p in text.split(":")]
    if len(parts) == 1:  # minutes
        secs = parts[0] * 60
    elif len(parts) == 2:
        secs = parts[0] * 60 + parts[1]
    else:
        secs = parts[0] * 3600 + parts[1] * 60 + parts[2]
    return days * 86400 + secs


def expand_ids(job_id: str) -> list[str]:
    """``1234_[1-3,7%2]`` -> ``["1234_1", "1234_2", "1234_3", "1234_7"]``; other ids unchanged."""
    m = re.fullmatch(r"(\d+)_\[([^\]]+)\]", job_id)
    if not m:
        return [job_id]
    base, spec = m.group(1), m.group(2).split("%", 1)[0]
    out: list[str] = []
    for part in spec.split(","):
        if "-" in part:
            lo, hi = part.split("-", 1)
            out.extend(f"{base}_{i}" for i in range(int(lo), int(hi) + 1))
        elif part:
            out.append(f"{base}_{part}")
    return out


def _exit(text: str) -> tuple[int | None, int | None]:
    if ":" not in text:
        return None, None
    code, sig = text.split(":", 1)
    return (int(code) if code.isdigit() else None), (int(sig) if sig.isdigit() else None)


def parse_sacct(text: str) -> list[SlurmRun]:
    """Rows of ``sacct -X -P -n -o <SACCT_FIELDS>`` -> runs (pending array ranges expanded)."""
    runs: list[SlurmRun] = []
    for line in text.splitlines():
        cols = line.split("|")
        if len(cols) < len(SACCT_FIELDS):
            continue
        job_id, state, exit_code, submit, start, end, elapsed, limit, nodes, workdir = cols[:10]
        if "." in job_id:  # a step (batch, extern, 0): -X should have dropped it
            continue
        code, sig = _exit(exit_code)
        for sid in expand_ids(job_id):
            runs.append(SlurmRun(sid, state.split()[0] if state else "UNKNOWN", code, sig, parse_time(submit),
                                 parse_time(start), parse_time(end), parse_duration(elapsed),
                                 parse_duration(limit), nodes, workdir))
    return runs


def parse_squeue(text: str) -> list[SlurmRun]:
    """Rows of ``squeue -h -r -o SQUEUE_FORMAT`` -> runs (the current run of each listed job)."""
    runs: list[SlurmRun] = []
    for line in text.splitlines():
        cols = line.split("|")
        if len(cols) < 8:
            continue
        job_id, state, submit, start, elapsed, limit, nodes, workdir = cols[:8]
        started = parse_time(start) if state not in ("PENDING", "REQUEUE_HOLD") else None
        for sid in expand_ids(job_id):
            runs.append(SlurmRun(sid, state, None, None, parse_time(submit), started, None,
                                 parse_duration(elapsed), parse_duration(limit), nodes, workdir))
    return runs


@dataclass
class SlurmView:
    """Every run of a grid's SLURM jobs, by SLURM id, oldest first; what the refresh cost.

    ``complete``: both accounting (sacct) and the controller (squeue) answered, so an id in neither is
    unknown to SLURM (cancelled while it waited on a dependency, purged), not merely lagging."""

    runs: dict[str, list[SlurmRun]]
    commands: int = 0
    complete: bool = False

    def latest(self, slurm_id: str) -> SlurmRun | None:
        runs = self.runs.get(slurm_id)
        return runs[-1] if runs else None

    def alive(self, slurm_id: str) -> bool:
        run = self.latest(slurm_id)
        return run is not None and run.alive


def _order_key(run: SlurmRun) -> tuple:
    return (run.start is None and run.alive, run.start or run.submit or datetime.min)


def _squeue(job_name: str) -> str:
    return run_slurm(["squeue", "-h", "-r", f"--name={job_name}", "-o", SQUEUE_FORMAT]).stdout


def query(job_name: str, since: datetime, expect: Iterable[str] = (), waiting: Iterable[str] = ()) -> SlurmView:
    """Everything SLURM knows about the jobs named ``job_name`` submitted since ``since`` (UTC).

    ``expect``: ids of queued/running jobs; ``waiting``: ids of tasks that wait on a dependency. Accounting
    never lists a task that has not become eligible (pending on a dependency, or cancelled before it
    did): only the controller (``squeue``) sees those. So:

    - nothing waits: one ``sacct -D`` (every run, so requeues show); if accounting may lag behind (an
      expected id is missing, or sacct says it is over), one ``squeue`` for the job name fills in
      the live jobs;
    - tasks wait: one ``squeue`` first; if it lists every expected and waiting id alive, that is the
      answer (one command); else one ``sacct`` too, merged under squeue's live view.
    """
    expect, waiting = list(expect), list(waiting)
    queue_out: str | None = None
    if waiting:
        queue_out = _squeue(job_name)
        view = SlurmView(runs={}, commands=1)
        _merge_squeue(view, queue_out)
        if all(view.alive(i) for i in (*expect, *waiting)):
            return view
    starttime = (since - timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M:%S")
    view = SlurmView(runs={}, commands=1 if queue_out is not None else 0)
    sacct_ok = False
    try:
        out = run_slurm(["sacct", "-X", "-D", "-P", "-n", f"--name={job_name}", f"--starttime={starttime}",
                         "--endtime=now", "-o", ",".join(SACCT_FIELDS)]).stdout
        view.commands += 1
        sacct_ok = True
        for run in parse_sacct(out):
            view.runs.setdefault(run.slurm_id, []).append(run)
    except SlurmError as exc:
        view.commands += 1
        log.warning("sacct failed (%s): falling back on squeue", exc)
    for runs in view.runs.values():
        runs.sort(key=_order_key)
    doubtful = [i for i in expect if not view.alive(i)]
    if queue_out is None and (doubtful or not view.runs):
        queue_out = _squeue(job_name)
        view.commands += 1
    if queue_out is not None:
        _merge_squeue(view, queue_out)
    view.complete = sacct_ok and queue_out is not None
    return view


def _merge_squeue(view: SlurmView, out: str) -> None:
    """Fold squeue's live view into accounting's. Accounting can lag both ways: a job missing from sacct,
    or a stale record that says a task is over while it still waits (seen while pending array tasks are
    split off by ``scontrol hold``). squeue is the controller's own view, so a task it lists as alive is
    alive, whatever sacct said."""
    for run in parse_squeue(out):
        if not run.alive and run.slurm_id in view.runs:
            continue  # finished: sacct's record (exit code, end time) is the better one
        known = view.runs.setdefault(run.slurm_id, [])
        if known and known[-1].alive:  # squeue is fresher than lagging accounting for the live run
            known[-1] = run
        else:
            known.append(run)
        known.sort(key=_order_key)
