"""Export a grid into an MLflow tracking store (``dlth-orch export GRID --to mlflow URI``).

The grid is an experiment (named like the grid); each job is a run named by its label
``subset/config/s<seed>``, found again by its tag ``dlth.job_hash``, so exporting twice adds nothing twice:
a run that exists gets only the params and the (metric, step) points it lacks. Tags: ``subset``, ``method``,
``configuration``, ``seed``, ``state``, ``dlth.grid``. Params: the job's spec flattened (``train.lr``, ...).
Metrics: every per-epoch value at step = epoch (0-based, as ``metrics.jsonl``), the final metrics at
step = the number of epochs. A terminal job's run is closed FINISHED / FAILED / KILLED.

MLflow is an optional extra (``pip install -e .[mlflow]``): it is imported here only, when asked for.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from db.export import ExportError, flatten
from db.models import FINAL_EPOCH
from db.store import JobRow, MetricRow, Store

log = logging.getLogger(__name__)
HASH_TAG = "dlth.job_hash"
GRID_TAG = "dlth.grid"
PARAM_MAX = 6000  # MLflow's limit on a param value
METRICS_PER_CALL, PARAMS_PER_CALL = 1000, 100  # MLflow's limits on one log_batch call
RUN_STATUS = {"COMPLETED": "FINISHED", "FAILED": "FAILED", "CANCELLED": "KILLED", "PARENT_FAILED": "KILLED"}


@dataclass(frozen=True)
class MlflowExport:
    """What one export did."""

    experiment_id: str
    created: int
    updated: int
    metrics_logged: int


def _client(uri: str) -> Any:
    try:
        from mlflow.tracking import MlflowClient
    except ImportError:
        raise ExportError("MLflow is not installed: pip install -e .[mlflow]") from None
    return MlflowClient(tracking_uri=uri)


def _experiment(client: Any, name: str) -> str:
    found = client.get_experiment_by_name(name)
    if found is not None:
        if found.lifecycle_stage == "deleted":
            client.restore_experiment(found.experiment_id)
        return str(found.experiment_id)
    return str(client.create_experiment(name, tags={GRID_TAG: name}))


def _runs_by_hash(client: Any, experiment_id: str) -> dict[str, Any]:
    """``{job_hash: run}`` of the runs already in the experiment (paged search, a few queries)."""
    out: dict[str, Any] = {}
    token = None
    while True:
        page = client.search_runs([experiment_id], max_results=1000, page_token=token)
        for run in page:
            if h := run.data.tags.get(HASH_TAG):
                out.setdefault(h, run)
        token = page.token
        if not token:
            return out


def _params(job: JobRow) -> dict[str, str]:
    try:
        spec = json.loads(job.spec_json)
    except json.JSONDecodeError:
        return {}
    flat = flatten(spec, "")
    return {k.lstrip("."): str(v)[:PARAM_MAX] for k, v in flat.items() if v is not None and k != ".job_hash"}


def _tags(job: JobRow, grid: str) -> dict[str, str]:
    return {HASH_TAG: job.job_hash, GRID_TAG: grid, "subset": job.subset_name, "method": job.method,
            "configuration": job.config_name, "seed": str(job.seed), "state": job.state}


def _points(rows: list[MetricRow]) -> list[tuple[str, int, float]]:
    """``(name, step, value)``: epochs at their own step, final metrics after the last epoch."""
    epochs = [m.epoch for m in rows if m.epoch != FINAL_EPOCH]
    final_step = max(epochs) + 1 if epochs else 0
    last = {(m.name, final_step if m.epoch == FINAL_EPOCH else m.epoch): m.value for m in rows
            if math.isfinite(m.value)}  # an epoch a resumed attempt redid: its last value
    return [(name, step, value) for (name, step), value in last.items()]


def _millis(t: datetime | None) -> int:
    return int(t.timestamp() * 1000) if t else 0


def export_mlflow(store: Store, grid_name: str, uri: str) -> MlflowExport:
    """Write ``grid_name`` into the MLflow tracking store at ``uri``; see the module docstring."""
    if store.get_grid(grid_name) is None:
        known = ", ".join(g.name for g in store.list_grids()) or "none"
        raise ExportError(f"grid {grid_name!r}: not in the database (known grids: {known})")
    client = _client(uri)
    from mlflow.entities import Metric, Param, RunTag

    experiment_id = _experiment(client, grid_name)
    existing = _runs_by_hash(client, experiment_id)
    metrics: dict[str, list[MetricRow]] = {}
    for m in store.grid_metrics(grid_name):
        metrics.setdefault(m.job_hash, []).append(m)
    started = {}
    for a in store.grid_attempts(grid_name):
        started.setdefault(a.job_hash, a.started_at)
    created = updated = logged = 0
    for job in store.jobs(grid_name):
        run = existing.get(job.job_hash)
        tags = _tags(job, grid_name)
        if run is None:
            run = client.create_run(experiment_id, start_time=_millis(started.get(job.job_hash)) or None,
                                    tags=tags, run_name=f"{job.subset_name}/{job.config_name}/s{job.seed}")
            created += 1
            have_params: dict[str, str] = {}
            have_points: set[tuple[str, int]] = set()
        else:
            updated += 1
            have_params = dict(run.data.params)
            have_points = {(key, p.step) for key in run.data.metrics
                           for p in client.get_metric_history(run.info.run_id, key)}
        run_id = run.info.run_id
        new_params = [Param(k, v) for k, v in sorted(_params(job).items()) if k not in have_params]
        new_tags = [RunTag(k, v) for k, v in tags.items() if run.data.tags.get(k) != v]
        points = [Metric(name, value, 0, step) for name, step, value in _points(metrics.get(job.job_hash, []))
                  if (name, step) not in have_points]
        for i in range(0, len(new_params), PARAMS_PER_CALL):
            client.log_batch(run_id, params=new_params[i:i + PARAMS_PER_CALL])
        for i in range(0, len(points), METRICS_PER_CALL):
            client.log_batch(run_id, metrics=points[i:i + METRICS_PER_CALL])
        if new_tags:
            client.log_batch(run_id, tags=new_tags)
        logged += len(points)
        status = RUN_STATUS.get(job.state)
        if status and run.info.status != status:
            client.set_terminated(run_id, status)
    log.info("grid %s -> MLflow experiment %s: %d runs created, %d updated, %d metric points", grid_name,
             experiment_id, created, updated, logged)
    return MlflowExport(experiment_id, created, updated, logged)
