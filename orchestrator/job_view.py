"""One job, everything about it (``dlth-orch show``): settings, graph neighbours, attempts with their code
version and node, files, final metrics, and the launches that made its code.

A job is named by a hash prefix or by its label ``subset/config/s<seed>`` (in any grid, or one grid).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from db import FINAL_EPOCH, JobRow, LaunchRow, Store
from orchestrator.provenance.stale import code_launches
from specs.contract import JobPaths
from specs.job import job_label


class JobNotFound(ValueError):
    """No job, or more than one, matches what the user named (one line)."""


@dataclass(frozen=True)
class Named:
    """A job as one grid names it."""

    grid: str
    label: str
    row: JobRow


def _named_jobs(store: Store, grid: str | None) -> list[Named]:
    names = [grid] if grid else [g.name for g in store.list_grids()]
    return [Named(g, job_label(j.subset_name, j.config_name, j.seed), j) for g in names for j in store.jobs(g)]


def find_job(store: Store, what: str, grid: str | None = None) -> Named:
    """The one job whose hash starts with ``what`` or whose label is ``what``; :class:`JobNotFound` otherwise."""
    jobs = _named_jobs(store, grid)
    hits = [n for n in jobs if n.label == what] or ([n for n in jobs if n.row.job_hash.startswith(what)]
                                                    if what else [])
    distinct = {n.row.job_hash: n for n in hits}
    where = f"grid {grid!r}" if grid else "any grid"
    if not distinct:
        raise JobNotFound(f"job {what!r}: expected a job hash prefix or a label subset/config/s<seed> of {where}")
    if len(distinct) > 1:
        some = ", ".join(f"{n.row.job_hash[:12]} ({n.grid}: {n.label})" for n in list(distinct.values())[:4])
        raise JobNotFound(f"job {what!r}: ambiguous, {len(distinct)} jobs match ({some}); give a longer hash "
                          "prefix or --grid")
    return next(iter(distinct.values()))


def _time(t: datetime | None) -> str | None:
    return None if t is None else t.isoformat(sep=" ", timespec="seconds")


def _first_line(text: str | None) -> str | None:
    lines = [line for line in (text or "").splitlines() if line.strip()]
    return lines[0][:300] if lines else None


def code_versions(store: Store, code_hashes: set[str]) -> dict[str, dict[str, Any]]:
    """``{code_hash: {commit, dirty, changed, launched, ...}}`` of the launch that describes each snapshot."""
    return {h: _launch_summary(launch) for h, launch in code_launches(store, code_hashes).items()}


def _launch_summary(launch: LaunchRow) -> dict[str, Any]:
    return {"commit": launch.git_commit, "dirty": launch.git_dirty, "changed": list(launch.git_changed),
            "launched": _time(launch.created_at), "grid": launch.grid_name, "python": launch.python,
            "packages": launch.packages, "host": launch.host, "command": launch.command_line}


def _files(job_dir: Path, attempt_logs: list[str]) -> dict[str, Any]:
    paths = JobPaths.of(job_dir)
    named = {"job": paths.job_file, "checkpoint": paths.checkpoint, "metrics": paths.epoch_metrics,
             "final_metrics": paths.final_metrics, "final_weights": paths.final_weights}
    out: dict[str, Any] = {k: str(p) for k, p in named.items() if p.is_file()}
    logs = sorted({*attempt_logs, *(str(p) for p in paths.logs.glob("*.log"))} if paths.logs.is_dir()
                  else set(attempt_logs))
    out["logs"] = [p for p in logs if Path(p).is_file()]
    return out


def job_view(store: Store, named: Named) -> dict[str, Any]:
    """Everything ``show`` prints about one job, as a JSON-ready dict."""
    j = named.row
    h = j.job_hash
    everywhere = _named_jobs(store, None)
    grids = {n.grid: n.label for n in everywhere if n.row.job_hash == h}
    labels = {n.row.job_hash: f"{n.grid}: {n.label}" for n in everywhere}
    attempts = store.attempts(h)
    codes = {c.attempt_id: c for c in store.attempt_codes([h]).get(h, [])}
    pointer = store.code_of([h]).get(h)
    used = {c.code_hash for c in codes.values() if c.code_hash} | ({pointer} if pointer else set())
    final = store.metrics(h, final_only=True).get(FINAL_EPOCH, {})
    return {
        "job_hash": h, "grids": grids, "state": j.state, "method": j.method, "seed": j.seed,
        "job_dir": j.job_dir, "settings": json.loads(j.spec_json),
        "code": pointer, "code_versions": code_versions(store, used),
        "parents": [{"job_hash": p.job_hash, "label": labels.get(p.job_hash, ""), "state": p.state}
                    for p in store.parents(h)],
        "children": [{"job_hash": c.job_hash, "label": labels.get(c.job_hash, ""), "state": c.state}
                     for c in store.children(h)],
        "attempts": [{"number": a.number, "state": a.state, "node": codes[a.id].node if a.id in codes else None,
                      "host": a.host, "backend": a.backend, "backend_id": a.backend_id,
                      "started": _time(a.started_at), "ended": _time(a.ended_at), "exit_code": a.exit_code,
                      "code": codes[a.id].code_hash if a.id in codes else None,
                      "error": _first_line(a.exit_reason) if a.state != "COMPLETED" else None,
                      "log": a.log_path, "usage": a.usage.to_dict() if a.usage else None} for a in attempts],
        "files": _files(Path(j.job_dir), [a.log_path for a in attempts if a.log_path]),
        "final_metrics": final,
    }
