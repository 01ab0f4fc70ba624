"""The grid's report job on SLURM: a small CPU job that writes the report when the grid's last task ends.

``launch --cluster slurm`` returns once the grid is queued, so nothing on the login node is alive when the
grid finishes at night. Every submission of a grid's tasks therefore (re)submits one report job with
``--dependency=afterany:<every array that holds an unfinished task of the grid>``: it starts only when all
of them have ended, in whatever state, and runs ``dlth-orch report-job`` (the same code as ``dlth-orch
report``) on the cluster. When tasks are resubmitted or a relaunch extends the grid, the pending report job
is cancelled and submitted again against the new set of arrays, exactly like a child job is re-linked, so
it never runs before the last of them. A requeued task (preemption, time limit) stays the same SLURM job:
the dependency keeps waiting for it.

The report job is not a job of the grid: its failure never fails the grid. Its id, dependencies, log and
outcome are recorded in the database (``dlth_meta``), where ``status`` reads them.
"""

from __future__ import annotations

import json
import logging
import shlex
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from db import JobState, Store, workspace_dir
from orchestrator.backends.slurm_cmd import SlurmError, run_slurm, scancel
from orchestrator.backends.slurm_profile import SlurmProfile
from orchestrator.backends.slurm_submit import absolute_db_url, grid_dir, repo_setup
from orchestrator.backends.slurm_target import grid_conf, targeting
from orchestrator.workspace import report_dir
from specs.atomic import write_text_atomic
from specs.settings import WorkerSettings, remove_settings_file

log = logging.getLogger(__name__)
_KEY = "report/slurm_job/{}"  # dlth_meta: the grid's report job (a ReportJob as JSON)
SETTINGS_FILE = "report_settings.json"


@dataclass(frozen=True)
class ReportJob:
    """The grid's report job as submitted, and (once it ran) how it ended."""

    slurm_id: str
    depends_on: tuple[str, ...]  # array ids
    submitted_at: str
    out_dir: str
    log_path: str
    outcome: str = ""  # "" (not run yet), "written", or "failed: <one line>"

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> ReportJob | None:
        try:
            doc = json.loads(text)
            return cls(**{**doc, "depends_on": tuple(doc.get("depends_on", ()))})
        except (ValueError, TypeError):
            return None


def load_report_job(store: Store, grid_name: str) -> ReportJob | None:
    """The grid's report job as last recorded (``None``: it never had one)."""
    raw = store.get_meta(_KEY.format(grid_name))
    return ReportJob.from_json(raw) if raw else None


def record_outcome(store: Store, grid_name: str, outcome: str) -> None:
    """Record how the grid's report job ended (called by the report job itself)."""
    job = load_report_job(store, grid_name)
    if job is not None:
        store.set_meta(_KEY.format(grid_name), ReportJob(**{**asdict(job), "outcome": outcome}).to_json())


def report_job_dir(name: str) -> Path:
    """The report job's folder (script, settings, log), beside the grid's submission folders, not among them."""
    return grid_dir(name).parent / f"{name}.report"


def settings_path(name: str) -> Path:
    """The report job's own settings file (0600, the database URL): the report job removes it once read,
    ``cancel`` of the whole grid with the report job."""
    return report_job_dir(name) / SETTINGS_FILE


def drop_if_grid_over(store: Store, grid_name: str, name: str) -> bool:
    """After ``cancel``: when no job of the grid is unfinished any more, its pending report job has nothing
    left to wait for: cancel it and remove its settings file (``dlth-orch report`` still writes the report).
    ``True`` if it did."""
    job = load_report_job(store, grid_name)
    if job is None or job.outcome or unfinished_arrays(store, grid_name):
        return False
    with targeting(grid_conf(store, name)):
        scancel([job.slurm_id])
    remove_settings_file(settings_path(name))
    record_outcome(store, grid_name, "cancelled with the grid's jobs")
    return True


