"""How well a grid's jobs used what they were given: each job's latest measured attempt (CPU utilisation
per allocated core, peak memory, GPU utilisation and memory), and which jobs fall below
:data:`LOW_UTILISATION` of their devices (the GPU's where there is one, else the CPU cores'). Read by
``status --json``, ``show`` (per attempt) and the report's efficiency section."""

from __future__ import annotations

from typing import Any

from db import Store
from specs.job import job_label

LOW_UTILISATION = 0.30


def job_usage(store: Store, grid: str) -> list[dict[str, Any]]:
    """One dict per job with a measured attempt (its latest), by label (two queries)."""
    labels = {j.job_hash: job_label(j.subset_name, j.config_name, j.seed) for j in store.jobs(grid)}
    latest: dict[str, Any] = {}
    for a in store.grid_attempts(grid):  # by job and attempt number: the last one measured wins
        if a.usage is not None:
            latest[a.job_hash] = a
    out = []
    for h, a in latest.items():
        u = a.usage
        device = "gpu" if u.gpu_util is not None else "cpu"
        util = u.device_util()
        out.append({"job": h, "label": labels.get(h, h), "attempt": a.number, **u.to_dict(), "device": device,
                    "device_util": util, "low": util is not None and util < LOW_UTILISATION})
    return sorted(out, key=lambda r: r["label"])


def low_utilisation(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows of jobs below :data:`LOW_UTILISATION`, least used first."""
    return sorted((r for r in rows if r["low"]), key=lambda r: r["device_util"])
