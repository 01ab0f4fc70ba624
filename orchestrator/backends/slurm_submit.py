"""Submitting jobs as SLURM job arrays through submitit, crash-safe.

Every array gets a *submission directory* ``<workspace>/slurm/<job name>/<token>/`` whose
``manifest.json`` (the array's jobs in index order, the database URL, requeue settings) is written
*before* ``sbatch``. The array runs with that directory as its working directory, so SLURM reports it
(``WorkDir`` in sacct, ``%Z`` in squeue): if the orchestrator dies between ``sbatch`` and recording the
ids, the next refresh finds the array by job name and maps its tasks back to jobs through the manifest
(see :mod:`orchestrator.backends.slurm_reconcile`). Array tasks need nothing from the orchestrator after
``sbatch``: each reads its job from the manifest (``python -m workers.slurm_env``). The database URL is
not in the manifest: it is in the grid's one settings file (mode 0600,
:mod:`orchestrator.backends.settings_file`), whose path the manifest names (no password in the manifest,
submitit's pickles or the SLURM script); the grid's last task, ``cancel`` or a refresh removes it.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import shlex
import shutil
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from submitit.core.utils import FailedJobError

from db import JobRow, Store, workspace_dir
from orchestrator.backends.base import PlanJob
from orchestrator.backends.settings_file import write_grid_settings
from orchestrator.backends.slurm_cmd import COMMANDS, SlurmError, max_array_size
from orchestrator.backends.slurm_graph import plan_graph
from orchestrator.backends.slurm_profile import SlurmProfile, executor_parameters, group_key
from orchestrator.backends.slurm_retry import adjusted_spec, exclude_failed_nodes
from orchestrator.provenance.snapshot import code_root
from specs.atomic import write_json_atomic
from specs.code_version import snapshot_dir
from specs.contract import ARRAY_ID_FILE, ARRAY_MANIFEST_FILE, JOB_FILE, LOG_DIR
from specs.job import JobSpec
from specs.submitit_adapter import ArrayExecutor

log = logging.getLogger(__name__)
MANIFEST = ARRAY_MANIFEST_FILE
REPO_ROOT = Path(__file__).resolve().parents[2]
TOKEN_TIME = "%Y%m%dT%H%M%S"


def grid_dir(name: str) -> Path:
    """Where the submission directories of the grid whose SLURM job name is ``name`` live."""
    return workspace_dir() / "slurm" / name


def absolute_db_url(url: str) -> str:
    """Compute nodes start elsewhere: make a relative SQLite path absolute."""
    prefix = "sqlite:///"
    if url.startswith(prefix) and not url.startswith(prefix + "/") and url[len(prefix):] not in ("", ":memory:"):
        return prefix + str(Path(url[len(prefix):]).resolve())
    return url


def first_submission(name: str) -> datetime | None:
    """UTC time of the grid's oldest submission directory (its name starts with the time)."""
    d = grid_dir(name)
    if not d.is_dir():
        return None
    times = []
    for entry in d.iterdir():
        try:
            times.append(datetime.strptime(entry.name.split("-", 1)[0], TOKEN_TIME))
        except ValueError:
            continue
    return min(times) if times else None


def submitted_at(name: str, array_id: str) -> datetime | None:
    """UTC submission time of the array ``array_id`` of grid ``name`` (from its submission directory)."""
    d = grid_dir(name)
    for entry in d.iterdir() if d.is_dir() else []:
        try:
            if (entry / ARRAY_ID_FILE).read_text().strip() == array_id:
                return datetime.strptime(entry.name.split("-", 1)[0], TOKEN_TIME)
        except (OSError, ValueError):
            continue
    return None


def read_manifest(sub_dir: str | Path) -> dict[str, Any] | None:
    try:
        return json.loads((Path(sub_dir) / MANIFEST).read_text())
    except (OSError, ValueError):
        return None


def repo_setup(profile: SlurmProfile) -> list[str]:
    """The shell lines that run the live repository's code on a compute node (the grid's report job: it
    trains nothing, and reads what every code version wrote)."""
    return [f"export PYTHONPATH={shlex.quote(str(REPO_ROOT))}${{PYTHONPATH:+:$PYTHONPATH}}", *profile.setup]