def unfinished_arrays(store: Store, grid_name: str) -> list[str]:
    """The SLURM arrays that hold a task of an unfinished job of the grid (queued, running, waiting)."""
    ids = {j.backend_id.split("_")[0] for j in store.jobs(grid_name, [JobState.QUEUED, JobState.RUNNING,
                                                                     JobState.WAITING])
           if j.backend == "slurm" and j.backend_id}
    return sorted(ids, key=lambda a: (len(a), a))


def relink_report_job(store: Store, grid_name: str, name: str, profile: SlurmProfile, db_url: str) -> ReportJob | None:
    """Make sure the grid has a report job that waits for every unfinished task of the grid: keep a pending one
    that already waits for exactly these arrays, else cancel it and submit a new one. Returns the report job
    (``None`` when no task is unfinished). A failure is logged, never raised: the grid goes on without it."""
    arrays = unfinished_arrays(store, grid_name)
    if not arrays:
        return None
    prev = load_report_job(store, grid_name)
    if prev is not None and not prev.outcome and set(prev.depends_on) == set(arrays) and _pending(prev.slurm_id):
        return prev
    if prev is not None and not prev.outcome:
        scancel([prev.slurm_id])  # a report job that would run too early (or ran with an old set): replaced
    try:
        job = _submit(store, grid_name, name, profile, db_url, arrays)
    except (SlurmError, OSError) as exc:
        log.warning("grid %s: its report job could not be submitted (%s); `dlth-orch report %s` writes the "
                    "report by hand", grid_name, str(exc).splitlines()[0], grid_name)
        return None
    store.set_meta(_KEY.format(grid_name), job.to_json())
    log.info("grid %s: report job %s waits for arrays %s", grid_name, job.slurm_id, ", ".join(arrays))
    return job


def _pending(slurm_id: str) -> bool:
    """Whether SLURM still holds ``slurm_id`` as pending (a report job not started yet)."""
    try:
        out = run_slurm(["squeue", "-h", "-j", slurm_id, "-o", "%T"], check=False).stdout
    except SlurmError:
        return False
    return out.strip().upper().startswith("PENDING")


def _submit(store: Store, grid_name: str, name: str, profile: SlurmProfile, db_url: str,
            arrays: list[str]) -> ReportJob:
    """sbatch the report job (CPU only, a few minutes) with ``afterany`` on ``arrays``."""
    sub = report_job_dir(name)
    sub.mkdir(parents=True, exist_ok=True)
    settings = WorkerSettings(db_url=absolute_db_url(db_url), backend="slurm").write(settings_path(name))
    out_dir = report_dir(grid_name).resolve()
    script = sub / "report_job.sh"
    command = [profile.interpreter, "-m", "orchestrator.cli", "report-job", grid_name,
               "--settings", str(settings), "--out", str(out_dir)]
    lines = ["#!/bin/bash", "set -e", f"export DLTH_HOME={shlex.quote(str(workspace_dir().resolve()))}",
             *repo_setup(profile), "exec " + shlex.join(command), ""]
    write_text_atomic(script, "\n".join(lines))
    log_path = sub / "report-%j.out"
    args = ["sbatch", "--parsable", f"--job-name={name}-report", f"--chdir={sub}", f"--output={log_path}",
            f"--dependency=afterany:{':'.join(arrays)}", "--kill-on-invalid-dep=no", "--ntasks=1",
            "--cpus-per-task=1", "--mem=2G", f"--time={profile.report_time_min}"]
    partition = profile.report_partition or profile.partition
    args += [f"--partition={partition}"] if partition else []
    args += [f"--{flag}={getattr(profile, flag)}" for flag in ("account", "qos") if getattr(profile, flag)]
    slurm_id = run_slurm([*args, str(script)]).stdout.strip().split(";")[0]
    if not slurm_id.isdigit():
        raise SlurmError(f"sbatch answered {slurm_id!r} for the report job")
    return ReportJob(slurm_id=slurm_id, depends_on=tuple(arrays),
                     submitted_at=datetime.now(UTC).isoformat(timespec="seconds"), out_dir=str(out_dir),
                     log_path=str(log_path).replace("%j", slurm_id))


def describe(job: ReportJob) -> dict[str, Any]:
    """The report job for ``status --json``."""
    return asdict(job)