def array_code_setup(code_dir: Path, codes: list[str | None]) -> list[str]:
    """The sbatch lines that put an array's code first on ``PYTHONPATH``: the snapshot of its first job that
    has one (the task bootstrap runs from it; each task then starts its worker from its own job's snapshot,
    see :mod:`workers.slurm_env`), else the live repository (jobs recorded before snapshots existed)."""
    code = next((c for c in codes if c), None)
    path = snapshot_dir(code_dir, code) if code else REPO_ROOT
    return [f"export PYTHONPATH={shlex.quote(str(path))}${{PYTHONPATH:+:$PYTHONPATH}}", "export PYTHONSAFEPATH=1"]


def refusal(grid_name: str, n_jobs: int, sbatch_stderr: str) -> str:
    """One line for an array sbatch refused: its reasons (``sbatch: error:`` lines, each once), and what to do."""
    reasons: list[str] = []
    for line in sbatch_stderr.splitlines():
        reason = line.strip().removeprefix("sbatch: error:").strip()
        if reason and reason not in reasons:
            reasons.append(reason)
    why = "; ".join(reasons) or "no reason given"
    return (f"sbatch refused {n_jobs} job(s) of grid '{grid_name}': {why} (they stay pending: fix the cluster "
            "profile or the cluster, then run launch again)")


class _ArrayExecutor(ArrayExecutor):
    """submitit's SLURM executor whose array tasks start ``python -m workers.slurm_env <submission dir>``."""

    def __init__(self, sub_dir: Path, python: str, max_requeues: int) -> None:
        python = shlex.quote(python)
        super().__init__(sub_dir / LOG_DIR, f"{python} -u -m workers.slurm_env {shlex.quote(str(sub_dir))}",
                         python=python, max_num_timeout=max_requeues)
        self.sub_dir = sub_dir

    def submit_array(self, n: int) -> str:
        COMMANDS["sbatch"] += 1
        with contextlib.redirect_stderr(io.StringIO()):  # submitit prints a refusal's stderr: it is in the error
            return super().submit_array(n)


@dataclass(frozen=True)
class Submitted:
    array_id: str
    sub_dir: Path
    job_hashes: list[str]
    task_of: list[int]  # the array task of each job (several jobs share one with jobs_per_worker)

    @property
    def slurm_ids(self) -> list[str]:
        return [f"{self.array_id}_{t}" for t in self.task_of]


def manifest_task(jobs: list[JobRow], codes: dict[str, str | None]) -> dict[str, Any]:
    """One array task of the manifest: its (first) job, and with ``jobs_per_worker`` the ``batch`` of every
    job it runs in order (one code snapshot: :func:`orchestrator.backends.slurm_graph.pack`)."""
    first = jobs[0]
    task: dict[str, Any] = {"job_hash": first.job_hash, "job_file": str(Path(first.job_dir) / JOB_FILE),
                            "code_hash": codes.get(first.job_hash)}
    if len(jobs) > 1:
        task["batch"] = [{"job_hash": j.job_hash, "job_file": str(Path(j.job_dir) / JOB_FILE)} for j in jobs]
    return task


def plan_arrays(jobs: list[JobRow], profile: SlurmProfile, chunk: int) -> Iterator[tuple[dict[str, Any], list[JobRow]]]:
    """Group jobs by their SLURM parameters, then cut each group into arrays of at most ``chunk`` tasks."""
    groups: dict[str, tuple[dict[str, Any], list[JobRow]]] = {}
    for job in jobs:
        params = executor_parameters(JobSpec.from_json(job.spec_json).resources, profile)
        groups.setdefault(group_key(params), (params, []))[1].append(job)
    for params, members in groups.values():
        for i in range(0, len(members), chunk):
            yield params, members[i:i + chunk]


def _retry_spec(store: Store, job: JobRow, profile: SlurmProfile) -> JobSpec:
    """The job's spec with what its retries ask for (:mod:`orchestrator.backends.slurm_retry`)."""
    spec = JobSpec.from_json(job.spec_json)
    exclude_failed_nodes(store, job, str(spec.resources.slurm.get("partition", profile.partition)))
    return adjusted_spec(spec, job.job_dir, profile.exclude)


def submit_jobs(
    store: Store, name: str, jobs: list[JobRow], profile: SlurmProfile, db_url: str,
    *, grid_name: str, max_chunk: int | None = None, on_submitted: Callable[[Submitted], None] | None = None,
    parents: dict[str, list[str]] | None = None, known_ids: dict[str, str] | None = None,
) -> list[Submitted]:
    """Submit ``jobs`` as arrays named ``name`` and record each array's ids as soon as sbatch returns.

    Arrays are cut at the cluster's MaxArraySize (``scontrol show config``; the profile's
    ``max_array_size`` if unreadable) or ``max_chunk``, and throttled to ``profile.array_throttle``.
    ``parents``: the job graph (child -> parent hashes); children are submitted with SLURM dependencies on
    their parents' tasks (:mod:`orchestrator.backends.slurm_graph`), ``known_ids`` naming parents queued
    by an earlier submission.
    """
    chunk = max_array_size(profile.max_array_size)
    if max_chunk:
        chunk = min(chunk, max_chunk)
    db_url = absolute_db_url(db_url)
    root = grid_dir(name)
    codes = store.code_of([j.job_hash for j in jobs])
    code_dir = code_root(workspace_dir())
    out: list[Submitted] = []
    rows = {j.job_hash: j for j in jobs}
    plan_jobs = [PlanJob(j.job_hash, f"{j.subset_name}/{j.config_name}/s{j.seed}", _retry_spec(store, j, profile),
                         tuple((parents or {}).get(j.job_hash, ()))) for j in jobs]
    array_ids: list[str] = []
    for plan in plan_graph(plan_jobs, profile, chunk, known_ids, codes):
        members = [rows[p.job_hash] for p in plan.members]
        tasks = [[rows[p.job_hash] for p in task] for task in plan.tasks]
        per_task = max(len(t) for t in tasks)  # a batched task runs its jobs one after the other
        params = {**plan.params, "time": plan.params["time"] * per_task}
        dependency = plan.dependency(array_ids)
        token = f"{datetime.now(UTC):{TOKEN_TIME}}-{uuid.uuid4().hex[:8]}"
        sub_dir = root / token
        (sub_dir / LOG_DIR).mkdir(parents=True, exist_ok=True)
        setup = [*array_code_setup(code_dir, [codes.get(j.job_hash) for j in members]), *profile.setup]
        settings_file = write_grid_settings(store, grid_name, db_url, "slurm")  # (again) right before sbatch
        write_json_atomic(sub_dir / MANIFEST, {
            "version": 1, "job_name": name, "token": token, "settings_file": str(settings_file),
            "time_min": params["time"], "mem": params["mem"], "partition": params.get("partition", ""),
            "max_mem_gb": profile.max_mem_gb, "signal_delay_s": profile.signal_delay_s,
            "stop_grace_s": max(5, profile.signal_delay_s - 20), "max_requeues": profile.max_requeues,
            "code_root": str(code_dir),
            "tasks": [manifest_task(task, codes) for task in tasks],
        })
        ex = _ArrayExecutor(sub_dir, profile.interpreter, profile.max_requeues)
        extra = {**params.get("additional_parameters", {}), "chdir": str(sub_dir)}
        if dependency:  # a failed parent leaves the child pending (DependencyNeverSatisfied), not killed
            extra.update({"dependency": dependency, "kill-on-invalid-dep": "no"})
        ex.update_parameters(**{**params, "additional_parameters": extra}, job_name=name, setup=setup,
                             array_parallelism=profile.array_throttle)
        try:
            array_id = ex.submit_array(len(tasks))
        except FailedJobError as exc:
            shutil.rmtree(sub_dir, ignore_errors=True)  # nothing half-written: the jobs stay pending
            raise SlurmError(refusal(grid_name, len(members), str(exc))) from None
        array_ids.append(array_id)
        sub = Submitted(array_id, sub_dir, [j.job_hash for j in members],
                        [t for t, task in enumerate(tasks) for _ in task])
        (sub_dir / ARRAY_ID_FILE).write_text(array_id)
        store.mark_queued(sub.job_hashes, "slurm", sub.slurm_ids)
        log.info("submitted array %s (%d jobs in %d tasks) from %s%s", array_id, len(members), len(tasks), sub_dir,
                 f" with --dependency={dependency}" if dependency else "")
        out.append(sub)
        if on_submitted:
            on_submitted(sub)
    return out
